"""test_startup.py — what an operator sees when starting ringmail: --help, --config, refusing
to share a port or a spool with another process, a full spool disk (452 4.3.1, never a 250,
and accepting again once space is back) and a spool disk smaller than a segment."""

import os
import smtplib
import socket
import subprocess
import time

import pytest


def run(args, timeout=20):
    return subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_help_lists_every_flag_with_its_default(helpers):
    r = run([helpers.RINGMAIL_BIN, "--help"])
    assert r.returncode == 0
    out = r.stdout.decode()
    for flag, default in [("--listen", "127.0.0.1:2525"), ("--spool-dir", "./var/spool"),
                          ("--max-recipients", "1000"), ("--max-message-size", "26214400"),
                          ("--max-connections-per-ip", "200"), ("--greet-delay-ms", "1000"),
                          ("--timeout-command-ms", "300000"), ("--config", "")]:
        assert flag in out, flag
        if default:  # the default is shown beside the flag
            assert default in out[out.index(flag):out.index(flag) + 300], flag


def test_bad_flag_is_a_usage_error(helpers):
    r = run([helpers.RINGMAIL_BIN, "--max-recipients", "5"])  # RFC 5321 demands >= 100
    assert r.returncode != 0
    assert b"max-recipients" in r.stderr + r.stdout


def test_config_file_takes_the_flag_keys(ringmail_factory, tmp_path, helpers):
    conf = tmp_path / "ringmail.conf"
    conf.write_text("max-recipients = 100\n")
    d = ringmail_factory("--config", str(conf))
    with d.raw() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        for i in range(100):
            assert c.cmd(f"RCPT TO:<r{i}@example.net>").code == 250
        r = c.cmd("RCPT TO:<r100@example.net>")
        assert r.code == 452 and r.enhanced == "4.5.3", r


def test_second_daemon_on_the_same_port_refuses_to_start(ringmail, tmp_path, helpers):
    r = run([helpers.RINGMAIL_BIN, "--listen", f"127.0.0.1:{ringmail.port}", "--spool-dir",
             str(tmp_path / "other-spool")])
    assert r.returncode == 1
    assert b"Address already in use" in r.stderr
    # The first one still serves every connection.
    for _ in range(4):
        with ringmail.raw() as c:
            assert c.cmd("NOOP").code == 250


def test_second_daemon_on_the_same_spool_refuses_to_start(ringmail, helpers):
    with socket.socket() as s:  # any free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run([helpers.RINGMAIL_BIN, "--listen", f"127.0.0.1:{port}", "--spool-dir",
             ringmail.spool_dir])
    assert r.returncode == 1
    assert b"in use by another ringmail" in r.stderr


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) → a fresh tmpfs of that size (root only: the test suite runs as root),
    unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.fail("the small-disk tests mount a tmpfs and need root")
    mounts = []

    def mount(size):
        mnt = tmp_path / f"small{len(mounts)}"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       check=True)
        mounts.append(mnt)
        return mnt

    yield mount
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_fs(tmpfs):
    """A 6 MiB tmpfs."""
    return tmpfs("6m")


def send(d, body):
    """One message; returns (code, reply text)."""
    with d.smtp() as s:
        s.ehlo()
        s.mail("a@example.com")
        s.rcpt("b@example.net")
        try:
            code, resp = s.data(body)
        except smtplib.SMTPDataError as e:
            code, resp = e.smtp_code, e.smtp_error
        try:
            s.quit()
        except smtplib.SMTPException:
            pass
        return code, resp.decode("utf-8", "replace")


def test_full_disk_answers_452_and_recovers(ringmail_factory, small_fs, helpers):
    spool = small_fs / "spool"
    d = ringmail_factory("--threads", "1", "--segment-size", "1048576", "--max-message-size",
                         "262144", "--max-recipients", "100", spool_dir=str(spool))
    body = "Subject: fill\r\n\r\n" + ("x" * 998 + "\r\n") * 200  # 200 KB
    code, _ = send(d, body)
    assert code == 250
    # Take every free byte of the file system.
    with open(small_fs / "filler", "wb") as f:
        try:
            while True:
                f.write(b"f" * 65536)
                f.flush()
        except OSError:
            pass
    acked, refused = [], []
    for _ in range(30):  # the preallocated segments hold ~10 of these, then the disk is full
        code, text = send(d, body)
        if code == 250:
            acked.append(helpers.QUEUED_TEXT_RE.search(text).group(1))
        else:
            assert code == 452 and text.startswith("4.3.1"), (code, text)
            refused.append(text)
            if len(refused) >= 3:
                break
    assert refused, "a full spool disk must answer 452 4.3.1"
    stored = {e["id"] for e in d.spool_json()}
    assert set(acked) <= stored, "every 250 is in the spool"
    assert len(stored) == len(acked) + 1, "and nothing refused was stored"

    os.unlink(small_fs / "filler")
    deadline = time.monotonic() + 15
    while True:  # the relay retries making a segment after a short back-off
        code, text = send(d, body)
        if code == 250:
            break
        assert code == 452, (code, text)
        assert time.monotonic() < deadline, "still refusing mail after space came back"
    assert d.verify() == 0


def test_disk_smaller_than_a_segment_takes_mail(ringmail_factory, tmpfs, helpers):
    """64 MiB segments (the default) on a 16 MiB disk: the segments shrink to what fits, every
    message gets 250 and is there after a restart."""
    spool = tmpfs("16m") / "spool"
    d = ringmail_factory("--threads", "2", spool_dir=str(spool))
    body = "Subject: small disk\r\n\r\n" + ("s" * 998 + "\r\n") * 50  # 50 KB
    acked = []
    for i in range(60):  # 3 MB over both cores' segments
        code, text = send(d, body)
        assert code == 250, (i, code, text)
        acked.append(helpers.QUEUED_TEXT_RE.search(text).group(1))
    log = d.log_text()
    assert "spool disk nearly full: segment" in log and "instead of 67108864" in log, log[-2000:]
    d.stop()
    # Started again on the same spool (on a fresh port: the old one may be taken meanwhile).
    d = ringmail_factory("--threads", "2", spool_dir=str(spool))
    stored = {e["id"] for e in d.spool_json()}
    assert set(acked) <= stored, "every 250 survives the restart"
    code, text = send(d, body)
    assert code == 250, (code, text)
    assert d.verify() == 0


def test_disk_smaller_than_the_segment_floor_answers_452(ringmail_factory, tmpfs):
    """Not even a 1 MiB segment fits: 452 4.3.1, and the relay keeps running."""
    spool = tmpfs("512k") / "spool"
    d = ringmail_factory("--threads", "1", spool_dir=str(spool))
    for _ in range(2):
        code, text = send(d, "Subject: no room\r\n\r\nhello\r\n")
        assert code == 452 and text.startswith("4.3.1"), (code, text)
    assert d.running()
