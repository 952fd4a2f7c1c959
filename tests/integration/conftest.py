"""conftest.py — the harness of the integration suite: the real ringmail daemon on loopback.

Who uses it: every tests/integration/test_*.py, run by CTest (`integration` test) or by hand
with `python3 -m pytest tests/integration` from a build's parent directory.

What it guarantees:
  - each test gets its own daemon on a free 127.0.0.1 port with a fresh spool directory
    (`--greet-delay-ms 0` unless the test asks otherwise), ready only once a 220 greeting has
    been read (deadline 20 s);
  - at teardown the daemon is stopped with SIGTERM and must exit 0 with no sanitizer report,
    assertion or crash in its stderr;
  - nothing here sleeps to synchronise: every wait polls a condition under a deadline and a
    bounded number of tries.

The programs come from $RINGMAIL_BIN and $RINGMAIL_SPOOL_BIN, defaulting to build/ringmail and
build/ringmail-spool relative to the current directory.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

import pytest

RINGMAIL_BIN = os.environ.get("RINGMAIL_BIN", "build/ringmail")
SPOOL_BIN = os.environ.get("RINGMAIL_SPOOL_BIN", "build/ringmail-spool")
HOSTNAME = "ringmail.test"
READY_DEADLINE_S = 20.0
STOP_DEADLINE_S = 15.0
IO_TIMEOUT_S = 10.0

QUEUED_RE = re.compile(rb"^250[ -]2\.0\.0 Ok: queued as ([0-9a-f]{16})\s*$")
QUEUED_TEXT_RE = re.compile(r"queued as ([0-9a-f]{16})\b")

# stderr lines that mean the daemon is broken, whatever else it logs.
BAD_STDERR_RE = re.compile(
    r"Sanitizer|runtime error:|terminate called|Assertion .* failed|Segmentation fault"
    r"|core dumped|heap-use-after-free|stack-buffer|invariant",
    re.IGNORECASE,
)
# What a log line of ringmail looks like ("<time> ringmail[pid] <level>: ..." or
# "ringmail: ..."); anything else on stderr is output the daemon did not mean to give.
LOG_LINE_RE = re.compile(r"^(\S+ )?ringmail(\[\d+\])?[ :]")


def free_port():
    """A port nobody listens on now (bind-probe on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def strip_received(body):
    """The client's part of a stored body: everything after the relay's first Received header.

    The header is `Received:` plus its folded continuation lines (RFC 5322 §2.2.3: a line
    starting with whitespace continues the previous one)."""
    assert body.startswith(b"Received:"), f"stored body does not start with Received: {body[:80]!r}"
    pos = body.find(b"\r\n")
    assert pos >= 0, "Received header without CRLF"
    pos += 2
    bounded = 0
    while pos < len(body) and body[pos:pos + 1] in (b" ", b"\t"):
        nxt = body.find(b"\r\n", pos)
        assert nxt >= 0, "folded Received header without CRLF"
        pos = nxt + 2
        bounded += 1
        assert bounded < 100, "Received header with more than 100 lines"
    return body[pos:]


def smtplib_content(msg):
    """What smtplib.SMTP.data() puts on the wire for `msg` as message content (before
    dot-stuffing): a str has every line ending made CRLF (bytes are sent as they are), and a
    final CRLF is added when missing. The relay must store exactly this after dot-unstuffing."""
    if isinstance(msg, str):
        msg = re.sub(r"(?:\r\n|\n|\r)", "\r\n", msg).encode("ascii")
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    return msg


def dot_stuff(content):
    """RFC 5321 §4.5.2 transparency for content that already ends in CRLF."""
    assert content == b"" or content.endswith(b"\r\n")
    out = re.sub(rb"(?m)^\.", b"..", content)
    return out + b".\r\n"


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines  # text after "NNN-" / "NNN "

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        first = self.lines[-1].split(" ", 1)[0] if self.lines else ""
        return first

    def __repr__(self):
        return f"Reply({self.code}, {self.lines!r})"


class RawClient:
    """A byte-level SMTP client: send exactly these bytes, read replies one at a time."""

    def __init__(self, port, source=None, timeout=IO_TIMEOUT_S):
        src = (source, 0) if source else None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=src)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _line(self):
        for _ in range(100000):
            pos = self.buf.find(b"\r\n")
            if pos >= 0:
                line, self.buf = self.buf[:pos], self.buf[pos + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unread bytes {self.buf!r}")
            self.buf += chunk
        raise AssertionError("reply line never ended")

    def reply(self):
        lines = []
        for _ in range(1000):
            line = self._line()
            assert len(line) >= 3 and line[:3].isdigit(), f"malformed reply line {line!r}"
            code = int(line[:3])
            lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return Reply(code, lines)
        raise AssertionError("reply with more than 1000 lines")

    def expect(self, code, enhanced=None):
        r = self.reply()
        assert r.code == code, f"expected {code}, got {r}"
        if enhanced is not None:
            assert r.enhanced == enhanced, f"expected {code} {enhanced}, got {r}"
        return r

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def ehlo(self, name="client.test"):
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, r
        return r

    def is_closed(self, timeout=5.0):
        """True when the server closes the connection within `timeout` (bytes it sends before
        closing are kept in self.buf)."""
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False


class Daemon:
    """One ringmail process (restartable on the same port and spool)."""

    def __init__(self, workdir, args, greet_delay_ms, port=None, spool_dir=None, delivery=False,
                 hostname=HOSTNAME):
        if not os.access(RINGMAIL_BIN, os.X_OK):
            pytest.fail(f"ringmail binary not found at {RINGMAIL_BIN!r} (set RINGMAIL_BIN)")
        if not os.access(SPOOL_BIN, os.X_OK):
            pytest.fail(f"ringmail-spool binary not found at {SPOOL_BIN!r} "
                        "(set RINGMAIL_SPOOL_BIN)")
        self.workdir = workdir
        self.port = port or free_port()
        self.spool_dir = spool_dir or os.path.join(workdir, "spool")
        self.args = list(args)
        self.greet_delay_ms = greet_delay_ms
        # Delivery off unless a test asks for it: mail to test domains must never make the
        # relay ask the machine's own DNS servers (only loopback traffic is allowed here).
        self.delivery = delivery
        self.hostname = hostname
        self.proc = None
        # A restart recovers the whole spool before it listens: a soak that grows the spool
        # may allow more.
        self.ready_deadline_s = READY_DEADLINE_S
        self.lives = 0
        self.log_path = None
        self.exit_codes = []

    # --- lifecycle ------------------------------------------------------------------------
    def command(self):
        cmd = [RINGMAIL_BIN, "--listen", f"127.0.0.1:{self.port}", "--spool-dir",
               self.spool_dir, "--hostname", self.hostname]
        if self.greet_delay_ms is not None:
            cmd += ["--greet-delay-ms", str(self.greet_delay_ms)]
        if not self.delivery:
            cmd += ["--no-delivery"]
        return cmd + self.args

    def start(self):
        assert self.proc is None, "daemon already running"
        self.lives += 1
        self.log_path = os.path.join(self.workdir, f"ringmail-{self.port}-{self.lives}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self):
        """Ready = a TCP connect succeeds and a 220 is read (from 127.0.0.1, which is in the
        default relay networks, so no greet delay applies)."""
        deadline = time.monotonic() + self.ready_deadline_s
        last_error = None
        for _ in range(2000):
            if self.proc.poll() is not None:
                pytest.fail(f"ringmail exited with {self.proc.returncode} during start:\n"
                            f"{self.log_text()}")
            if time.monotonic() > deadline:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    data = b""
                    for _ in range(100):
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                        if b"\r\n" in data:
                            break
                    if data.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return
                    last_error = f"greeting {data!r}"
            except OSError as e:
                last_error = repr(e)
            # Not listening yet: poll again (bounded by count and deadline).
            time.sleep(0.02)
        pytest.fail(f"ringmail not ready on port {self.port} within {self.ready_deadline_s}s "
                    f"(last: {last_error}):\n{self.log_text()}")

    def log_text(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def check_log_clean(self):
        lines = self.log_text().splitlines()
        json_log = "json" in self.args and "--log-format" in self.args

        def is_log_line(ln):
            if not json_log:
                return LOG_LINE_RE.match(ln)
            try:
                return isinstance(json.loads(ln), dict)
            except ValueError:
                return False

        bad = [ln for ln in lines if BAD_STDERR_RE.search(ln) or not is_log_line(ln)]
        assert not bad, "ringmail stderr holds more than log lines:\n" + "\n".join(bad[:20])

    def stop(self, deadline_s=STOP_DEADLINE_S):
        """SIGTERM; the daemon must exit 0 within the deadline with a clean stderr. Returns
        its log."""
        assert self.proc is not None, "daemon not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            pytest.fail(f"ringmail did not exit within {deadline_s}s of SIGTERM:\n"
                        f"{self.log_text()[-4000:]}")
        self.proc = None
        self.exit_codes.append(rc)
        text = self.log_text()
        assert rc == 0, f"ringmail exited {rc} after SIGTERM:\n{text[-4000:]}"
        self.check_log_clean()
        return text

    def kill9(self):
        assert self.proc is not None, "daemon not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_DEADLINE_S)
        self.proc = None
        self.check_log_clean()

    def restart(self):
        if self.proc is not None:
            self.stop()
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def teardown(self):
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self.proc = None
            pytest.fail(f"ringmail died during the test (exit {rc}):\n{self.log_text()[-4000:]}")
        self.stop()

    # --- clients --------------------------------------------------------------------------
    def raw(self, source=None, greeting=True):
        c = RawClient(self.port, source=source)
        if greeting:
            c.expect(220)
        return c

    def smtp(self, source=None):
        src = (source, 0) if source else None
        s = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test",
                         timeout=IO_TIMEOUT_S, source_address=src)
        return s

    # --- the spool, through the operator tool ---------------------------------------------
    def spool(self, *args, check=True):
        r = subprocess.run([SPOOL_BIN, "--spool-dir", self.spool_dir, *args],
                           capture_output=True, timeout=120)
        if check:
            assert r.returncode == 0, (f"ringmail-spool {' '.join(args)} exited {r.returncode}:"
                                       f" {r.stderr.decode('utf-8', 'replace')[-2000:]}")
        return r

    def spool_json(self):
        out = self.spool("json").stdout.decode("utf-8")
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def spool_by_id(self):
        entries = self.spool_json()
        by_id = {}
        for e in entries:
            assert e["id"] not in by_id, f"message {e['id']} stored twice"
            by_id[e["id"]] = e
        return by_id

    def body(self, msg_id):
        return self.spool("body", msg_id).stdout

    def client_part(self, msg_id):
        """The stored body without the relay's Received header; also checks the tool's
        body_sha256/body_bytes agree with the bytes it prints."""
        return strip_received(self.body(msg_id))

    def verify(self):
        return self.spool("verify", check=False).returncode


@pytest.fixture
def ringmail_factory(tmp_path):
    """make(*flags, greet_delay_ms=0, hostname=...) → a started Daemon; all are stopped (SIGTERM, exit 0)
    at teardown."""
    daemons = []

    def make(*args, greet_delay_ms=0, spool_dir=None, delivery=False, hostname=HOSTNAME):
        workdir = tmp_path / f"d{len(daemons)}"
        workdir.mkdir()
        d = Daemon(str(workdir), args, greet_delay_ms, spool_dir=spool_dir, delivery=delivery,
                   hostname=hostname)
        daemons.append(d)
        return d.start()

    yield make
    errors = []
    for d in daemons:
        try:
            d.teardown()
            # Segments are preallocated: do not leave them behind once the test passed its
            # checks (pytest keeps the temp dirs of the last runs).
            shutil.rmtree(d.spool_dir, ignore_errors=True)
        except BaseException as e:  # stop every daemon, then report the first failure
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def ringmail(ringmail_factory):
    """A daemon with default flags (and no greet delay)."""
    return ringmail_factory()


def send_smtplib(d, mail_from, rcpts, msg, mail_options=(), rcpt_options=(), source=None):
    """One transaction through smtplib; returns (queue id, the content the relay must store)."""
    with d.smtp(source=source) as s:
        code, _ = s.ehlo()
        assert code == 250
        code, resp = s.mail(mail_from, list(mail_options))
        assert code == 250, resp
        for r in rcpts:
            code, resp = s.rcpt(r, list(rcpt_options))
            assert code == 250, (r, code, resp)
        code, resp = s.data(msg)
        assert code == 250, (code, resp)
        m = QUEUED_TEXT_RE.search(resp.decode("utf-8", "replace"))
        assert m, f"no queue id in {resp!r}"
        assert resp.startswith(b"2.0.0 Ok: queued as "), resp
        s.quit()
    return m.group(1), smtplib_content(msg)


@pytest.fixture
def helpers():
    """Stateless helpers for test modules (conftest is not importable as a module)."""

    class H:
        Reply = Reply
        RawClient = RawClient
        strip_received = staticmethod(strip_received)
        smtplib_content = staticmethod(smtplib_content)
        dot_stuff = staticmethod(dot_stuff)
        sha256 = staticmethod(sha256)
        RINGMAIL_BIN = RINGMAIL_BIN
        send_smtplib = staticmethod(send_smtplib)
        QUEUED_RE = QUEUED_RE
        QUEUED_TEXT_RE = QUEUED_TEXT_RE
        HOSTNAME = HOSTNAME

    return H
