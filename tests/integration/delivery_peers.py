"""delivery_peers.py — the remote side of outbound delivery for the integration suite.

Who uses it: test_delivery.py (and any later test that makes ringmail deliver).

What it provides, all on loopback only (no packet may leave 127.0.0.0/8 here):
  - Dnsmasq: a real dnsmasq authoritative for .test (--local=/test/, so an unknown name is
    NXDOMAIN and nothing is forwarded), restartable on the same port with new records;
  - CaptureServer: an aiosmtpd server (a real SMTP implementation nobody here wrote) on one
    127.0.0.x address that records every envelope and the exact body bytes, counts the
    connections that spoke (EHLO/HELO) and the most that were open at once, remembers how the
    client's bytes arrived (to see PIPELINING), and can refuse chosen recipients;
  - SmtpSink: Postfix's smtp-sink with its reject/disconnect switches and its -c counters;
  - Tarpit: an MX that accepts connections and never says a word;
  - wait_for / log helpers that poll a condition under a deadline and a bounded number of
    tries (never a sleep used as synchronisation).
"""

import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

POLL_S = 0.05


def find_tool(name):
    """The path of a peer program: on PATH, or in /usr/sbin where Debian puts the daemons."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


DNSMASQ = find_tool("dnsmasq")
SMTP_SINK = find_tool("smtp-sink")
DELIVERY_RE = re.compile(
    r"delivery id=(?P<id>[0-9a-f]{16}) rcpt=(?P<rcpt>\d+)(?: to=<(?P<to>[^>]*)>)? "
    r"domain=(?P<domain>\S*) "
    r"relay=(?P<relay>\S*) status=(?P<status>\w+) attempts=(?P<attempts>\d+)"
    r"(?: delay=\S+)? reply=\"(?P<reply>.*)\"")


def wait_for(pred, what, timeout=20.0, interval=POLL_S):
    """Polls pred() until it returns a truthy value (returned) or the deadline passes (fails
    with `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 100):
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)  # polling interval, not synchronisation
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def delivery_lines(log_text):
    """The parsed `delivery id=...` log lines, oldest first."""
    out = []
    for line in log_text.splitlines():
        m = DELIVERY_RE.search(line)
        if m:
            d = m.groupdict()
            d["rcpt"] = int(d["rcpt"])
            d["attempts"] = int(d["attempts"])
            out.append(d)
    return out


def free_port_on(hosts, kind=socket.SOCK_STREAM):
    """A port nobody uses now on every one of `hosts` (bind-probe; also UDP when asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        ok = True
        for h in hosts:
            for k in {kind, socket.SOCK_STREAM}:
                with socket.socket(socket.AF_INET, k) as s:
                    try:
                        s.bind((h, port))
                    except OSError:
                        ok = False
        if ok:
            return port
    raise AssertionError("no free port")


# --- dnsmasq -------------------------------------------------------------------------------

def end_process(proc):
    """Terminates proc (a Popen, or None), kills it after 10 s; returns None."""
    if proc is None:
        return None
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return None


def _dns_query(name, qtype=1):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(
        ">HH", qtype, 1)


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port serving `records` (dnsmasq flags) for .test."""

    READY_NAME = "ready.test"

    def __init__(self, records, workdir, port=None):
        self.records = list(records)
        self.workdir = workdir
        self.port = port or free_port_on(["127.0.0.1"], socket.SOCK_DGRAM)
        self.proc = None
        self.lives = 0

    def command(self):
        return [DNSMASQ, "--no-daemon", f"--port={self.port}", "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                "--local=/test/", "--local-ttl=1",
                f"--host-record={self.READY_NAME},192.0.2.250", *self.records]

    def start(self, records=None):
        assert self.proc is None
        if records is not None:
            self.records = list(records)
        self.lives += 1
        log = open(os.path.join(self.workdir, f"dnsmasq-{self.lives}.log"), "wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self):
        """Ready = it answers an A query for ready.test."""
        q = _dns_query(self.READY_NAME)
        deadline = time.monotonic() + 10
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            for _ in range(500):
                assert self.proc.poll() is None, f"dnsmasq exited {self.proc.returncode}"
                assert time.monotonic() < deadline, "dnsmasq did not answer within 10s"
                s.sendto(q, ("127.0.0.1", self.port))
                try:
                    data = s.recv(512)
                except (socket.timeout, ConnectionRefusedError):
                    continue
                if data[:2] == q[:2] and (data[3] & 0x0F) == 0:
                    return
        raise AssertionError("dnsmasq never ready")

    def stop(self):
        self.proc = end_process(self.proc)

    def restart(self, records):
        self.stop()
        return self.start(records)


# --- aiosmtpd capture server --------------------------------------------------------------

class Envelope:
    def __init__(self, conn, mail_from, mail_options, rcpts, rcpt_options, data):
        self.conn = conn
        self.mail_from = mail_from
        self.mail_options = mail_options
        self.rcpts = rcpts
        self.rcpt_options = rcpt_options
        self.data = data

    def __repr__(self):
        return f"Envelope(conn={self.conn}, from={self.mail_from!r}, rcpts={self.rcpts!r})"


class _Handler:
    def __init__(self, owner):
        self.owner = owner

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        server.rm_spoke()
        # aiosmtpd reads commands one by one, so it can take pipelined commands: say so
        # (RFC 2920) so the client may pipeline.
        return responses[:-1] + ["250-PIPELINING", responses[-1]]

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        server.rm_spoke()
        return f"250 {server.hostname}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.owner.rcpt_reply(address)
        if reply is not None:
            return reply
        limit = self.owner.rcpt_limit
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            # RFC 5321 §4.5.3.1.10: no more recipients in this transaction.
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(list(rcpt_options))
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.owner.data_delay_s:
            # A slow MX: the relay has more to send than one connection carries, so its
            # per-destination connection limit is what holds it back.
            await asyncio.sleep(self.owner.data_delay_s)
        return self.owner.record(server, envelope)


class _CountingSMTP(SMTP):
    """Counts the sessions that spoke (the Controller's own readiness probe does not) and
    records the chunks the client's bytes arrived in."""

    def __init__(self, owner, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rm_owner = owner
        self.rm_conn = None

    def rm_spoke(self):
        if self.rm_conn is None:
            self.rm_conn = self.rm_owner.opened()

    def data_received(self, data):
        self.rm_owner.chunk(self.rm_conn, data)
        super().data_received(data)

    def connection_lost(self, exc):
        if self.rm_conn is not None:
            self.rm_owner.closed()
        super().connection_lost(exc)


class _Controller(Controller):
    def __init__(self, owner, *args, **kwargs):
        self.rm_owner = owner
        super().__init__(*args, **kwargs)

    def factory(self):
        return _CountingSMTP(self.rm_owner, self.handler, **self.SMTP_kwargs)


class CaptureServer:
    """An SMTP server on host:port that accepts and records every message.

    reject: {address: "550 5.1.1 ..."} — replies for chosen RCPTs (case-insensitive);
    data_delay_s: how long each end of DATA waits before its 250;
    rcpt_limit: RCPTs accepted per transaction, the next ones get 452 4.5.3 (None: no limit)."""

    def __init__(self, host, port, reject=None, name=None, data_delay_s=0.0, rcpt_limit=None):
        self.data_delay_s = data_delay_s
        self.rcpt_limit = rcpt_limit
        self.host = host
        self.port = port
        self.reject = {k.lower(): v for k, v in (reject or {}).items()}
        self.name = name or f"capture-{host}"
        self.lock = threading.Lock()
        self.envelopes = []
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.chunks = []  # (conn, bytes) as the client's bytes arrived
        self.controller = None

    def rcpt_reply(self, address):
        return self.reject.get(address.lower())

    def opened(self):
        with self.lock:
            self.connections += 1
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)
            return self.connections

    def closed(self):
        with self.lock:
            self.open_now -= 1

    def chunk(self, conn, data):
        with self.lock:
            self.chunks.append((conn, bytes(data)))

    def record(self, server, envelope):
        with self.lock:
            self.envelopes.append(
                Envelope(server.rm_conn, envelope.mail_from, list(envelope.mail_options),
                         list(envelope.rcpt_tos), list(envelope.rcpt_options),
                         bytes(envelope.original_content)))
        return "250 2.0.0 Ok: captured"

    def start(self):
        self.controller = _Controller(self, _Handler(self), hostname=self.host, port=self.port,
                                      ready_timeout=10, server_hostname=self.name,
                                      decode_data=False)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def snapshot(self):
        with self.lock:
            return list(self.envelopes)

    def rcpts(self):
        """Every recipient delivered here, with repeats."""
        return [r for e in self.snapshot() for r in e.rcpts]


# --- Postfix smtp-sink ----------------------------------------------------------------------

class SmtpSink:
    """smtp-sink on host:port; `flags` are its switches (e.g. ["-r", "RCPT"] soft-rejects
    every RCPT). Always runs with -c so its counters can be read."""

    COUNTERS_RE = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")

    def __init__(self, host, port, workdir, flags=()):
        self.host = host
        self.port = port
        self.flags = list(flags)
        self.out_path = os.path.join(workdir, f"smtp-sink-{host}-{port}.out")
        self.proc = None

    def start(self):
        out = open(self.out_path, "wb")
        # -u: smtp-sink refuses to keep root privileges.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [SMTP_SINK, *user, "-c", *self.flags, f"{self.host}:{self.port}", "100"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        wait_for(self._greets, f"smtp-sink on {self.host}:{self.port}", timeout=10)
        return self

    def _greets(self):
        assert self.proc.poll() is None, f"smtp-sink exited {self.proc.returncode}"
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                data = s.recv(512)
                s.sendall(b"QUIT\r\n")
                s.recv(512)
                return data.startswith(b"220")
        except OSError:
            return False

    def counters(self):
        """(sessions, quits, messages) as last printed — the readiness probe is one session."""
        with open(self.out_path, "rb") as f:
            found = self.COUNTERS_RE.findall(f.read())
        if not found:
            return (0, 0, 0)
        return tuple(int(x) for x in found[-1])

    def stop(self):
        self.proc = end_process(self.proc)


def stop_all(peers):
    errors = []
    for p in reversed(peers):
        try:
            p.stop()
        except Exception as e:  # stop every peer, then report the first failure
            errors.append(e)
    if errors:
        raise errors[0]



class ServfailResponder:
    """A UDP 'DNS server' on 127.0.0.1:port that answers every query SERVFAIL (rcode 2): the
    upstream dnsmasq forwards a domain to, so that dnsmasq itself answers SERVFAIL for it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _serve(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(data) < 12:
                continue
            self.queries += 1
            r = bytearray(data)
            r[2] = 0x80 | (data[2] & 0x01)  # QR, keep RD
            r[3] = 0x80 | 2  # RA, SERVFAIL
            self.sock.sendto(bytes(r), addr)

    def stop(self):
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


class Tarpit:
    """An MX that accepts connections and never answers (it holds at most HELD_MAX of them,
    closing the oldest beyond)."""

    HELD_MAX = 500

    def __init__(self, ip, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.held = []
        self.accepted = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.held.append(c)
            if len(self.held) > self.HELD_MAX:
                self.held.pop(0).close()

    def stop(self):
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()
        for c in self.held:
            c.close()
