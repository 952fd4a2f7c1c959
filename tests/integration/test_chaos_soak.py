"""test_chaos_soak.py — a chaos soak of the real daemon: no client, peer or crash may lose
acknowledged mail or stop the relay.

Who runs it: CTest's `integration` test (60 s of chaos), and tests/soak.sh for long runs
(RINGMAIL_SOAK_SECONDS). RINGMAIL_SOAK_SEED replays the same random choices (thread timing
still differs); the seed is printed in the summary line.

The scenario, all on loopback (127.0.0.0/8 only; the daemon asks only the test's dnsmasq):
  - ringmail with delivery on (--threads 2), short retry schedule and queue lifetime, relaying
    to three `ringmail-bench sink` destinations scripted to drop connections at end of data,
    delay replies, answer 4xx and 5xx to RCPT and to end of data, refuse sessions over a limit;
    one destination's preferred MX is down; now and then a sink is stopped mid-session and comes
    back a few seconds later; a fourth destination is a tarpit that never greets (its mail
    expires). A DSN capture server (aiosmtpd) is the MX of the senders' domain, so every bounce
    is seen.
  - chaos clients that cut sessions at random bytes with FIN or RST (SO_LINGER 0): before the
    greeting, mid-command, in a pipelined burst, mid-DATA, right after the final "." before
    reading the reply, inside BDAT chunks;
  - well-behaved clients (smtplib, and raw pipelined BDAT) whose every `250 ... queued as ID`
    is recorded. Each tracked message carries a unique seq twice: in its bench header
    (`X-Ringmail-Bench: seq=N sum=CRC`, which the sink verifies and lists in --seqs-file) and in
    its envelope sender (sN@senders.test, so its DSN is addressed to the seq);
  - kill -9 of the daemon every 2-6 s, restarted on the same spool and port.
Then the chaos stops and the queue drains (polled under a deadline). It asserts:
  - the daemon never died on its own, is alive and answers 250;
  - every acknowledged seq reached a sink intact or came back as a DSN to its sender
    (duplicates are counted and reported: allowed after kill -9); no sink saw a corrupt body;
  - the daemon's open descriptors return near its first life's baseline (fds_settled);
  - every life's stderr is clean (conftest's checks, at each kill and at teardown).
"""

import json
import os
import random
import re
import signal
import smtplib
import socket
import struct
import subprocess
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from delivery_peers import DNSMASQ, Dnsmasq, Tarpit, free_port_on, wait_for

SOAK_S = float(os.environ.get("RINGMAIL_SOAK_SECONDS", "60"))
SEED = int(os.environ.get("RINGMAIL_SOAK_SEED", "0")) or random.SystemRandom().randrange(1, 1 << 31)
BENCH_BIN = os.environ.get("RINGMAIL_BENCH_BIN", "build/bench/ringmail-bench")

CHAOS_THREADS = 12
SMTPLIB_THREADS = 6
BDAT_THREADS = 2
KILL_EVERY_S = (2.0, 6.0)
LIFETIME_S = 10
# After the chaos: the longest a message can wait (lifetime), its DSN's own delivery, margin.
DRAIN_DEADLINE_S = LIFETIME_S * 3 + 30
FD_MARGIN = 10
IO_TIMEOUT_S = 5.0
READY_DEADLINE_S = 20.0
SINK_EXPECT = 1 << 22  # seqs in the sink's duplicate bitmap (beyond: a hash set)

SENDERS = "senders.test"
IP = {"senders": "127.0.0.50", "d0": "127.0.0.51", "d1": "127.0.0.52", "d2": "127.0.0.53",
      "d2_down": "127.0.0.54", "d3": "127.0.0.55"}
# d3's MX is a tarpit: it takes connections and never says a word, so its mail expires (4.4.7).
DOMAINS = {"d0.test": 30, "d1.test": 30, "d2.test": 30, "d3.test": 3}
# Each destination misbehaves differently (fractions are of RCPTs or of messages; the sink draws
# them from the seed and the recipient or the message's seq, so a failing message fails again
# on every retry until its lifetime ends in a 4.4.7 bounce).
SINK_FLAGS = {
    "d0": ["--drop-fraction", "0.03", "--rcpt-temp-fail", "0.03", "--data-delay-ms", "20"],
    "d1": ["--data-temp-fail", "0.04", "--data-perm-fail", "0.04", "--rcpt-perm-fail", "0.04",
           "--max-sessions", "6"],
    "d2": ["--data-delay-ms", "150", "--drop-fraction", "0.02", "--rcpt-temp-fail", "0.02",
           "--rcpt-perm-fail", "0.02", "--no-pipelining", "--no-chunking"],
}

RST = struct.pack("ii", 1, 0)
TRACKED_FROM_RE = re.compile(r"^s(\d+)@" + re.escape(SENDERS) + r"$", re.IGNORECASE)
BENCH_SEQ_RE = re.compile(rb"X-Ringmail-Bench: seq=(\d+) ")
QUEUED_RE = re.compile(rb"queued as ([0-9a-f]{16})")

assert DNSMASQ, "dnsmasq is needed (tools/install-deps.sh test)"


# --- messages the sink can verify ----------------------------------------------------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    t = CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def bench_message(seq, sender, rcpt, size, rng):
    """Content (CRLF lines, ending in CRLF, not dot-stuffed) in ringmail-bench's format: the
    first header says seq and the CRC32C of the seq (8 bytes LE) and of every byte after that
    header (bench/tool_message.hpp). Some lines start with a dot, to exercise transparency."""
    rest = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: soak {seq}\r\n"
            f"Message-ID: <soak-{seq}@client.test>\r\n\r\n").encode()
    lines = []
    total = len(rest)
    for i in range(100000):
        if total >= size:
            break
        n = rng.randint(1, 76)
        line = (f".{seq}." if i % 7 == 3 else "") + "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(n))
        lines.append(line.rstrip(" ") + "\r\n")
        total += len(lines[-1])
    rest += "".join(lines).encode() + b"end\r\n"
    s = crc32c(rest, crc32c(struct.pack("<Q", seq)))
    return f"X-Ringmail-Bench: seq={seq} sum={s:08x}\r\n".encode() + rest


def dot_stuff(content):
    return re.sub(rb"(?m)^\.", b"..", content) + b".\r\n"


# --- peers -----------------------------------------------------------------------------------

class BenchSink:
    """`ringmail-bench sink` on ip:port with --verify and --seqs-file; restartable (each life
    writes its own files, and what every life accepted is kept)."""

    def __init__(self, name, ip, port, workdir, flags, seed):
        if not os.access(BENCH_BIN, os.X_OK):
            pytest.fail(f"ringmail-bench not found at {BENCH_BIN!r} (set RINGMAIL_BENCH_BIN)")
        self.name = name
        self.ip, self.port, self.workdir, self.flags, self.seed = ip, port, workdir, flags, seed
        self.proc = None
        self.lives = 0
        self.reports = []  # the final report of each life
        self.life_seqs = []  # the seqs each life accepted

    def _path(self, ext):
        return os.path.join(self.workdir, f"sink-{self.name}-{self.lives}.{ext}")

    def start(self):
        assert self.proc is None
        self.lives += 1
        cmd = [BENCH_BIN, "sink", "--listen", f"{self.ip}:{self.port}", "--threads", "1",
               "--json", "--verify", "--expect", str(SINK_EXPECT), "--seqs-file",
               self._path("seqs"), "--report-interval", "10", "--hostname",
               f"mx.{self.name}.test", "--seed", str(self.seed), *self.flags]
        with open(self._path("err"), "wb") as err, open(self._path("json"), "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        wait_for(self._ready, f"sink {self.name} listening", timeout=READY_DEADLINE_S)
        return self

    def _ready(self):
        assert self.proc.poll() is None, f"sink {self.name} exited: {self._err()}"
        return b"listening on" in self._err()

    def _err(self):
        with open(self._path("err"), "rb") as f:
            return f.read()

    def stop(self):
        """SIGTERM: the sink drops its connections, writes its final report (stdout) and seqs
        file, and must exit 0."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "killed after 30 s"
        self.proc = None
        assert rc == 0, f"sink {self.name} exited {rc}: {self._err()[-2000:]!r}"
        with open(self._path("json"), "rb") as f:
            self.reports.append(json.loads(f.read()))
        with open(self._path("seqs"), "rb") as f:
            self.life_seqs.append({int(x) for x in f.read().split()})

    def seqs(self):
        return set().union(*self.life_seqs)

    def total(self, key):
        return sum(r[key] for r in self.reports)

    def duplicates(self):
        """Seqs accepted more than once: within a life (the sink's count) and across lives."""
        across = sum(len(x) for x in self.life_seqs) - len(self.seqs())
        return self.total("duplicates") + across


def sink_restarter(run, sinks, rng, down_s=(0.5, 3.0), every_s=(5.0, 15.0)):
    """A peer that goes away: now and then one sink is stopped mid-session (its connections
    cut) and comes back on the same address after a while (connections refused meanwhile)."""
    for _ in range(1000000):
        if run.stop.wait(rng.uniform(*every_s)):  # chaos pacing
            return
        sink = rng.choice(sinks)
        sink.stop()
        run.count("sink_restarts")
        run.stop.wait(rng.uniform(*down_s))  # down for a while, even when the chaos ends now
        sink.start()


class DsnCapture:
    """aiosmtpd handler for the senders' MX: records each message's envelope sender,
    recipients and the bench seq quoted in it (a DSN quotes the original headers)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = []  # (mail_from, [rcpts], seq quoted or None)

    async def handle_DATA(self, server, session, envelope):
        m = BENCH_SEQ_RE.search(envelope.original_content or b"")
        with self.lock:
            self.got.append((envelope.mail_from, list(envelope.rcpt_tos),
                             int(m.group(1)) if m else None))
        return "250 2.0.0 Ok: captured"

    def snapshot(self):
        with self.lock:
            return list(self.got)


def zone():
    return [
        f"--mx-host={SENDERS},mx.{SENDERS},10", f"--host-record=mx.{SENDERS},{IP['senders']}",
        "--mx-host=d0.test,mx.d0.test,10", f"--host-record=mx.d0.test,{IP['d0']}",
        "--mx-host=d1.test,mx.d1.test,10", f"--host-record=mx.d1.test,{IP['d1']}",
        # d2's preferred MX refuses connections: every delivery there falls back to mx2.
        "--mx-host=d2.test,mx1.d2.test,10", f"--host-record=mx1.d2.test,{IP['d2_down']}",
        "--mx-host=d2.test,mx2.d2.test,20", f"--host-record=mx2.d2.test,{IP['d2']}",
        "--mx-host=d3.test,mx.d3.test,10", f"--host-record=mx.d3.test,{IP['d3']}",
    ]


# --- shared state of the run -------------------------------------------------------------------

class Run:
    def __init__(self, port, seed):
        self.port = port
        self.seed = seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.next_seq = 0
        self.acked = {}  # seq -> (queue id, recipient)
        self.counts = {}  # name -> count (cuts by kind, client errors, ...)

    def new_seq(self):
        with self.lock:
            self.next_seq += 1
            return self.next_seq

    def ack(self, seq, qid, rcpt):
        with self.lock:
            assert seq not in self.acked
            self.acked[seq] = (qid, rcpt)

    def count(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def pace(self, rng):
        """A short pause before reconnecting while the daemon restarts (pacing, not sync)."""
        self.stop.wait(rng.uniform(0.02, 0.1))


# --- well-behaved clients ---------------------------------------------------------------------

def pick_domain(rng):
    return rng.choices(list(DOMAINS), list(DOMAINS.values()))[0]


def tracked(run, rng):
    seq = run.new_seq()
    rcpt = f"r{seq}@{pick_domain(rng)}"
    sender = f"s{seq}@{SENDERS}"
    size = rng.choice([300, 1000, 4000, 20000, 60000])
    return seq, sender, rcpt, bench_message(seq, sender, rcpt, size, rng)


def smtplib_client(run, k):
    rng = random.Random(run.seed * 1000 + 100 + k)
    for _ in range(1000000):
        if run.stop.is_set():
            return
        try:
            with smtplib.SMTP("127.0.0.1", run.port, local_hostname="good.client.test",
                              timeout=IO_TIMEOUT_S) as s:
                for _ in range(rng.randint(1, 8)):
                    if run.stop.is_set():
                        break
                    seq, sender, rcpt, msg = tracked(run, rng)
                    s.ehlo_or_helo_if_needed()
                    code, resp = s.mail(sender)
                    if code != 250:
                        run.count(f"good_mail_{code}")
                        s.rset()
                        continue
                    code, resp = s.rcpt(rcpt)
                    if code != 250:
                        run.count(f"good_rcpt_{code}")
                        s.rset()
                        continue
                    code, resp = s.data(msg)
                    m = QUEUED_RE.search(resp)
                    if code == 250 and m:
                        run.ack(seq, m.group(1).decode(), rcpt)
                    else:
                        run.count(f"good_data_{code}")
                s.quit()
        except (smtplib.SMTPException, OSError):
            run.count("good_session_broken")  # the daemon was killed: reconnect
        run.pace(rng)


class Replies:
    """Reads SMTP replies from a socket: count complete replies, remember the last ones."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read(self, n, deadline_s=IO_TIMEOUT_S):
        """The next n replies as [(code, text)]; raises OSError when the connection ends or the
        deadline passes first."""
        out = []
        deadline = time.monotonic() + deadline_s
        lines = []
        for _ in range(100000):
            while b"\r\n" in self.buf and len(out) < n:
                line, self.buf = self.buf.split(b"\r\n", 1)
                lines.append(line)
                if line[3:4] != b"-":
                    out.append((int(line[:3]) if line[:3].isdigit() else 0, b"\n".join(lines)))
                    lines = []
            if len(out) >= n:
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(f"no reply within {deadline_s}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            self.buf += chunk
        raise OSError("too many reply lines")


def bdat_client(run, k):
    """Pipelined sessions: MAIL, RCPT and BDAT chunks in one write (RFC 3030 + RFC 2920)."""
    rng = random.Random(run.seed * 1000 + 200 + k)
    for _ in range(1000000):
        if run.stop.is_set():
            return
        try:
            with socket.create_connection(("127.0.0.1", run.port), timeout=IO_TIMEOUT_S) as s:
                r = Replies(s)
                if r.read(1)[0][0] != 220:
                    raise OSError("no greeting")
                s.sendall(b"EHLO bdat.client.test\r\n")
                ehlo = r.read(1)[0]
                if ehlo[0] != 250 or b"CHUNKING" not in ehlo[1]:
                    raise OSError(f"EHLO {ehlo!r}")
                for _ in range(rng.randint(1, 8)):
                    if run.stop.is_set():
                        break
                    seq, sender, rcpt, msg = tracked(run, rng)
                    cut = rng.randint(1, len(msg) - 1)
                    burst = (f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\n".encode()
                             + f"BDAT {cut}\r\n".encode() + msg[:cut]
                             + f"BDAT {len(msg) - cut} LAST\r\n".encode() + msg[cut:])
                    s.sendall(burst)
                    replies = r.read(4)
                    codes = [c for c, _ in replies]
                    m = QUEUED_RE.search(replies[3][1])
                    if codes == [250, 250, 250, 250] and m:
                        run.ack(seq, m.group(1).decode(), rcpt)
                    else:
                        run.count("good_bdat_refused")
                        s.sendall(b"RSET\r\n")
                        r.read(1)
                s.sendall(b"QUIT\r\n")
                r.read(1)
        except OSError:
            run.count("good_session_broken")
        run.pace(rng)


# --- chaos clients ------------------------------------------------------------------------------

def chaos_script(rng):
    """A whole session as steps (bytes to send, replies to read before the next step), and where
    its interesting cut points are."""
    rcpts = [f"c{rng.randrange(10 ** 9)}@{pick_domain(rng)}" for _ in range(rng.randint(1, 3))]
    body = b"Subject: chaos\r\n\r\n" + b"".join(
        (b"." if rng.random() < 0.1 else b"") + b"x" * rng.randint(0, 120) + b"\r\n"
        for _ in range(rng.randint(1, 200)))
    data_text = dot_stuff(body)
    burst = (f"MAIL FROM:<chaos@{SENDERS}>\r\n".encode()
             + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts) + b"DATA\r\n")
    chunk = b"Subject: bdat chaos\r\n\r\n" + b"y" * rng.randint(0, 3000) + b"\r\n"
    cut = rng.randint(0, len(chunk))
    bdat1 = (b"MAIL FROM:<>\r\n" + f"RCPT TO:<{rcpts[0]}>\r\n".encode()
             + f"BDAT {cut}\r\n".encode() + chunk[:cut])
    bdat2 = f"BDAT {len(chunk) - cut} LAST\r\n".encode() + chunk[cut:]
    steps = [
        ("ehlo", b"EHLO chaos.client.test\r\n", 1),
        ("burst", burst, len(rcpts) + 2),
        ("data", data_text, 1),
        ("bdat", bdat1, 3),
        ("bdat", bdat2, 1),
        ("tail", b"RSET\r\nNOOP\r\nQUIT\r\n", 3),
    ]
    return steps


def chaos_session(run, rng):
    steps = chaos_script(rng)
    total = sum(len(b) for _, b, _ in steps)
    starts, pos = {}, 0
    for name, b, _ in steps:
        starts.setdefault(name, (pos, pos + len(b)))
        if name == "bdat":
            starts["bdat"] = (starts["bdat"][0], pos + len(b))
        pos += len(b)
    kind = rng.choices(["pre_greeting", "random", "mid_command", "mid_data", "after_dot",
                        "bdat", "complete"], [5, 35, 10, 20, 15, 10, 5])[0]
    read_greeting = True
    no_read_at_cut = False
    if kind == "pre_greeting":
        cut, read_greeting = rng.choice([0, rng.randint(0, 20)]), False
    elif kind == "random":
        cut = rng.randint(0, total)
    elif kind == "mid_command":
        a, b = starts[rng.choice(["ehlo", "burst", "tail"])]
        cut = rng.randint(a + 1, max(a + 1, b - 1))
    elif kind == "mid_data":
        a, b = starts["data"]
        cut = rng.randint(a + 1, b - 1)
    elif kind == "after_dot":
        cut, no_read_at_cut = starts["data"][1], True  # the final ".\r\n" sent, 250 not read
    elif kind == "bdat":
        a, b = starts["bdat"]
        cut = rng.randint(a, b)
    else:
        cut = total
    rst = rng.random() < 0.5
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(IO_TIMEOUT_S)
        s.connect(("127.0.0.1", run.port))
        r = Replies(s)
        if read_greeting:
            r.read(1)
        sent = 0
        if not read_greeting and cut > 0:  # talking before the greeting
            s.sendall(b"".join(b for _, b, _ in steps)[:cut])
            sent = cut
        for _, data, nreplies in steps:
            if sent >= cut:
                break
            part = data[:cut - sent]
            s.sendall(part)
            sent += len(part)
            if len(part) < len(data) or (sent == cut and no_read_at_cut):
                break
            r.read(nreplies)
        run.count(f"cut_{kind}_{'rst' if rst else 'fin'}")
    except ConnectionRefusedError:
        run.count("chaos_refused")  # the daemon is down, between a kill and its restart
        run.pace(rng)
    except OSError:
        run.count("chaos_session_broken")  # killed, or the daemon hung up first
    finally:
        try:
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        except OSError:
            pass
        s.close()


def chaos_client(run, k):
    rng = random.Random(run.seed * 1000 + k)
    for _ in range(10000000):
        if run.stop.is_set():
            return
        chaos_session(run, rng)
        if rng.random() < 0.05:
            run.pace(rng)


# --- the daemon under kill -9 -------------------------------------------------------------------

def fd_list(pid):
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd}->{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass  # closed while we looked
    return out


def fd_classes(fds):
    """(all, sockets, files deleted but held open) among fd_list() entries."""
    return (len(fds), sum(1 for f in fds if "->socket:" in f),
            sum(1 for f in fds if f.endswith(" (deleted)")))


def fds_settled(pid, baseline):
    """Open descriptors back near the first life's: as many sockets (listeners, DNS; no client
    or outbound connection left), no deleted spool segment still held (its disk space would never
    come back), and in all at most FD_MARGIN more (the spool reader keeps live segments open)."""
    total, sockets, deleted = fd_classes(fd_list(pid))
    b_total, b_sockets, _ = fd_classes(baseline)
    return total <= b_total + FD_MARGIN and sockets <= b_sockets and deleted == 0


def kill9(d, crashes):
    """SIGKILL and wait. A daemon found dead already, or ending by anything but our SIGKILL,
    crashed on its own: its log tail is kept for the report."""
    rc = d.proc.poll()
    if rc is None:
        d.proc.send_signal(signal.SIGKILL)
        rc = d.proc.wait(timeout=15)
    if rc != -signal.SIGKILL:
        crashes.append(f"life {d.lives} exited {rc}:\n{d.log_text()[-3000:]}")
    d.proc = None
    d.check_log_clean()
    return rc == -signal.SIGKILL


def spool_pending(d):
    """Recipients in the spool not yet final (DSNs included), or None when the spool could not
    be read: ringmail-spool reads a live spool, and a segment it listed may be deleted (all its
    messages final) before it opens it."""
    r = d.spool("json", check=False)
    if r.returncode != 0:
        return None
    final = {"delivered", "bounced", "expired"}
    entries = [json.loads(ln) for ln in r.stdout.decode().splitlines() if ln.strip()]
    return [(e["id"], s["state"]) for e in entries for s in e["rcpt_states"]
            if s["state"] not in final]


def history(d, qid):
    """Every log line of every life that names the queue id (for a lost message's report)."""
    out = []
    for life in range(1, d.lives + 1):
        path = os.path.join(d.workdir, f"ringmail-{d.port}-{life}.log")
        if os.path.exists(path):
            with open(path, "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if qid in line:
                        out.append(f"[life {life}] {line}")
    return out


def test_chaos_soak(ringmail_factory, tmp_path):
    workdir = str(tmp_path)
    rng = random.Random(SEED)
    port = free_port_on(sorted(IP.values()))
    dns = Dnsmasq(zone(), workdir).start()
    dsn = DsnCapture()
    ctl = Controller(dsn, hostname=IP["senders"], port=port)
    ctl.start()
    sinks = {}
    threads = []
    run = None
    tarpit = None
    try:
        for i, name in enumerate(["d0", "d1", "d2"]):
            sinks[name] = BenchSink(name, IP[name], port, workdir, SINK_FLAGS[name],
                                    SEED + i).start()
        tarpit = Tarpit(IP["d3"], port).start()
        d = ringmail_factory(
            "--threads", "2", "--dns-server", f"127.0.0.1:{dns.port}", "--delivery-port",
            str(port), "--retry-schedule", "1s:2s", "--max-queue-lifetime", f"{LIFETIME_S}s",
            "--timeout-connect-ms", "1000", "--outbound-idle-ms", "1000",
            # The tarpit's greeting times out after 3 s instead of 5 min (RFC 5321 §4.5.3.2).
            "--outbound-timeout-percent", "1",
            # Segments still pinned by a live message after 20 s are compacted (its copy moves
            # forward), so compaction runs under kill -9 too, and the spool stays small.
            "--compact-after", "20s",
            "--timeout-command-ms", "10000", "--timeout-data-ms", "10000", delivery=True)
        # Each restart recovers the spool first; on a loaded machine that may take a while.
        d.ready_deadline_s = 90.0
        baseline_fd_list = fd_list(d.proc.pid)
        baseline_fds = len(baseline_fd_list)
        run = Run(d.port, SEED)
        threads = ([threading.Thread(target=chaos_client, args=(run, k), daemon=True)
                    for k in range(CHAOS_THREADS)]
                   + [threading.Thread(target=smtplib_client, args=(run, k), daemon=True)
                      for k in range(SMTPLIB_THREADS)]
                   + [threading.Thread(target=bdat_client, args=(run, k), daemon=True)
                      for k in range(BDAT_THREADS)]
                   + [threading.Thread(target=sink_restarter, daemon=True,
                                       args=(run, list(sinks.values()), random.Random(SEED + 7)))])
        for t in threads:
            t.start()

        # --- chaos: kill -9 at random moments until the time is up ---------------------------
        crashes = []
        kills = 0
        t0 = time.monotonic()
        end = t0 + SOAK_S
        for _ in range(int(SOAK_S / KILL_EVERY_S[0]) + 2):
            pause = rng.uniform(*KILL_EVERY_S)
            if time.monotonic() + pause >= end:
                break
            run.stop.wait(pause)  # chaos pacing: load runs this long before the next kill
            if kill9(d, crashes):
                kills += 1
            d.start()
        run.stop.wait(max(0.0, end - time.monotonic()))  # the last life's share of the chaos
        run.stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a client thread did not stop"
        chaos_s = time.monotonic() - t0

        # --- the daemon is alive and answers 250 (this message is accounted for too) ----------
        crng = random.Random(SEED + 99)
        seq, sender, rcpt, msg = tracked(run, crng)
        assert d.running(), f"ringmail died after the chaos:\n{d.log_text()[-3000:]}"
        with d.smtp() as s:
            assert s.ehlo()[0] == 250
            assert s.mail(sender)[0] == 250
            assert s.rcpt(rcpt)[0] == 250
            code, resp = s.data(msg)
            m = QUEUED_RE.search(resp)
            assert code == 250 and m, (code, resp)
            s.quit()
        run.ack(seq, m.group(1).decode(), rcpt)

        # --- drain: every recipient final (polled under a deadline) --------------------------
        drain_t0 = time.monotonic()
        drained = True
        try:
            wait_for(lambda: d.running() and spool_pending(d) == [], "the queue to drain",
                     timeout=DRAIN_DEADLINE_S, interval=0.2)
        except AssertionError as e:
            drained = False
            drain_error = f"{e}; pending: {spool_pending(d)[:20]}"
        drain_s = time.monotonic() - drain_t0

        # --- descriptors back near the first life's baseline, clients gone --------------------
        fds_ok = True
        try:
            wait_for(lambda: fds_settled(d.proc.pid, baseline_fd_list),
                     "descriptors back near the baseline", timeout=20, interval=0.2)
        except AssertionError:
            fds_ok = False
        end_fd_list = fd_list(d.proc.pid)
        end_fds = len(end_fd_list)

        # --- accounting ------------------------------------------------------------------------
        for s in sinks.values():
            s.stop()
        delivered = set().union(*(s.seqs() for s in sinks.values()))
        reports = {name: s.reports for name, s in sinks.items()}
        bounced = {}
        dsn_to_chaos = 0
        bad_dsn = []
        for mail_from, rcpts, quoted in dsn.snapshot():
            for r in rcpts:
                m = TRACKED_FROM_RE.match(r)
                if not m:
                    dsn_to_chaos += 1
                    continue
                seq_r = int(m.group(1))
                bounced[seq_r] = bounced.get(seq_r, 0) + 1
                if mail_from not in ("", "<>") or (quoted is not None and quoted != seq_r):
                    bad_dsn.append((mail_from, r, quoted))
        acked = dict(run.acked)
        lost = sorted(s for s in acked if s not in delivered and s not in bounced)
        both = sum(1 for s in acked if s in delivered and s in bounced)
        sink_dups = sum(s.duplicates() for s in sinks.values())
        dsn_dups = sum(n - 1 for n in bounced.values())
        corrupt = sum(s.total("corrupt") for s in sinks.values())
        cuts = sum(v for k, v in run.counts.items() if k.startswith("cut_"))
        summary = (f"soak: seed={SEED} chaos_s={chaos_s:.0f} acked={len(acked)} "
                   f"delivered={len(delivered & acked.keys())} "
                   f"bounced={len(bounced.keys() & acked.keys())} lost={len(lost)} "
                   f"duplicates={sink_dups + dsn_dups + both} (sink {sink_dups}, dsn {dsn_dups}, "
                   f"delivered+bounced {both}) kills={kills} crashes={len(crashes)} cuts={cuts} "
                   f"broken_good_sessions={run.counts.get('good_session_broken', 0)} "
                   f"drain_s={drain_s:.1f} fds={baseline_fds}->{end_fds} "
                   f"sink_msgs={sum(s.total('messages') for s in sinks.values())} "
                   f"sink_restarts={run.counts.get('sink_restarts', 0)} "
                   f"tarpit_conns={tarpit.accepted} dsn_to_chaos={dsn_to_chaos}")
        print("\n" + summary)
        print("soak counts: " + " ".join(f"{k}={v}" for k, v in sorted(run.counts.items())))
        out = os.environ.get("RINGMAIL_SOAK_SUMMARY")
        if out:
            with open(out, "a") as f:
                f.write(summary + "\n")

        assert not crashes, "ringmail died on its own:\n" + "\n---\n".join(crashes[:3])
        assert len(acked) > 20 * SOAK_S / 60, f"too little acknowledged mail: {summary}"
        assert kills >= 1 or SOAK_S < KILL_EVERY_S[1], summary
        assert not lost, (f"{len(lost)} acknowledged messages neither delivered nor bounced "
                          f"({summary}); e.g.\n" + "\n".join(
                              f"seq {s} {acked[s]}: " + " | ".join(history(d, acked[s][0])[-8:])
                              for s in lost[:5]))
        assert drained, drain_error
        assert corrupt == 0, f"sinks saw {corrupt} corrupt bodies: {reports}"
        assert not bad_dsn, f"DSNs not from <> or quoting another message: {bad_dsn[:5]}"
        assert fds_ok, (f"ringmail holds {end_fds} descriptors (all, sockets, deleted files: "
                        f"{fd_classes(end_fd_list)}), at start {fd_classes(baseline_fd_list)}: "
                        f"{end_fd_list}; at start: {baseline_fd_list}")
    finally:
        if run is not None:
            run.stop.set()
        for t in threads:
            t.join(timeout=30)
        for s in sinks.values():
            try:
                s.stop()
            except AssertionError:
                pass
        if tarpit is not None:
            tarpit.stop()
        ctl.stop()
        dns.stop()
