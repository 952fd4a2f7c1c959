"""test_service.py — ringmail as a service: the notify protocol, --check-config, the unit and
the .deb.

These machines do not boot systemd, so the test plays the service manager: it listens on the
Unix datagram socket it names in NOTIFY_SOCKET (a path, and the abstract "@name" form) and
checks what the daemon tells it: READY=1 only once the relay answers SMTP, WATCHDOG=1 at the
period asked by WATCHDOG_USEC, STOPPING=1 at SIGTERM. The unit is checked by
`systemd-analyze verify`, the package built by CPack is read back with dpkg-deb, checked with
lintian, and its dependencies resolved by apt without installing it.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import RINGMAIL_BIN, free_port
from delivery_peers import wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.dirname(os.path.abspath(RINGMAIL_BIN))
UNIT = os.path.join(REPO, "tools", "packaging", "ringmail.service")
CONF = os.path.join(REPO, "tools", "packaging", "ringmail.conf")


class Manager:
    """The service manager's end of NOTIFY_SOCKET: every datagram, in order."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages = []

    def next(self, timeout):
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        fields = dict(ln.split("=", 1) for ln in data.splitlines() if "=" in ln)
        self.messages.append(fields)
        return fields

    def until(self, key, timeout=20.0):
        """The first message (after those read) that carries `key`."""
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self.next(left)
            except socket.timeout:
                break
            if key in m:
                return m
        raise AssertionError(f"no {key} from the daemon within {timeout}s: {self.messages}")

    def close(self):
        self.sock.close()


def smtp_greeting(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.recv(512)


def start(tmp_path, env_extra, *args):
    port = free_port()
    env = dict(os.environ, **env_extra)
    log = open(tmp_path / "ringmail.log", "wb")
    proc = subprocess.Popen([RINGMAIL_BIN, "--listen", f"127.0.0.1:{port}", "--spool-dir",
                             str(tmp_path / "spool"), "--no-delivery", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, port


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_ready_watchdog_stopping(tmp_path, abstract):
    if abstract:
        name = f"@ringmail-test-{os.getpid()}-{time.monotonic_ns()}"
        manager = Manager("\0" + name[1:])
    else:
        name = str(tmp_path / "notify.sock")
        manager = Manager(name)
    proc, port = start(tmp_path, {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"})
    try:
        ready = manager.until("READY")
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(proc.pid)
        assert f"127.0.0.1:{port}" in ready["STATUS"]
        # READY comes after recovery and the listeners: the relay answers at once.
        assert smtp_greeting(port).startswith(b"220 ")
        # WATCHDOG=1 at half the period asked for: three in a row within a few periods.
        t0 = time.monotonic()
        for _ in range(3):
            assert manager.until("WATCHDOG", timeout=5.0)["WATCHDOG"] == "1"
        assert time.monotonic() - t0 < 5.0
        proc.send_signal(signal.SIGTERM)
        assert manager.until("STOPPING")["STOPPING"] == "1"
        assert proc.wait(timeout=30) == 0
        # The first thing said was the recovery under way, before READY.
        assert manager.messages[0].get("STATUS", "").startswith("recovering")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.close()


def test_watchdog_meant_for_another_process_is_not_fed(tmp_path):
    name = str(tmp_path / "notify.sock")
    manager = Manager(name)
    # WATCHDOG_PID names the process the manager watches: not this one.
    proc, port = start(tmp_path, {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000",
                                  "WATCHDOG_PID": "1"})
    try:
        manager.until("READY")
        proc.send_signal(signal.SIGTERM)
        manager.until("STOPPING")
        assert proc.wait(timeout=30) == 0
        # Between READY and STOPPING the daemon ran for at least one watchdog period.
        assert not any("WATCHDOG" in m for m in manager.messages), manager.messages
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        manager.close()


def test_without_notify_socket_nothing_changes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    port = free_port()
    proc = subprocess.Popen([RINGMAIL_BIN, "--listen", f"127.0.0.1:{port}", "--spool-dir",
                             str(tmp_path / "spool"), "--no-delivery"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _greets(port), "the relay to greet")
    finally:
        stop(proc)


def _greets(port):
    try:
        return smtp_greeting(port).startswith(b"220 ")
    except OSError:
        return False


# --- --check-config -----------------------------------------------------------------------

def check_config(*args):
    return subprocess.run([RINGMAIL_BIN, "--check-config", *args], capture_output=True,
                          text=True, timeout=30)


def test_check_config_accepts_good_flags_and_creates_nothing(tmp_path):
    spool = tmp_path / "new" / "spool"
    r = check_config("--spool-dir", str(spool), "--listen", "127.0.0.1:2525")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ringmail: configuration ok"
    assert not (tmp_path / "new").exists(), "--check-config created the spool directory"


def test_check_config_reads_the_packaged_flags_file(tmp_path):
    r = check_config("--config", CONF, "--spool-dir", str(tmp_path / "spool"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args,expect", [
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
     "cannot load the certificate /nonexistent/cert.pem: No such file or directory"),
    (["--tls-cert", UNIT, "--tls-key", UNIT], "not PEM that wolfSSL can read"),
    (["--auth-users", "/nonexistent/users"], "--auth-users"),
    (["--spool-dir", "/dev/null/spool"], "--spool-dir /dev/null/spool: Not a directory"),
    (["--threads", "-1"], "--threads"),
], ids=["missing-cert", "not-pem", "missing-users", "spool-under-a-file", "bad-flag"])
def test_check_config_refuses_with_one_clear_line(args, expect):
    r = check_config(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expect in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "configuration ok" not in r.stdout


def test_check_config_refuses_a_spool_it_may_not_write(tmp_path):
    if os.geteuid() == 0:
        # root may write anywhere: check as nobody, on a directory only root may write.
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o755)
        os.chmod(tmp_path, 0o755)
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            RINGMAIL_BIN, "--check-config", "--spool-dir", str(locked / "spool")],
                           capture_output=True, text=True, timeout=30)
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        r = check_config("--spool-dir", str(locked / "spool"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Permission denied" in r.stderr, r.stderr


# --- the unit and the package -----------------------------------------------------------------

def test_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is installed by tools/install-deps.sh test"
    # verify checks that ExecStart='s program exists: point it at this build's binary (the only
    # change to the unit verified).
    unit_copy = tmp_path / "ringmail.service"
    unit_copy.write_text(open(UNIT).read().replace("/usr/sbin/ringmail",
                                                   os.path.abspath(RINGMAIL_BIN)))
    r = subprocess.run([analyze, "verify", str(unit_copy)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # Unknown keys and bad values are only warnings to verify: none may be printed.
    assert r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
    unit = open(UNIT).read()
    for line in ["Type=notify", "WatchdogSec=", "User=ringmail",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE", "ProtectSystem=strict",
                 "ReadWritePaths=/var/spool/ringmail", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectHome=yes", "RestrictAddressFamilies=", "SystemCallFilter=@system-service"]:
        assert line in unit, line


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """The .deb CPack makes from this build (built once for the module)."""
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"),
                        "-B", str(out)], capture_output=True, text=True, timeout=600, cwd=BUILD)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    debs = glob.glob(str(out / "ringmail_*.deb"))
    assert len(debs) == 1, os.listdir(out)
    return debs[0]


def test_deb_contents_and_dependencies(deb):
    files = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                           check=True).stdout
    for path in ["./usr/sbin/ringmail", "./usr/bin/ringmail-spool",
                 "./lib/systemd/system/ringmail.service", "./etc/ringmail/ringmail.conf",
                 "./usr/share/doc/ringmail/ringmail-flags.txt"]:
        assert f" {path}\n" in files + "\n" or f" {path} " in files, (path, files)
    depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True,
                             check=True).stdout
    for lib in ["liburing", "libwolfssl", "adduser"]:
        assert lib in depends, depends
    # The maintainer scripts: user and spool on configure, the flags file kept as a conffile.
    ctl = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True)
    listing = subprocess.run(["tar", "-t"], input=ctl.stdout, capture_output=True,
                             check=True).stdout.decode()
    for name in ["postinst", "prerm", "postrm", "conffiles"]:
        assert f"./{name}" in listing, listing
    info = subprocess.run(["dpkg-deb", "-I", deb, "postinst"], capture_output=True, text=True,
                          check=True).stdout
    assert "adduser --system" in info and "/var/spool/ringmail" in info
    conffiles = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True,
                               text=True, check=True).stdout
    assert "/etc/ringmail/ringmail.conf" in conffiles
    for script in ["postinst", "prerm", "postrm"]:
        body = subprocess.run(["dpkg-deb", "-I", deb, script], capture_output=True,
                              check=True).stdout
        assert subprocess.run(["sh", "-n"], input=body).returncode == 0, script


def test_deb_installs_per_apt(deb):
    # Resolve its dependencies against the machine's package lists without installing.
    r = subprocess.run(["apt-get", "install", "--simulate", "-q", deb], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Inst ringmail" in r.stdout, r.stdout[-3000:]


def test_deb_passes_lintian_without_errors(deb):
    lintian = shutil.which("lintian")
    assert lintian, "lintian is installed by tools/install-deps.sh test"
    r = subprocess.run([lintian, "--no-tag-display-limit", deb], capture_output=True, text=True,
                       timeout=600)
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("E:")]
    assert not errors, "\n".join(errors)
