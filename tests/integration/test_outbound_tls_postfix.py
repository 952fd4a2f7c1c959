"""test_outbound_tls_postfix.py — outbound STARTTLS to a real Postfix destination (issue 4).

Pins --outbound-tls against Postfix's own smtpd as the destination MX (test_outbound_tls.py
does the same against aiosmtpd peers): under `may` (the default) a Postfix offering STARTTLS
gets the mail inside TLS, and both ends agree on it (Postfix's Received header says
"using TLSv1.x with cipher C", ringmail's delivery log says tls=TLSv1.x/C, Postfix logs the TLS
session); under `encrypt` the same Postfix is delivered to inside TLS; under `encrypt` a
Postfix that offers no STARTTLS is deferred with 4.7.5 on every try and never sees a MAIL
command (Postfix's own per-session command counts say so), and once that Postfix is
reconfigured with TLS and reloaded the retry delivers it encrypted; under `may` that Postfix
gets the mail in clear (tls=none, a Received header "with ESMTP" and no TLS). Every delivered
message is read back from the maildir Postfix's virtual(8) wrote: the envelope (Return-Path,
Delivered-To), exactly two Received headers (Postfix's, then ringmail's) and then, byte for
byte, what the client sent.

The Postfix instances are private (never /etc/postfix or a system instance): each test starts
its own `postfix -c DIR` as root, with its config, queue, data, maildir and maillog in a
0755 directory made under /tmp (pytest's own tmp dirs are 0700, which Postfix's unprivileged
processes cannot traverse), listening on 127.0.0.51 at a port chosen per test; it resolves no
name (smtpd_peername_lookup = no, every non-local transport is error:). Teardown runs
`postfix stop`, then ends every process still carrying its MAIL_CONFIG through a pidfd, and
fails if one survives SIGKILL. Isolation as in test_outbound_tls.py: the test's own dnsmasq
(pf.test MX mx.pf.test → 127.0.0.51), ringmail on 127.0.0.1, and 127.0.0.51 used by no other
test.
"""

import email
import email.policy
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import aiosmtpd  # noqa: F401  delivery_peers needs it; installed by tools/install-deps.sh test

from delivery_peers import (DNSMASQ, Dnsmasq, delivery_lines, find_tool,  # noqa: E402
                            free_port_on, stop_all, wait_for)

POSTFIX = find_tool("postfix")
POSTCONF = find_tool("postconf")
# The peers are installed by the test command: missing ones fail the run, never skip it.
assert DNSMASQ, "dnsmasq is needed (tools/install-deps.sh test)"
assert POSTFIX and POSTCONF, "Postfix is needed (tools/install-deps.sh test)"

PF_IP = "127.0.0.51"  # mx.pf.test; ringmail connects from 127.0.0.1, the readiness probe from here
DOMAIN = "pf.test"
RCPT = f"x@{DOMAIN}"
SENDER = "sender@s.test"
VMAIL_UID = 65534  # virtual(8) writes the maildir as nobody:nogroup
RINGMAIL_PEER = "unknown[127.0.0.1]"  # how Postfix names ringmail (no reverse lookup)
ZONE = [f"--mx-host={DOMAIN},mx.{DOMAIN},10", f"--host-record=mx.{DOMAIN},{PF_IP}"]

# Every service the destination needs, none chrooted (the queue is not a chroot jail here).
MASTER_CF = """\
{ip}:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
# Postfix refuses an inet_interfaces address no interface carries (127.0.0.51 is only routed
# to lo); the listener's own address is in master.cf.
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.{domain}
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_peername_lookup = no
default_transport = error:this test's Postfix delivers nowhere else
relay_transport = error:this test's Postfix delivers nowhere else
smtpd_tls_security_level = {tls_level}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{uid}
"""


def run_tty(cmd, timeout=30.0):
    """(exit code, output) of a Postfix command. Its stderr is a pty: Postfix commands print
    their errors only to a terminal (else to syslog, which may not exist here, or the maillog,
    which a broken main.cf never names)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        for _ in range(int(timeout / 0.05) + 100):
            exited = proc.poll() is not None
            ready, _, _ = select.select([master], [], [], 0.05)
            chunk = b""
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: nobody holds the other end any more
                    pass
                out += chunk
            if exited and not chunk:
                break  # it had exited before this read, and nothing was left to read
            if time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait(timeout=10)
    finally:
        os.close(master)
    return rc, out.decode("utf-8", "replace")


def alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def waited(pred, what, log, timeout=30.0):
    """wait_for, failing with the tail of log() as it was when the deadline passed."""
    try:
        return wait_for(pred, what, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlog:\n{log()[-3000:]}") from None


def make_cert(directory):
    key, cert = f"{directory}/mx.key", f"{directory}/mx.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", f"/CN=mx.{DOMAIN}"],
                   check=True, capture_output=True)
    return cert, key


class Postfix:
    """A private Postfix on PF_IP:port whose virtual(8) delivers everything for pf.test into
    one maildir; `tls` says whether its smtpd offers STARTTLS."""

    def __init__(self, root, cert, key, port, tls):
        self.dir = tempfile.mkdtemp(prefix="pf-", dir=root)
        os.chmod(self.dir, 0o755)
        self.conf = f"{self.dir}/conf"
        self.maildir = f"{self.dir}/mail/box"
        self.cert, self.key, self.port, self.tls = cert, key, port, tls

    # --- lifecycle ------------------------------------------------------------------------
    def start(self):
        for sub in ("conf", "queue", "mail"):
            os.mkdir(f"{self.dir}/{sub}", 0o755)
        os.chown(f"{self.dir}/mail", VMAIL_UID, VMAIL_UID)
        with open(f"{self.conf}/main.cf", "w") as f:
            f.write(MAIN_CF.format(dir=self.dir, domain=DOMAIN, cert=self.cert, key=self.key,
                                   uid=VMAIL_UID, tls_level="may" if self.tls else "none"))
        with open(f"{self.conf}/master.cf", "w") as f:
            f.write(MASTER_CF.format(ip=PF_IP, port=self.port))
        try:
            # `postfix start` checks the configuration first (its check-fatal), then runs
            # `master -w`, which returns once the master is ready.
            self.postfix("start")
            # The listener answers, and offers STARTTLS exactly when this instance should.
            self.wait_offers_starttls(self.tls)
        except BaseException:
            self.stop()
            raise
        return self

    def postfix(self, *args):
        rc, out = run_tty([POSTFIX, "-c", self.conf, *args])
        assert rc == 0, f"postfix {' '.join(args)} exited {rc}: {out}\nmaillog:\n{self.log()}"
        return out

    def postconf(self, *args):
        rc, out = run_tty([POSTCONF, "-c", self.conf, *args])
        assert rc == 0, f"postconf {' '.join(args)} exited {rc}: {out}"
        return out

    def set_tls(self, tls):
        """Switches STARTTLS on or off and reloads; returns once the listener says so."""
        self.postconf("-e", f"smtpd_tls_security_level={'may' if tls else 'none'}")
        reloads = self.log().count(" reload -- version ")
        self.postfix("reload")
        self.wait(lambda: self.log().count(" reload -- version ") > reloads, "Postfix's reload",
                  timeout=15)
        self.tls = tls
        self.wait_offers_starttls(tls)

    def is_own(self, pid):
        """The process carries this instance's MAIL_CONFIG (Postfix's master exports it to
        every child) and is not a zombie."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            return False
        return b"MAIL_CONFIG=" + self.conf.encode() in env and alive(pid)

    def own_pids(self):
        return [int(e) for e in os.listdir("/proc") if e.isdigit() and self.is_own(int(e))]

    def signal_own(self, sig):
        """sig to each of this instance's processes, through a pidfd opened before the check:
        a pid that is reused after its Postfix process exited is never signalled."""
        for pid in self.own_pids():
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # already gone
            try:
                if self.is_own(pid):
                    signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)

    def stop(self):
        """`postfix stop`, then the master and every child of this instance must be gone
        (SIGTERM, then SIGKILL, each by pidfd); fails when one outlives that."""
        if os.path.exists(f"{self.dir}/queue/pid/master.pid"):
            run_tty([POSTFIX, "-c", self.conf, "stop"])  # waits up to 5 s for the master
        left = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self.signal_own(sig)  # the children the master's exit left behind, if any
            try:
                wait_for(lambda: not self.own_pids(), "this Postfix's processes to exit",
                         timeout=5)
                left = []
                break
            except AssertionError:
                left = self.own_pids()
        assert not left, f"Postfix processes {left} outlived SIGKILL"

    def keep_log(self, where):
        """Copies the maillog and main.cf next to the test's other logs (pytest keeps those)."""
        for name, src in (("postfix-maillog", f"{self.dir}/maillog"),
                          ("postfix-main.cf", f"{self.conf}/main.cf")):
            if os.path.exists(src):
                shutil.copy(src, os.path.join(where, name))

    # --- what it saw ----------------------------------------------------------------------
    def log(self):
        try:
            with open(f"{self.dir}/maillog", "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def ringmail_log(self):
        """The maillog lines of smtpd sessions with ringmail (not the readiness probe's)."""
        return [ln for ln in self.log().splitlines() if RINGMAIL_PEER in ln]

    def mails(self):
        """The messages in the maildir (virtual(8) renames each into new/ once written)."""
        try:
            names = sorted(os.listdir(f"{self.maildir}/new"))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            with open(f"{self.maildir}/new/{n}", "rb") as f:
                out.append(f.read())
        return out

    def ehlo_keywords(self):
        """The EHLO keywords offered now (None when it does not answer), asked from PF_IP
        itself so the probe's sessions are told apart from ringmail's in the maillog."""
        try:
            with socket.create_connection((PF_IP, self.port), timeout=5,
                                          source_address=(PF_IP, 0)) as s:
                f = s.makefile("rb")
                if not f.readline().startswith(b"220"):
                    return None
                s.sendall(b"EHLO probe.test\r\n")
                words = []
                for _ in range(100):
                    line = f.readline()
                    if not line.startswith(b"250"):
                        return None
                    words.append(line[4:].decode("ascii", "replace").split(" ")[0].strip()
                                 .upper())
                    if line[3:4] == b" ":
                        break
                s.sendall(b"QUIT\r\n")
                return words[1:]
        except OSError:
            return None

    def wait(self, pred, what, timeout=30.0):
        return waited(pred, what, self.log, timeout=timeout)

    def wait_offers_starttls(self, offered):
        def as_configured():
            words = self.ehlo_keywords()
            return words is not None and ("STARTTLS" in words) == offered

        self.wait(as_configured, f"Postfix on {PF_IP}:{self.port} "
                  f"{'' if offered else 'not '}offering STARTTLS", timeout=15)

    def wait_mails(self, n):
        def enough():
            mails = self.mails()
            return mails if len(mails) >= n else None

        return self.wait(enough, f"{n} message(s) in Postfix's maildir")


@pytest.fixture(scope="module")
def pf_root():
    """A 0755 directory under /tmp for the module's Postfix instances, and their certificate."""
    root = tempfile.mkdtemp(prefix="ringmail-pf-")
    os.chmod(root, 0o755)
    try:
        yield root, *make_cert(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Net:
    """The test's dnsmasq, its Postfix (once asked for) and its ringmail daemons."""

    def __init__(self, tmp_path, pf_root, ringmail_factory):
        self.tmp = str(tmp_path)
        self.root, self.cert, self.key = pf_root
        self.factory = ringmail_factory
        self.port = free_port_on([PF_IP])
        self.dns = Dnsmasq(ZONE, self.tmp)
        self.peers = [self.dns]
        self.pf = None

    def postfix(self, tls):
        self.pf = Postfix(self.root, self.cert, self.key, self.port, tls)
        self.peers.append(self.pf)
        return self.pf.start()

    def daemon(self, *flags):
        return self.factory("--dns-server", f"127.0.0.1:{self.dns.port}", "--delivery-port",
                            str(self.port), "--retry-schedule", "1s:2s", "--timeout-connect-ms",
                            "3000", *flags, delivery=True)

    def stop(self):
        try:
            stop_all(self.peers)
        finally:
            if self.pf is not None:
                self.pf.keep_log(self.tmp)
                shutil.rmtree(self.pf.dir, ignore_errors=True)


@pytest.fixture
def net(tmp_path, pf_root, ringmail_factory):
    if os.geteuid() != 0:
        pytest.fail("a private Postfix instance is started as root (the suite runs as root)")
    n = Net(tmp_path, pf_root, ringmail_factory)
    try:
        n.dns.start()
        yield n
    finally:
        n.stop()


def message(tag):
    """A message of several TLS records (about 40 KiB), with a line that needs dot-stuffing."""
    filler = "".join(f"{tag} line {i:04d} " + "x" * 60 + "\r\n" for i in range(500))
    return (f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: postfix {tag}\r\n"
            f"Date: Tue, 01 Dec 2026 05:00:00 +0000\r\nMessage-ID: <{tag}@client.test>\r\n\r\n"
            f"Hello over {tag}.\r\n.a line that starts with a dot\r\n{filler}")


def send(d, helpers, tag):
    """(queue id, the bytes the client's message is) of one message to RCPT."""
    return helpers.send_smtplib(d, SENDER, [RCPT], message(tag))


def tls_field(line):
    """The tls= field of a raw delivery log line."""
    return line.rsplit(" tls=", 1)[1].strip() if " tls=" in line else None


def wait_line(d, msg_id, status, min_attempts=1, timeout=30.0):
    """(parsed, raw) of the first delivery line of msg_id with that status and attempts."""
    def found():
        for raw in d.log_text().splitlines():
            for x in delivery_lines(raw):
                if x["id"] == msg_id and x["status"] == status and x["attempts"] >= min_attempts:
                    return x, raw
        return None

    return waited(found, f"{msg_id} {status} (attempts >= {min_attempts})", d.log_text,
                  timeout=timeout)


def check_stored(pf, content, tls):
    """The one message in Postfix's maildir: its envelope, Postfix's Received header (returned)
    with TLS or without, then ringmail's, then byte for byte the client's message."""
    mails = pf.wait_mails(1)
    assert len(mails) == 1, f"{len(mails)} messages in the maildir"
    data = mails[0]
    expected = content.replace(b"\r\n", b"\n")  # a maildir file has LF line ends
    assert data.endswith(expected), f"the stored message is not the client's:\n{data[:3000]!r}"
    head = email.message_from_bytes(data[:-len(expected)], policy=email.policy.compat32)
    assert head.keys() == ["Return-Path", "X-Original-To", "Delivered-To", "Received",
                           "Received"], data[:3000]
    assert head["Return-Path"] == f"<{SENDER}>"
    assert head["Delivered-To"] == RCPT
    theirs, ours = head.get_all("Received")
    assert theirs.startswith("from ringmail.test (unknown [127.0.0.1])"), theirs
    assert f"by mx.{DOMAIN} (Postfix) with {'ESMTPS' if tls else 'ESMTP'} id " in theirs, theirs
    assert ("(using TLSv1." in theirs) == tls, theirs
    assert "by ringmail.test" in ours, ours
    return " ".join(theirs.split())


def check_same_tls(raw, received):
    """ringmail's tls=PROTOCOL/CIPHER is what Postfix's Received header says was negotiated."""
    proto, _, cipher = tls_field(raw).partition("/")
    assert proto.startswith("TLSv1.") and cipher, raw
    assert f"(using {proto} with cipher {cipher} " in received, (raw, received)


def test_may_delivers_inside_tls_to_postfix(net, helpers):
    pf = net.postfix(tls=True)
    d = net.daemon()  # --outbound-tls may is the default
    msg_id, content = send(d, helpers, "may-tls")
    _, raw = wait_line(d, msg_id, "delivered")
    received = check_stored(pf, content, tls=True)
    check_same_tls(raw, received)
    proto = tls_field(raw).partition("/")[0]
    # Postfix's side of the same session, in its own words.
    pf.wait(lambda: any(f"TLS connection established from {RINGMAIL_PEER}: {proto} with cipher"
                        in ln for ln in pf.ringmail_log()), "Postfix logging the TLS session")
    assert any(f"from=<{SENDER}>" in ln for ln in pf.log().splitlines()), pf.log()[-3000:]


def test_encrypt_delivers_inside_tls_to_postfix(net, helpers):
    pf = net.postfix(tls=True)
    d = net.daemon("--outbound-tls", "encrypt")
    msg_id, content = send(d, helpers, "encrypt-tls")
    x, raw = wait_line(d, msg_id, "delivered")
    assert x["attempts"] == 1, raw  # the first try: nothing deferred it
    check_same_tls(raw, check_stored(pf, content, tls=True))


def test_encrypt_defers_postfix_without_starttls_until_it_has_tls(net, helpers):
    pf = net.postfix(tls=False)
    d = net.daemon("--outbound-tls", "encrypt")
    msg_id, content = send(d, helpers, "encrypt-plain")
    # Deferred on the first try and on a retry: each time 4.7.5, for the missing STARTTLS.
    for attempts in (1, 2):
        x, raw = wait_line(d, msg_id, "deferred", min_attempts=attempts)
        assert x["reply"].startswith("4.7.5 "), raw
        assert "does not offer STARTTLS" in x["reply"], raw
    # Postfix saw those sessions (its per-session command counts are logged at disconnect)
    # and not one of them went past EHLO: no STARTTLS, no MAIL, no queue file, no message.
    def two_sessions():
        ends = [ln for ln in pf.ringmail_log() if f"disconnect from {RINGMAIL_PEER}" in ln]
        return ends if len(ends) >= 2 else None

    sessions = pf.wait(two_sessions, "two of ringmail's sessions in Postfix's maillog")
    for ln in sessions:
        assert " ehlo=1 " in ln, ln
        for cmd in ("starttls=", "mail=", "rcpt=", "data=", "bdat="):
            assert cmd not in ln, ln
    assert not any(" client=" in ln for ln in pf.ringmail_log()), pf.log()[-3000:]
    assert f"from=<{SENDER}>" not in pf.log(), pf.log()[-3000:]
    assert pf.mails() == []
    # The destination gets TLS: the next retry delivers, encrypted.
    pf.set_tls(True)
    x, raw = wait_line(d, msg_id, "delivered")
    assert x["attempts"] >= 3, raw
    check_same_tls(raw, check_stored(pf, content, tls=True))


def test_may_delivers_in_clear_to_postfix_without_starttls(net, helpers):
    pf = net.postfix(tls=False)
    d = net.daemon("--outbound-tls", "may")
    msg_id, content = send(d, helpers, "may-plain")
    x, raw = wait_line(d, msg_id, "delivered")
    assert tls_field(raw) == "none", raw
    assert x["attempts"] == 1, raw
    check_stored(pf, content, tls=False)
    assert "TLS connection established" not in pf.log(), pf.log()[-3000:]
