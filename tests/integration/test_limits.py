"""test_limits.py — limits and protocol rules on the wire, through raw sockets.

Pins (RFC 5321 §4.5.3.1 and smtp.md): an overlong command line is refused whole; overlong
paths are refused; the recipient limit answers 452 4.5.3; SIZE is enforced at MAIL and after
the data (nothing stored); a bare LF in the text refuses the message (SMTP smuggling); text
before 354 is refused and the connection closed; BDAT chunks are stored verbatim; junk commands
end in 421; talking before a delayed greeting gets 554; the per-address connection limit
answers 421 4.7.0.
"""

import time


def begin(c, rcpt="b@example.net"):
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@example.com>").code == 250
    assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250


def test_command_line_too_long_is_refused_whole(ringmail):
    with ringmail.raw() as c:
        c.ehlo()
        long_line = "MAIL FROM:<" + "a" * 600 + "@example.com>"
        c.send(long_line + "\r\nNOOP\r\n")
        c.expect(500, "5.5.2")
        # Exactly one reply for the long line: its tail was not run as a second command.
        c.expect(250)
        # And no transaction was started by it.
        assert c.cmd("RCPT TO:<b@example.net>").code == 503
    assert ringmail.spool_json() == []


def test_path_too_long(ringmail):
    with ringmail.raw() as c:
        c.ehlo()
        domain = ".".join(["d" * 60] * 4) + ".example"  # 252 octets: a path over 256
        r = c.cmd(f"MAIL FROM:<user@{domain}>")
        assert r.code in (501, 553), r
        r = c.cmd("MAIL FROM:<" + "l" * 65 + "@example.com>")
        assert r.code in (501, 553), r  # local part over 64 octets
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        r = c.cmd(f"RCPT TO:<user@{domain}>")
        assert r.code in (501, 553), r


def test_too_many_recipients(ringmail_factory, helpers):
    d = ringmail_factory("--max-recipients", "100")
    with d.raw() as c:
        c.ehlo()
        c.send("MAIL FROM:<a@example.com>\r\n" +
               "".join(f"RCPT TO:<r{i}@example.net>\r\n" for i in range(101)))
        c.expect(250)
        for i in range(100):
            assert c.reply().code == 250, i
        c.expect(452, "4.5.3")
        c.send("DATA\r\n")
        c.expect(354)
        c.send(b"Subject: hundred\r\n\r\nx\r\n.\r\n")
        r = c.expect(250, "2.0.0")
    qid = helpers.QUEUED_TEXT_RE.search(r.text).group(1)
    e = d.spool_by_id()[qid]
    assert [x["address"] for x in e["rcpts"]] == [f"r{i}@example.net" for i in range(100)]


def test_size_over_limit_at_mail(ringmail_factory):
    d = ringmail_factory("--max-message-size", "10000")
    with d.raw() as c:
        r = c.ehlo()
        assert "SIZE 10000" in r.lines
        r = c.cmd("MAIL FROM:<a@example.com> SIZE=10001")
        assert r.code == 552 and r.enhanced == "5.3.4", r
        assert c.cmd("MAIL FROM:<a@example.com> SIZE=10000").code == 250


def test_body_over_limit_nothing_stored(ringmail_factory):
    d = ringmail_factory("--max-message-size", "10000")
    with d.raw() as c:
        begin(c)
        c.send("DATA\r\n")
        c.expect(354)
        c.send(b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 200 + b".\r\n")
        c.expect(552, "5.3.4")
        # The session survives and can send a message that fits.
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        assert c.cmd("RCPT TO:<b@example.net>").code == 250
        c.send("DATA\r\n")
        c.expect(354)
        c.send(b"Subject: small\r\n\r\nok\r\n.\r\n")
        c.expect(250, "2.0.0")
    stored = d.spool_json()
    assert len(stored) == 1, stored
    assert stored[0]["body_bytes"] < 10000 + 1000


def test_bare_lf_refused_nothing_stored(ringmail):
    with ringmail.raw() as c:
        begin(c)
        c.send("DATA\r\n")
        c.expect(354)
        # The smuggling pattern: a bare-LF "end of data" followed by a second message.
        c.send(b"Subject: x\r\n\r\nline1\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
        c.expect(550, "5.6.11")
        assert c.cmd("NOOP").code == 250
    assert ringmail.spool_json() == []


def test_bare_cr_refused_nothing_stored(ringmail):
    with ringmail.raw() as c:
        begin(c)
        c.send("DATA\r\n")
        c.expect(354)
        c.send(b"Subject: x\r\n\r\nline1\r.\rmore\r\n.\r\n")
        c.expect(550, "5.6.11")
    assert ringmail.spool_json() == []


def test_text_before_354_refused_and_closed(ringmail):
    with ringmail.raw() as c:
        c.ehlo()
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
               "Subject: early\r\n\r\ntext sent before the 354\r\n.\r\n")
        c.expect(250)
        c.expect(250)
        r = c.reply()
        if r.code == 354:  # the 354 may go out before the early text is noticed
            r = c.reply()
        assert r.code == 554 and r.enhanced == "5.5.0", r
        assert c.is_closed()
    assert ringmail.spool_json() == []


def test_bdat_chunks_stored_verbatim(ringmail, helpers):
    chunks = [b"Subject: bdat\r\n\r\n", b".not stuffed\r\n", b"..two\r\nlast\r\n"]
    with ringmail.raw() as c:
        begin(c)
        c.send(b"BDAT %d\r\n" % len(chunks[0]) + chunks[0])
        c.expect(250)
        c.send(b"BDAT %d\r\n" % len(chunks[1]) + chunks[1])
        c.expect(250)
        # Pipelined: the last chunk and a NOOP in one write (RFC 3030 allows BDAT pipelining).
        c.send(b"BDAT %d LAST\r\n" % len(chunks[2]) + chunks[2] + b"NOOP\r\n")
        r = c.expect(250, "2.0.0")
        c.expect(250)
    qid = helpers.QUEUED_TEXT_RE.search(r.text).group(1)
    assert ringmail.client_part(qid) == b"".join(chunks)


def test_bdat_zero_last(ringmail, helpers):
    with ringmail.raw() as c:
        begin(c)
        c.send(b"BDAT 12\r\nSubject: x\r\nBDAT 0 LAST\r\n")
        c.expect(250)
        r = c.expect(250, "2.0.0")
    qid = helpers.QUEUED_TEXT_RE.search(r.text).group(1)
    assert ringmail.client_part(qid) == b"Subject: x\r\n"


def test_junk_limit(ringmail_factory):
    d = ringmail_factory("--max-junk-commands", "5")
    with d.raw() as c:
        c.ehlo()
        codes = []
        for _ in range(30):
            r = c.cmd("XYZZY")
            codes.append(r.code)
            if r.code == 421:
                break
        assert codes[-1] == 421, codes
        assert all(500 <= x < 600 for x in codes[:-1]), codes
        assert 5 <= len(codes) <= 7, codes
        assert c.is_closed()


def test_pregreet_refused(ringmail_factory):
    d = ringmail_factory("--relay-networks", "127.0.0.1/32", greet_delay_ms=500)
    # Several in a row, from several addresses: connection slots are reused, and a reused
    # slot must not carry the previous session's state (a bug once dropped the early bytes).
    for i in range(6):
        with d.raw(source=f"127.0.0.{2 + i}", greeting=False) as c:
            c.send("EHLO early.test\r\n")
            r = c.reply()
            assert r.code == 554 and r.enhanced == "5.5.1", (i, r)
            assert c.is_closed()


def test_pregreet_patient_client_is_served(ringmail_factory):
    d = ringmail_factory("--relay-networks", "127.0.0.1/32", greet_delay_ms=500)
    t0 = time.monotonic()
    with d.raw(source="127.0.0.2", greeting=False) as c:
        c.expect(220)
        waited = time.monotonic() - t0
        assert waited >= 0.4, f"greeting came after {waited:.3f}s, the delay is 500 ms"
        c.ehlo()
    # A trusted client is greeted at once, so talking straight away is no violation.
    with d.raw(source="127.0.0.1", greeting=False) as c:
        c.send("EHLO trusted.test\r\n")
        c.expect(220)
        c.expect(250)


def test_max_connections_per_ip(ringmail_factory):
    d = ringmail_factory("--max-connections-per-ip", "3")
    held = [d.raw() for _ in range(3)]
    try:
        with d.raw(greeting=False) as c:
            c.expect(421, "4.7.0")
            assert c.is_closed()
        # Another address is counted apart.
        with d.raw(source="127.0.0.3") as c:
            assert c.cmd("NOOP").code == 250
        # A slot freed is a slot again (the daemon notices the close asynchronously).
        held.pop().close()
        deadline = time.monotonic() + 5
        got = None
        for _ in range(200):
            with d.raw(greeting=False) as c:
                got = c.reply()
            if got.code == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # poll interval, bounded by the deadline
        assert got.code == 220, got
    finally:
        for c in held:
            c.close()
