"""test_smtplib.py — Python's smtplib (a client nobody here wrote) against the real daemon.

Pins: every accepted message is stored exactly once under the queue id its 250 named, with its
envelope, and with the client's content byte for byte after the relay's Received header
(RFC 5321 §4.5.2 dot-unstuffing, CRLF line endings); PIPELINING replies come back in command
order (RFC 2920 §3.1), including a refused recipient in the middle of a group.
"""

import hashlib

import pytest


def lines_of(total_bytes, width=76):
    """ASCII text of about total_bytes in CRLF lines of `width` characters."""
    out = []
    n = 0
    i = 0
    while n < total_bytes:
        line = hashlib.sha256(str(i).encode()).hexdigest()
        line = (line * 3)[:width]
        out.append(line)
        n += len(line) + 2
        i += 1
    return ("\r\n".join(out) + "\r\n").encode()


def msg(subject, body):
    head = f"From: a@example.com\r\nTo: b@example.net\r\nSubject: {subject}\r\n\r\n".encode()
    return head + body


MESSAGES = {
    "tiny": msg("tiny", b""),
    "one_line_no_crlf": b"x",
    "1k": msg("1k", lines_of(1024)),
    "1m": msg("1m", lines_of(1 << 20)),
    "dots": msg("dots", b".leading dot\r\n..two dots\r\n.\r\n. space\r\nend.\r\n...\r\n"),
    "crlf_dot_inside": msg("crlfdot", b"a\r\n.\r\nb\r\n"),
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_stored_exactly(ringmail, helpers, name):
    sent = MESSAGES[name]
    qid, content = helpers.send_smtplib(ringmail, "a@example.com", ["b@example.net"], sent)
    by_id = ringmail.spool_by_id()
    assert list(by_id) == [qid], "exactly the one message, under the id of its 250"
    e = by_id[qid]
    assert e["mail_from"] == "a@example.com"
    assert [r["address"] for r in e["rcpts"]] == ["b@example.net"]
    assert e["client_addr"] == "127.0.0.1"
    assert e["helo"] == "client.test"
    assert e["protocol"].startswith("ESMTP")
    body = ringmail.body(qid)
    assert e["body_bytes"] == len(body)
    assert e["body_sha256"] == helpers.sha256(body)
    assert helpers.strip_received(body) == content


def test_several_messages_one_session(ringmail, helpers):
    sent = {}
    with ringmail.smtp() as s:
        assert s.ehlo()[0] == 250
        for i in range(10):
            m = msg(f"n{i}", lines_of(100 * i + 1))
            assert s.mail("a@example.com")[0] == 250
            assert s.rcpt(f"r{i}@example.net")[0] == 250
            code, resp = s.data(m)
            assert code == 250, resp
            qid = helpers.QUEUED_TEXT_RE.search(resp.decode()).group(1)
            assert qid not in sent, "queue ids are unique"
            sent[qid] = (i, helpers.smtplib_content(m))
        s.quit()
    by_id = ringmail.spool_by_id()
    assert set(by_id) == set(sent)
    for qid, (i, content) in sent.items():
        assert [r["address"] for r in by_id[qid]["rcpts"]] == [f"r{i}@example.net"]
        assert ringmail.client_part(qid) == content


def test_8bitmime_body(ringmail, helpers):
    body = "Grüße aus Köln — ½ € ✓\r\n".encode("utf-8")
    body += bytes(range(0x80, 0x100)) + b"\r\n"
    sent = msg("8bit", body)
    qid, content = helpers.send_smtplib(ringmail, "a@example.com", ["b@example.net"], sent,
                                        mail_options=["BODY=8BITMIME"])
    e = ringmail.spool_by_id()[qid]
    assert "BODY=8BITMIME" in e["mail_params"].upper()
    assert ringmail.client_part(qid) == content


def test_smtputf8_addresses(ringmail, helpers):
    sent = msg("utf8", "Grüße\r\n".encode("utf-8"))
    qid, content = helpers.send_smtplib(ringmail, "jörg@exämple.com",
                                        ["δοκιμή@παράδειγμα.δοκιμή"], sent,
                                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    e = ringmail.spool_by_id()[qid]
    assert e["mail_from"] == "jörg@exämple.com"
    assert [r["address"] for r in e["rcpts"]] == ["δοκιμή@παράδειγμα.δοκιμή"]
    assert "SMTPUTF8" in e["mail_params"].upper()
    assert ringmail.client_part(qid) == content


def test_null_sender_and_rcpt_params(ringmail, helpers):
    qid, content = helpers.send_smtplib(ringmail, "", ["b@example.net"], msg("bounce", b"x\r\n"),
                                        rcpt_options=["NOTIFY=NEVER"])
    e = ringmail.spool_by_id()[qid]
    assert e["mail_from"] == ""
    assert e["rcpts"] == [{"address": "b@example.net", "params": "NOTIFY=NEVER"}]
    assert ringmail.client_part(qid) == content


def test_empty_content(ringmail, helpers):
    """DATA followed at once by "." is an empty message: nothing but the Received header."""
    with ringmail.raw() as c:
        c.ehlo()
        c.send("MAIL FROM:<a@example.com>\r\n")
        c.expect(250)
        c.send("RCPT TO:<b@example.net>\r\n")
        c.expect(250)
        c.send("DATA\r\n")
        c.expect(354)
        c.send(".\r\n")
        r = c.expect(250, "2.0.0")
    qid = helpers.QUEUED_TEXT_RE.search(r.text).group(1)
    assert ringmail.client_part(qid) == b""


def test_ehlo_advertises_extensions(ringmail_factory):
    d = ringmail_factory("--max-message-size", "123456")
    with d.raw(greeting=False) as c:
        g = c.expect(220)
        assert g.lines[0].startswith("ringmail.test ESMTP ringmail"), g
        r = c.ehlo()
        keywords = {ln.split(" ")[0].upper() for ln in r.lines[1:]}
        for k in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
                  "SIZE"):
            assert k in keywords, (k, r)
        assert "SIZE 123456" in [ln.upper() for ln in r.lines], r


def test_pipelined_transaction(ringmail, helpers):
    """RFC 2920: MAIL, RCPT, RCPT, DATA in one write; replies in order; then the text."""
    content = b"Subject: pipelined\r\n\r\nhello\r\n.dot\r\n"
    with ringmail.raw() as c:
        c.ehlo()
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
               "RCPT TO:<c@example.net>\r\nDATA\r\n")
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        c.expect(250, "2.1.5")
        c.expect(354)
        c.send(helpers.dot_stuff(content))
        r = c.expect(250, "2.0.0")
        # A second pipelined group on the same connection, ending with QUIT.
        c.send("RSET\r\nNOOP\r\nQUIT\r\n")
        c.expect(250)
        c.expect(250)
        c.expect(221)
        assert c.is_closed()
    qid = helpers.QUEUED_TEXT_RE.search(r.text).group(1)
    e = ringmail.spool_by_id()[qid]
    assert [x["address"] for x in e["rcpts"]] == ["b@example.net", "c@example.net"]
    assert ringmail.client_part(qid) == content


def test_pipelined_with_refused_recipient(ringmail_factory, helpers):
    """From an untrusted address, a refused RCPT in the middle of a pipelined group gets its
    554 in its place; the message goes to the accepted recipients only."""
    d = ringmail_factory("--relay-networks", "127.0.0.1/32", "--relay-domains", "relay.test")
    content = b"Subject: mixed\r\n\r\nbody\r\n"
    with d.raw(source="127.0.0.2") as c:
        c.ehlo()
        c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<one@relay.test>\r\n"
               "RCPT TO:<victim@remote.example>\r\nRCPT TO:<two@relay.test>\r\nDATA\r\n")
        for code in (250, 250, 554, 250, 354):
            c.expect(code)
        c.send(helpers.dot_stuff(content))
        r = c.expect(250, "2.0.0")
    qid = helpers.QUEUED_TEXT_RE.search(r.text).group(1)
    e = d.spool_by_id()[qid]
    assert [x["address"] for x in e["rcpts"]] == ["one@relay.test", "two@relay.test"]
    assert e["client_addr"] == "127.0.0.2"
    assert d.client_part(qid) == content
