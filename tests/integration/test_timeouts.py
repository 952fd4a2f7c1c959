"""test_timeouts.py — connection-level limits and timers of the daemon: the total connection
limit, the idle (command) and data timeouts, an IPv6 listener, and a corrupt spool record found
at restart (quarantined; its neighbours kept)."""

import os
import time


def test_max_connections_total(ringmail_factory):
    d = ringmail_factory("--threads", "1", "--max-connections", "2",
                         "--max-connections-per-ip", "100")
    held = [d.raw(), d.raw()]
    try:
        with d.raw(greeting=False) as c:
            r = c.reply()
            assert r.code == 421 and r.enhanced == "4.7.0", r
            assert c.is_closed()
        for h in held:  # the two admitted sessions are unaffected
            assert h.cmd("NOOP").code == 250
    finally:
        for h in held:
            h.close()


def test_idle_timeout_gives_421_and_closes(ringmail_factory):
    d = ringmail_factory("--timeout-command-ms", "300")
    with d.raw() as c:
        c.ehlo()
        t0 = time.monotonic()
        r = c.reply()  # unsolicited, after the timeout
        waited = time.monotonic() - t0
        assert r.code == 421 and r.enhanced == "4.4.2", r
        assert 0.2 <= waited < 5, waited
        assert c.is_closed()


def test_data_timeout_aborts_the_message(ringmail_factory):
    d = ringmail_factory("--timeout-data-ms", "300")
    with d.raw() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        assert c.cmd("RCPT TO:<b@example.net>").code == 250
        assert c.cmd("DATA").code == 354
        c.send("Subject: half a message\r\n\r\nand then nothing")
        r = c.reply()
        assert r.code == 421 and r.enhanced == "4.4.2", r
        assert c.is_closed()
    assert d.spool_json() == [], "a message cut off by a timeout is never stored"


def test_ipv6_listener(ringmail_factory, helpers):
    port = None
    import socket
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    d = ringmail_factory("--listen", f"[::1]:{port}")
    with socket.create_connection(("::1", port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 ")
        s.sendall(b"EHLO v6.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
                  b"DATA\r\n")
        lines = [f.readline() for _ in range(10)]
        assert lines[-1].startswith(b"354"), lines  # ::1 is in the default relay networks
        s.sendall(b"Subject: over IPv6\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        assert f.readline().startswith(b"250 2.0.0 Ok: queued as ")
    (msg,) = d.spool_json()
    assert msg["client_addr"] == "::1"


def test_corrupt_record_is_quarantined_at_restart(ringmail_factory, helpers):
    d = ringmail_factory("--threads", "1")
    ids = []
    for i in range(3):
        qid, _ = helpers.send_smtplib(d, "a@example.com", ["b@example.net"],
                                      f"Subject: m{i}\r\n\r\n" + f"body {i}\r\n" * 50)
        ids.append(qid)
    entries = {e["id"]: e for e in d.spool_json()}
    d.stop()
    # Flip one byte in the middle of the second message's record.
    victim = entries[ids[1]]
    seg = os.path.join(d.spool_dir, "core-0", f"{victim['segment']:016x}.seg")
    with open(seg, "r+b") as f:
        pos = victim["offset"] + 200
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))
    d.start()
    log = d.log_text()
    assert "1 corrupt records quarantined" in log, log[-2000:]
    survivors = {e["id"] for e in d.spool_json()}
    assert survivors == {ids[0], ids[2]}, "the neighbours of a corrupt record are kept"
    assert os.listdir(os.path.join(d.spool_dir, "quarantine")), "the bad bytes are kept aside"
