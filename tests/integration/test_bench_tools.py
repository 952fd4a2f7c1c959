"""test_bench_tools.py — `ringmail-bench source` and `ringmail-bench sink` against each other,
through a byte-flipping proxy, and the source against the real ringmail daemon.

Who runs it: CTest's `integration` test (RINGMAIL_BENCH_BIN set there) or pytest by hand from a
build's parent directory (default binary build/bench/ringmail-bench, as conftest.py does for the
daemon).

What it pins: the sink counts exactly what the source sent and finds exactly the bodies damaged
on the way; the source's reply counts by code equal the scripted sink's own counts; the open loop
keeps its requested rate; messages the source sends to ringmail are all in the spool, also over
STARTTLS and implicit TLS with AUTH PLAIN (one handshake per connection, counted); a refused
password or a missing STARTTLS is counted as such and sends no mail. Everything
is on loopback and bounded in time; readiness is a line the sink prints once it listens (read
under a deadline), never a sleep.
"""

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

BENCH_BIN = os.environ.get("RINGMAIL_BENCH_BIN", "build/bench/ringmail-bench")
RUN_TIMEOUT_S = 120
READY_DEADLINE_S = 20.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_binary():
    if not os.access(BENCH_BIN, os.X_OK):
        pytest.fail(f"ringmail-bench not found at {BENCH_BIN!r} (set RINGMAIL_BENCH_BIN)")


class Sink:
    """A `ringmail-bench sink` process on a free loopback port."""

    def __init__(self, *args, threads=2):
        need_binary()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [BENCH_BIN, "sink", "--listen", f"127.0.0.1:{self.port}", "--threads", str(threads),
             "--json", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        deadline = time.monotonic() + READY_DEADLINE_S
        while b"listening on" not in self.stderr:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill()
                pytest.fail(f"sink not ready: {self.stderr!r}")
            ready, _, _ = select.select([self.proc.stderr], [], [], left)
            if ready:
                self.stderr += os.read(self.proc.stderr.fileno(), 4096)

    def stop(self):
        """SIGTERM; returns the final JSON report (the sink must exit 0)."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        self.stderr += err
        assert self.proc.returncode == 0, f"sink exited {self.proc.returncode}: {self.stderr!r}"
        assert b"Sanitizer" not in self.stderr and b"runtime error" not in self.stderr, self.stderr
        return json.loads(out)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def sinks():
    made = []

    def make(*args, **kw):
        s = Sink(*args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def source(port, *args):
    """Runs `ringmail-bench source` to completion; returns its JSON report."""
    need_binary()
    r = subprocess.run([BENCH_BIN, "source", f"127.0.0.1:{port}", "--json", "--no-progress",
                        *args], capture_output=True, timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0, f"source exited {r.returncode}: {r.stderr!r}"
    assert b"Sanitizer" not in r.stderr and b"runtime error" not in r.stderr, r.stderr
    return json.loads(r.stdout)


# --- sink counts and verification ----------------------------------------------------------

@pytest.mark.parametrize("pipelining", ["on", "off"])
def test_sink_counts_every_message_once_and_intact(sinks, pipelining):
    n = 3000
    sink = sinks("--verify", "--expect", str(n))
    args = ["--messages", str(n), "--sessions", "8", "--recipients", "2", "--domains", "3",
            "--size-dist", "1k:80,10k:20", "--pipelining", pipelining]
    first = source(sink.port, *args)
    second = source(sink.port, *args)  # the same seqs again: every one a duplicate
    report = sink.stop()
    for r in (first, second):
        assert r["messages_accepted"] == n and r["messages_aborted"] == 0, r
        assert r["replies"]["rcpt"] == {"250": 2 * n}
    assert report["messages"] == 2 * n
    assert report["recipients"] == 4 * n
    assert report["verified"] == 2 * n
    assert report["corrupt"] == 0 and report["missing_header"] == 0
    assert report["duplicates"] == n
    # The sink counts content; the source also sent each message's ".\r\n".
    assert report["bytes"] == first["bytes_sent"] + second["bytes_sent"] - 2 * n * 3


class FlippingProxy:
    """Forwards loopback TCP to `port`, flipping one alphanumeric byte of the text of the
    message whose bench header says seq=`seq` (200 octets after that header)."""

    def __init__(self, port, seq):
        self.target = port
        self.marker = f"X-Ringmail-Bench: seq={seq} ".encode()
        self.flipped = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target), timeout=30)
            for fn in (self._upstream, self._downstream):
                t = threading.Thread(target=fn, args=(c, u), daemon=True)
                t.start()
                self.threads.append(t)

    def _upstream(self, c, u):
        seen = b""
        target = None
        pos = 0  # stream offset of the chunk being forwarded
        while True:
            chunk = c.recv(65536)
            if not chunk:
                u.shutdown(socket.SHUT_WR)
                return
            if target is None and self.flipped == 0:
                seen += chunk
                at = seen.find(self.marker)
                if at >= 0:
                    target = at + len(self.marker) + 200
            if target is not None and pos + len(chunk) > target:
                buf = bytearray(chunk)
                while target < pos + len(buf) and not chr(buf[target - pos]).isalnum():
                    target += 1
                if target < pos + len(buf):
                    buf[target - pos] ^= 0x01
                    self.flipped += 1
                    target = None
                    seen = b"\0"  # stop looking
                chunk = bytes(buf)
            pos += len(chunk)
            u.sendall(chunk)

    def _downstream(self, c, u):
        while True:
            try:
                chunk = u.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                try:
                    c.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            c.sendall(chunk)

    def close(self):
        self.lsock.close()


def test_sink_reports_exactly_the_corrupted_body(sinks):
    sink = sinks("--verify", "--expect", "100")
    proxy = FlippingProxy(sink.port, seq=17)
    try:
        r = source(proxy.port, "--messages", "60", "--sessions", "1", "--threads", "1")
    finally:
        proxy.close()
    report = sink.stop()
    assert proxy.flipped == 1
    assert r["messages_accepted"] == 60
    assert report["messages"] == 60
    assert report["corrupt"] == 1
    assert report["verified"] == 59
    assert report["missing_header"] == 0 and report["duplicates"] == 0


# --- the source's accounting against a scripted sink -------------------------------------

def test_source_reply_counts_match_scripted_sink(sinks):
    sink = sinks("--rcpt-temp-fail", "0.1", "--rcpt-perm-fail", "0.05", "--data-temp-fail",
                 "0.1", "--data-perm-fail", "0.05", "--seed", "11")
    n = 2000
    r = source(sink.port, "--messages", str(n), "--sessions", "10", "--recipients", "2")
    report = sink.stop()
    rep = r["replies"]
    assert rep["rcpt"].get("450", 0) == report["rcpt_temp_fail"] > 0
    assert rep["rcpt"].get("550", 0) == report["rcpt_perm_fail"] > 0
    assert rep["rcpt"]["250"] == 2 * n - report["rcpt_temp_fail"] - report["rcpt_perm_fail"]
    assert rep["data"].get("554", 0) == report["no_valid_rcpt"]
    assert rep["eom"].get("451", 0) == report["data_temp_fail"] > 0
    assert rep["eom"].get("554", 0) == report["data_perm_fail"] > 0
    assert rep["eom"]["250"] == report["messages"] == r["messages_accepted"]
    assert r["messages_completed"] == n and r["messages_aborted"] == 0
    assert r["messages_failed"] == n - report["messages"]


def test_source_counts_dropped_and_refused(sinks):
    sink = sinks("--drop-fraction", "0.05", "--max-sessions", "3", "--seed", "5", threads=1)
    r = source(sink.port, "--messages", "400", "--sessions", "5", "--threads", "1")
    report = sink.stop()
    assert r["refused_at_greeting"] == report["refused_sessions"] == 2
    assert r["replies"]["greeting"]["421"] == 2
    assert report["dropped"] > 0
    # A drop ends the connection: the message in flight and any pipelined behind it are lost.
    assert r["messages_aborted"] >= report["dropped"]
    assert r["messages_accepted"] == report["messages"]
    assert r["messages_accepted"] + r["messages_aborted"] == 400


def test_data_delay_shows_in_latency(sinks):
    sink = sinks("--data-delay-ms", "30")
    r = source(sink.port, "--messages", "40", "--sessions", "4")
    sink.stop()
    assert r["messages_accepted"] == 40
    assert r["latency_eom_ms"]["p50"] >= 29.0
    assert r["latency_eom_ms"]["max"] < 1000.0


# --- open loop ---------------------------------------------------------------------------

def test_open_loop_keeps_the_requested_rate(sinks):
    sink = sinks()
    r = source(sink.port, "--rate", "2000", "--duration", "3", "--sessions", "20")
    report = sink.stop()
    assert r["mode"] == "open"
    assert abs(r["messages_started"] - 6000) <= 2, r
    assert r["messages_completed"] == r["messages_started"] == report["messages"]
    assert 1800 <= r["messages_per_s"] <= 2200, r


def test_starttls_not_offered_is_a_tls_failure(sinks):
    sink = sinks()  # the sink offers no STARTTLS
    r = source(sink.port, "--starttls", "--messages", "10", "--sessions", "3")
    sink.stop()
    assert r["tls"] == "starttls"
    assert r["tls_failures"] == 3 and r["tls_handshakes"] == 0, r
    assert r["messages_started"] == 0
    assert r["replies"]["ehlo"] == {"250": 3}
    assert "starttls" not in r["replies"] or r["replies"]["starttls"] == {}


def test_starttls_and_tls_exclude_each_other():
    need_binary()
    p = subprocess.run([BENCH_BIN, "source", "127.0.0.1:1", "--starttls", "--tls"],
                       capture_output=True, timeout=30)
    assert p.returncode != 0
    assert b"excludes" in p.stderr


# --- against the daemon ------------------------------------------------------------------

def test_source_into_ringmail_is_all_spooled(ringmail):
    n = 500
    r = source(ringmail.port, "--messages", str(n), "--sessions", "4", "--recipients", "2",
               "--domains", "2", "--size", "2k")
    assert r["messages_accepted"] == n, r
    assert r["replies"]["eom"] == {"250": n}
    entries = ringmail.spool_json()
    assert len(entries) == n
    assert all(len(e["rcpts"]) == 2 for e in entries)
    addresses = [r["address"] for e in entries for r in e["rcpts"]]
    assert len(set(addresses)) == 2 * n  # distinct recipients
    assert {a.split("@")[1] for a in addresses} == {"d0.sink.ringmail-bench.test",
                                                    "d1.sink.ringmail-bench.test"}
    body = ringmail.body(entries[0]["id"])
    assert b"\r\nX-Ringmail-Bench: seq=" in body


def test_idle_sessions_are_held(ringmail):
    r = source(ringmail.port, "--idle", "--duration", "1", "--sessions", "50")
    assert r["mode"] == "idle"
    assert r["connections"] == 50
    assert r["replies"]["quit"] == {"221": 50}
    assert r["messages_started"] == 0


# --- TLS and AUTH against the daemon -------------------------------------------------------

TLS_USER, TLS_PASSWORD = "bench", "bench-secret"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench-tls")
    cert, key, users = d / "cert.pem", d / "key.pem", d / "users"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=ringmail-bench.test"],
                   check=True, capture_output=True, timeout=30)
    hashed = subprocess.run(["openssl", "passwd", "-6", TLS_PASSWORD], check=True,
                            capture_output=True, timeout=30).stdout.decode().strip()
    users.write_text(f"{TLS_USER}:{hashed}\n")
    return {"cert": str(cert), "key": str(key), "users": str(users)}


@pytest.fixture
def tlsd(ringmail_factory, tls_files):
    """ringmail with STARTTLS on its plain port and an implicit-TLS (smtps) port."""
    smtps = free_port()
    d = ringmail_factory("--smtps-listen", f"127.0.0.1:{smtps}", "--tls-cert", tls_files["cert"],
                         "--tls-key", tls_files["key"], "--auth-users", tls_files["users"])
    d.smtps_port = smtps
    return d


def test_source_starttls_into_ringmail_reuses_connections(tlsd):
    n, sessions = 300, 4
    r = source(tlsd.port, "--starttls", "--messages", str(n), "--sessions", str(sessions))
    assert r["messages_accepted"] == n, r
    assert r["tls"] == "starttls" and r["tls_failures"] == 0
    # One handshake per connection, every message over it.
    assert r["tls_handshakes"] == r["connections"] == sessions, r
    assert r["replies"]["starttls"] == {"220": sessions}
    assert r["replies"]["ehlo"] == {"250": 2 * sessions}  # EHLO again inside TLS
    assert r["latency_handshake_ms"]["count"] == sessions
    assert len(tlsd.spool_json()) == n


def test_source_implicit_tls_auth_one_message_per_connection(tlsd):
    n = 40
    r = source(tlsd.smtps_port, "--tls", "--auth", f"{TLS_USER}:{TLS_PASSWORD}", "--messages",
               str(n), "--sessions", "4", "--messages-per-connection", "1")
    assert r["messages_accepted"] == n, r
    assert r["tls"] == "implicit" and r["auth"] is True
    assert r["tls_failures"] == 0 and r["auth_failures"] == 0
    # A new connection, handshake and AUTH per message (plus at most one per session that
    # found no message left).
    assert n <= r["tls_handshakes"] <= n + 4, r
    assert r["replies"]["auth"] == {"235": r["tls_handshakes"]}
    assert r["handshakes_per_s"] > 0
    assert "starttls" not in r["replies"] or r["replies"]["starttls"] == {}
    assert len(tlsd.spool_json()) == n


def test_source_refused_password_sends_nothing(tlsd):
    r = source(tlsd.smtps_port, "--tls", "--auth", f"{TLS_USER}:wrong", "--messages", "10",
               "--sessions", "2")
    assert r["auth_failures"] == 2, r
    assert r["messages_started"] == 0
    assert sum(r["replies"]["auth"].values()) == 2
    assert "235" not in r["replies"]["auth"]
    assert tlsd.spool_json() == []
