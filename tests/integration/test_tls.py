"""test_tls.py — STARTTLS, implicit TLS (465) and AUTH on the real daemon, with real clients.

Who runs it: CTest's `integration` test, or `python3 -m pytest tests/integration/test_tls.py`.

Pins (issue 4, server side): encrypted submission end to end with smtplib and swaks (stored
once, Received says ESMTPSA with the TLS version and cipher); AUTH is neither advertised nor
accepted before TLS (538 5.7.11); a wrong password gets 535 5.7.8; commands pipelined after
STARTTLS are never answered; a second STARTTLS gets 503; TLS 1.0/1.1 clients are refused with
a protocol_version alert; 10,000 clients that hang up mid-handshake leave no descriptor and no
memory behind; an untrusted client cannot relay without AUTH and can with it; repeated AUTH
failures from one address are answered more and more slowly and then with 421, while another
address still authenticates at once, and they are counted once however SO_REUSEPORT spreads
the address's connections over the cores; TLS 1.2 sessions are resumed.

Certificates (EC P-256) and the users file ($6$ via `openssl passwd`, $y$ via libxcrypt's
crypt_gensalt) are made at test time. Nothing sleeps to synchronise: waits poll a condition
under a deadline.
"""

import base64
import ctypes
import os
import re
import select
import smtplib
import socket
import ssl
import struct
import subprocess
import time

import pytest

IO_TIMEOUT_S = 10.0
TOOL_TIMEOUT_S = 60
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
TLS_RECEIVED_RE = re.compile(
    rb"with (ESMTPSA|ESMTPS) id [0-9a-f]{16}\r\n\t\(using (TLSv1\.[23]) with cipher "
    rb"(TLS_[A-Z0-9_]+)\)")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def yescrypt(password):
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.restype = ctypes.c_char_p
    salt = lib.crypt_gensalt(b"$y$", 0, None, 0)
    assert salt, "crypt_gensalt($y$) failed"
    return lib.crypt(password.encode(), salt).decode()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key, users = d / "cert.pem", d / "key.pem", d / "users"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=ringmail.test"],
                   check=True, capture_output=True, timeout=TOOL_TIMEOUT_S)
    sha = subprocess.run(["openssl", "passwd", "-6", USERS["alice"]], check=True,
                         capture_output=True, timeout=TOOL_TIMEOUT_S).stdout.decode().strip()
    users.write_text(f"# test users\nalice:{sha}\nbob:{yescrypt(USERS['bob'])}\n")
    return {"cert": str(cert), "key": str(key), "users": str(users)}


class TlsDaemon:
    def __init__(self, d, submission_port, smtps_port):
        self.d = d
        self.port = d.port
        self.submission_port = submission_port
        self.smtps_port = smtps_port


@pytest.fixture
def tls_factory(ringmail_factory, tls_files):
    def make(*args):
        sub, smtps = free_port(), free_port()
        d = ringmail_factory("--submission-listen", f"127.0.0.1:{sub}", "--smtps-listen",
                             f"127.0.0.1:{smtps}", "--tls-cert", tls_files["cert"],
                             "--tls-key", tls_files["key"], "--auth-users",
                             tls_files["users"], *args)
        return TlsDaemon(d, sub, smtps)
    return make


@pytest.fixture
def tlsd(tls_factory):
    return tls_factory()


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def plain_b64(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def queue_id(resp_text, helpers):
    m = helpers.QUEUED_TEXT_RE.search(resp_text)
    assert m, f"no queue id in {resp_text!r}"
    return m.group(1)


def assert_tls_received(t, msg_id, protocol=b"ESMTPSA"):
    body = t.d.body(msg_id)
    m = TLS_RECEIVED_RE.search(body.split(b"\r\n\r\n", 1)[0])
    assert m, f"Received header without TLS details: {body[:400]!r}"
    assert m.group(1) == protocol, body[:400]
    return m.group(2).decode(), m.group(3).decode()


def swaks(port, *args):
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--helo", "swaks.test",
                        "--from", "sender@example.com", "--to", "rcpt@elsewhere.example",
                        *args], capture_output=True, timeout=TOOL_TIMEOUT_S)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def ehlo_keywords(reply):
    return [ln.split(" ", 1)[0].upper() for ln in reply.lines[1:]]


# --- end to end --------------------------------------------------------------------------

def test_submission_starttls_login_smtplib(tlsd, helpers):
    with smtplib.SMTP("127.0.0.1", tlsd.submission_port, local_hostname="client.test",
                      timeout=IO_TIMEOUT_S) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        code, _ = s.starttls(context=client_context())
        assert code == 220
        s.ehlo()
        assert s.has_extn("auth") and not s.has_extn("starttls")
        assert set(s.esmtp_features["auth"].upper().split()) == {"PLAIN", "LOGIN"}
        code, _ = s.login("alice", USERS["alice"])
        assert code == 235
        code, resp = s.mail("sender@example.com")
        assert code == 250, resp
        code, resp = s.rcpt("rcpt@elsewhere.example")  # anywhere: the client authenticated
        assert code == 250, resp
        code, resp = s.data(b"Subject: submitted\r\n\r\nover TLS\r\n")
        assert code == 250, resp
        msg_id = queue_id(resp.decode(), helpers)
    entries = tlsd.d.spool_by_id()
    assert list(entries) == [msg_id]
    assert [r["address"] for r in entries[msg_id]["rcpts"]] == ["rcpt@elsewhere.example"]
    version, cipher = assert_tls_received(tlsd, msg_id)
    assert version in ("TLSv1.2", "TLSv1.3") and cipher.startswith("TLS_")
    assert tlsd.d.client_part(msg_id) == b"Subject: submitted\r\n\r\nover TLS\r\n"


def test_implicit_tls_smtp_ssl_yescrypt_user(tlsd, helpers):
    with smtplib.SMTP_SSL("127.0.0.1", tlsd.smtps_port, local_hostname="client.test",
                          timeout=IO_TIMEOUT_S, context=client_context()) as s:
        s.ehlo()
        assert s.has_extn("auth") and not s.has_extn("starttls")
        s.login("bob", USERS["bob"])
        refused = s.sendmail("bob@example.com", ["x@elsewhere.example"], b"Subject: 465\r\n\r\nx\r\n")
        assert refused == {}
    entries = tlsd.d.spool_by_id()
    assert len(entries) == 1
    assert_tls_received(tlsd, next(iter(entries)))


def test_swaks_starttls_plain_and_implicit_tls_login(tlsd, helpers):
    rc, out = swaks(tlsd.submission_port, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                    "--auth-password", USERS["alice"])
    assert rc == 0, out
    assert "235 2.7.0" in out
    rc, out2 = swaks(tlsd.smtps_port, "--tlsc", "--auth", "LOGIN", "--auth-user", "bob",
                     "--auth-password", USERS["bob"])
    assert rc == 0, out2
    ids = [queue_id(o, helpers) for o in (out, out2)]
    entries = tlsd.d.spool_by_id()
    assert sorted(entries) == sorted(ids)
    for i in ids:
        assert_tls_received(tlsd, i)


def test_openssl_s_client_starttls(tlsd):
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                        f"127.0.0.1:{tlsd.submission_port}", "-ign_eof", "-quiet"],
                       input=b"EHLO client.test\r\nQUIT\r\n", capture_output=True,
                       timeout=TOOL_TIMEOUT_S)
    out = r.stdout.decode("utf-8", "replace")
    assert "250-AUTH PLAIN LOGIN" in out, out + r.stderr.decode()
    assert "STARTTLS" not in out
    assert "221 2.0.0 Bye" in out


def test_plain_listener_offers_starttls_with_a_certificate(tlsd, helpers):
    with helpers.RawClient(tlsd.port) as c:
        c.expect(220)
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" in kw and "AUTH" not in kw


# --- refusals ----------------------------------------------------------------------------

@pytest.mark.parametrize("listener", ["submission", "plain"])
def test_auth_before_tls_is_refused_and_not_advertised(tlsd, helpers, listener):
    port = tlsd.submission_port if listener == "submission" else tlsd.port
    with helpers.RawClient(port) as c:
        c.expect(220)
        assert "AUTH" not in ehlo_keywords(c.ehlo())
        r = c.cmd("AUTH PLAIN " + plain_b64("alice", USERS["alice"]))
        assert (r.code, r.enhanced) == (538, "5.7.11"), r
        r = c.cmd("AUTH LOGIN")
        assert (r.code, r.enhanced) == (538, "5.7.11"), r
        if listener == "submission":
            r = c.cmd("MAIL FROM:<a@example.com>")
            assert (r.code, r.enhanced) == (530, "5.7.0"), r
    assert tlsd.d.spool_json() == []


def test_wrong_password_is_535(tlsd):
    with smtplib.SMTP("127.0.0.1", tlsd.submission_port, timeout=IO_TIMEOUT_S) as s:
        s.starttls(context=client_context())
        s.ehlo()
        code, resp = s.docmd("AUTH", "PLAIN " + plain_b64("alice", "not-her-password"))
        assert code == 535 and resp.startswith(b"5.7.8"), (code, resp)
        code, resp = s.docmd("AUTH", "PLAIN " + plain_b64("mallory", "x"))
        assert code == 535 and resp.startswith(b"5.7.8"), (code, resp)
        code, resp = s.mail("a@example.com")
        assert (code, resp[:5]) == (530, b"5.7.0"), (code, resp)


def test_commands_pipelined_after_starttls_are_discarded(tlsd, helpers):
    with helpers.RawClient(tlsd.port) as c:
        c.expect(220)
        c.ehlo()
        c.send("STARTTLS\r\nRSET\r\n")  # one write: RSET is the injected command
        c.expect(220, "2.0.0")
        assert c.buf == b""
        c.sock = client_context().wrap_socket(c.sock)
        r = c.cmd("EHLO client.test")
        # The first reply after the handshake answers our EHLO, not the injected RSET.
        assert r.code == 250 and len(r.lines) > 1 and r.lines[0] == helpers.HOSTNAME, r
        r = c.cmd("QUIT")
        assert r.code == 221


def test_second_starttls_is_503(tlsd):
    with smtplib.SMTP("127.0.0.1", tlsd.port, timeout=IO_TIMEOUT_S) as s:
        s.starttls(context=client_context())
        s.ehlo()
        code, resp = s.docmd("STARTTLS")
        assert code == 503 and resp.startswith(b"5.5.1"), (code, resp)
        code, _ = s.noop()
        assert code == 250


def s_client(*args, data=b""):
    r = subprocess.run(["openssl", "s_client", *args], input=data, capture_output=True,
                       timeout=TOOL_TIMEOUT_S)
    return r.returncode, r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_old_tls_versions_are_refused(tlsd, version):
    # SECLEVEL=0 lets this OpenSSL offer the old versions at all: the refusal must be ours.
    rc, out = s_client("-connect", f"127.0.0.1:{tlsd.smtps_port}", version, "-cipher",
                       "DEFAULT@SECLEVEL=0")
    assert rc != 0, out
    assert "alert protocol version" in out, out
    rc, out = s_client("-starttls", "smtp", "-connect", f"127.0.0.1:{tlsd.submission_port}",
                       version, "-cipher", "DEFAULT@SECLEVEL=0")
    assert rc != 0 and "alert protocol version" in out, out
    # Control: the same client at TLS 1.2 gets in.
    rc, out = s_client("-connect", f"127.0.0.1:{tlsd.smtps_port}", "-tls1_2", "-cipher",
                       "DEFAULT@SECLEVEL=0", "-ign_eof", data=b"QUIT\r\n")
    assert rc == 0 and "Protocol  : TLSv1.2" in out and "221 2.0.0" in out, out


def test_tls12_session_is_resumed(tlsd, tmp_path):
    sess = str(tmp_path / "sess.pem")
    rc, out = s_client("-connect", f"127.0.0.1:{tlsd.smtps_port}", "-tls1_2", "-sess_out", sess,
                       "-ign_eof", data=b"QUIT\r\n")
    assert rc == 0 and "New, TLSv1.2" in out, out
    rc, out = s_client("-connect", f"127.0.0.1:{tlsd.smtps_port}", "-tls1_2", "-sess_in", sess,
                       "-ign_eof", data=b"QUIT\r\n")
    assert rc == 0 and "Reused, TLSv1.2" in out, out


def test_relay_needs_auth_from_untrusted_address(tls_factory):
    t = tls_factory("--relay-networks", "127.0.0.1/32")
    with smtplib.SMTP("127.0.0.1", t.port, timeout=IO_TIMEOUT_S,
                      source_address=("127.0.0.2", 0)) as s:
        s.ehlo()
        assert s.mail("a@example.com")[0] == 250
        code, resp = s.rcpt("rcpt@elsewhere.example")
        assert code == 554 and resp.startswith(b"5.7.1"), (code, resp)
        s.rset()
        s.starttls(context=client_context())  # TLS alone does not make a client trusted
        s.ehlo()
        assert s.mail("a@example.com")[0] == 250
        code, resp = s.rcpt("rcpt@elsewhere.example")
        assert code == 554 and resp.startswith(b"5.7.1"), (code, resp)
        s.rset()
        s.login("alice", USERS["alice"])
        assert s.mail("a@example.com")[0] == 250
        code, resp = s.rcpt("rcpt@elsewhere.example")
        assert code == 250, (code, resp)
        code, resp = s.data(b"Subject: relayed\r\n\r\nx\r\n")
        assert code == 250, resp
    assert len(t.d.spool_json()) == 1


def timed_auth(s, user, password):
    t0 = time.monotonic()
    code, resp = s.docmd("AUTH", "PLAIN " + plain_b64(user, password))
    return code, resp, time.monotonic() - t0


def test_auth_failures_are_delayed_more_and_more_then_421(tls_factory):
    delay_s = 0.4
    # One thread: the measured delays hold no cross-core round trip (the accounting over
    # several cores is pinned by test_auth_failures_are_counted_once_over_all_cores).
    t = tls_factory("--threads", "1", "--auth-failure-delay-ms", str(int(delay_s * 1000)),
                    "--auth-failures-max", "3")
    with smtplib.SMTP("127.0.0.1", t.submission_port, timeout=IO_TIMEOUT_S) as s:
        s.starttls(context=client_context())
        s.ehlo()
        code1, _, t1 = timed_auth(s, "alice", "wrong-1")
        code2, _, t2 = timed_auth(s, "alice", "wrong-2")
        assert (code1, code2) == (535, 535)
        assert t1 >= delay_s * 0.9, t1
        assert t2 >= 2 * delay_s * 0.9, t2
        assert t2 > t1 + delay_s / 2, (t1, t2)
        code3, resp3, _ = timed_auth(s, "alice", "wrong-3")
        assert code3 == 421 and resp3.startswith(b"4.7.0"), (code3, resp3)
    # The address stays refused, even with the right password...
    with smtplib.SMTP("127.0.0.1", t.submission_port, timeout=IO_TIMEOUT_S) as s:
        s.starttls(context=client_context())
        s.ehlo()
        code, resp, _ = timed_auth(s, "alice", USERS["alice"])
        assert code == 421, (code, resp)
    # ...while another address authenticates at once.
    with smtplib.SMTP("127.0.0.1", t.submission_port, timeout=IO_TIMEOUT_S,
                      source_address=("127.0.0.2", 0)) as s:
        s.starttls(context=client_context())
        s.ehlo()
        code, resp, elapsed = timed_auth(s, "alice", USERS["alice"])
        assert code == 235, (code, resp)
        assert elapsed < delay_s, elapsed


# "coreN debug: TLS with 127.0.0.1: ..." — the core that finished a handshake with this address.
TLS_CORE_RE = re.compile(r" core(\d+) debug: TLS with 127\.0\.0\.1: ")


def starttls_client(port, source=None):
    s = smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT_S,
                     source_address=(source, 0) if source else None)
    s.starttls(context=client_context())
    s.ehlo()  # answered after the server finished (and logged) the handshake
    return s


def test_auth_failures_are_counted_once_over_all_cores(tls_factory):
    # SO_REUSEPORT spreads one address's connections over the cores by their 4-tuple; the
    # address's failures are still counted in one place, by the core that owns the address.
    t = tls_factory("--threads", "2", "--log-level", "debug", "--auth-failure-delay-ms", "1",
                    "--auth-failures-max", "4")
    by_core = {0: [], 1: []}  # open connections from 127.0.0.1, by the core serving them
    opened = []
    try:
        # Connections open one at a time, so the newest handshake line of the log is the
        # newest connection's. Three on each core; 40 tries all landing on one core would take
        # a 1 in 2^39 hash.
        for _ in range(40):
            opened.append(starttls_client(t.submission_port))
            cores = TLS_CORE_RE.findall(t.d.log_text())
            assert len(cores) == len(opened), cores
            by_core[int(cores[-1])].append(opened[-1])
            if min(len(c) for c in by_core.values()) >= 3:
                break
        assert min(len(c) for c in by_core.values()) >= 3, {k: len(v) for k, v in by_core.items()}
        # Failures alternate between the cores: each core sees two, the owner counts four.
        attempts = [by_core[0][0], by_core[1][0], by_core[0][1], by_core[1][1]]
        replies = [timed_auth(s, "alice", f"wrong-{i}")[:2] for i, s in enumerate(attempts)]
        assert [code for code, _ in replies] == [535, 535, 535, 421], replies
        assert replies[3][1].startswith(b"4.7.0"), replies
        # From now on the address is refused without a check, on either core, even with the
        # right password, on connections open before and after the 421.
        later = [by_core[0][2], by_core[1][2], starttls_client(t.submission_port)]
        opened.append(later[2])
        for s in later:
            code, resp, _ = timed_auth(s, "alice", USERS["alice"])
            assert code == 421 and resp.startswith(b"4.7.0"), (code, resp)
    finally:
        for s in opened:
            s.close()
    # Another address is unaffected.
    with starttls_client(t.submission_port, source="127.0.0.2") as s:
        code, resp, _ = timed_auth(s, "alice", USERS["alice"])
        assert code == 235, (code, resp)


# --- resources ---------------------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def abort_handshake(port, ctx, wait_for_server):
    """Sends a ClientHello and hangs up, before (or right after) the server's first flight."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    raw.setblocking(False)
    tls = ctx.wrap_socket(raw, do_handshake_on_connect=False)  # takes over the socket
    try:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, OSError):
            # Refused at once: over --max-connections-per-ip while the server still closes
            # the previous ones (this client does not wait for that).
            return
        if wait_for_server:
            readable, _, _ = select.select([tls], [], [], IO_TIMEOUT_S)
            assert readable, "server sent nothing for the ClientHello"
    finally:
        tls.close()


def wait_fds(pid, target, deadline_s=30.0):
    deadline = time.monotonic() + deadline_s
    n = fd_count(pid)
    for _ in range(100000):
        n = fd_count(pid)
        if n <= target or time.monotonic() > deadline:
            return n
        time.sleep(0.05)  # polling the daemon's fd table, not synchronising with it
    return n


def sanitized(binary):
    """An ASan build keeps freed memory in quarantine, so its RSS says nothing about leaks;
    LeakSanitizer, checked at the daemon's exit, does that job there."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def test_mid_handshake_hangups_leave_nothing_behind(tlsd, helpers):
    pid = tlsd.d.proc.pid
    check_rss = not sanitized(helpers.RINGMAIL_BIN)
    ctx = client_context()
    fds0 = fd_count(pid)

    def burst(n):
        for i in range(n):
            abort_handshake(tlsd.smtps_port, ctx, i % 2 == 0)

    # Warm-up: the connection pool and the allocator grow to the peak number of concurrent
    # handshakes (bounded by --max-connections-per-ip), and keep that memory for reuse.
    burst(1000)
    assert wait_fds(pid, fds0) == fds0
    rss0 = rss_kib(pid)
    t0 = time.monotonic()
    burst(5000)
    rss1 = rss_kib(pid)
    burst(5000)
    elapsed = time.monotonic() - t0
    assert elapsed < 300, f"10,000 aborted handshakes took {elapsed:.0f} s"
    fds2 = wait_fds(pid, fds0)
    rss2 = rss_kib(pid)
    assert fds2 == fds0, (fds0, fds2)
    # A leaked TLS session is ~50 KiB: 5,000 of them would be ~250 MiB. What remains is
    # allocator noise and pool growth to a slightly higher peak.
    if check_rss:
        assert rss2 - rss1 < 8 * 1024, f"VmRSS {rss0} -> {rss1} -> {rss2} KiB"
        assert rss2 - rss0 < 32 * 1024, f"VmRSS {rss0} -> {rss1} -> {rss2} KiB"
    # And the daemon still serves TLS.
    with smtplib.SMTP_SSL("127.0.0.1", tlsd.smtps_port, timeout=IO_TIMEOUT_S,
                          context=ctx) as s:
        assert s.ehlo()[0] == 250


def test_clients_vanishing_while_their_auth_is_checked(tls_factory, helpers):
    """AUTH is checked on a worker thread and its failures are settled with the address's
    owner core: a client that hangs up (FIN or RST) right after sending its credentials leaves
    the check in flight. The daemon survives, counts no phantom failure, frees the slots, and
    the next client authenticates."""
    t = tls_factory("--threads", "2", "--auth-failures-max", "1000")
    pid = t.d.proc.pid
    fds0 = fd_count(pid)
    ctx = client_context()
    for i in range(40):
        raw = socket.create_connection(("127.0.0.1", t.smtps_port), timeout=IO_TIMEOUT_S)
        s = ctx.wrap_socket(raw)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO vanish.test\r\n")
        for _ in range(30):
            if f.readline()[3:4] == b" ":
                break
        password = USERS["alice"] if i % 2 == 0 else "wrong"
        s.sendall(b"AUTH PLAIN " + plain_b64("alice", password).encode() + b"\r\n")
        if i % 4 >= 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        assert t.d.running(), f"daemon died after {i + 1} clients left during their AUTH check"
    assert wait_fds(pid, fds0 + 1) <= fds0 + 1, "descriptors of vanished clients not freed"
    with smtplib.SMTP_SSL("127.0.0.1", t.smtps_port, timeout=IO_TIMEOUT_S,
                          context=client_context()) as s:
        s.ehlo("after.test")
        code, resp = s.docmd("AUTH", "PLAIN " + plain_b64("alice", USERS["alice"]))
        assert code == 235, (code, resp)
