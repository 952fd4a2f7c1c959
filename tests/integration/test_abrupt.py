"""test_abrupt.py — clients that vanish or stream garbage cannot stop the relay.

Each test drives the real daemon over real sockets at a point where the connection driver has
work in flight, then proves the daemon still serves a normal session and the spool is sound:
  - a client that closes (FIN or RST) right after the final "." while its message is being
    committed (the slot's next client used to abort the daemon);
  - a command line that never ends (500 and close after a bound, not a wait for the timeout);
  - BDAT sizes past 64 bits or past the size limit (an answer and a close, not a wait for
    exabytes).
"""

import socket
import struct

RST = struct.pack("ii", 1, 0)
MESSAGE = b"Subject: abrupt\r\n\r\nhello\r\n.\r\n"


def send_and_vanish(port, rst):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO abrupt.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@dest.test>\r\n"
                  b"DATA\r\n")
        for code in (b"250", b"250", b"250", b"354"):
            line = f.readline()
            for _ in range(20):  # EHLO's continuation lines
                if line[3:4] != b"-":
                    break
                line = f.readline()
            assert line.startswith(code), line
        s.sendall(b"Subject: abrupt\r\n\r\nhello\r\n.\r\n")
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    finally:
        s.close()


def test_clients_closing_right_after_end_of_data_leave_the_relay_serving(ringmail_factory,
                                                                          helpers):
    d = ringmail_factory("--threads", "1")
    for i in range(60):
        send_and_vanish(d.port, rst=i % 2 == 1)
        assert d.running(), f"daemon died after {i + 1} clients hung up after end of data"
    qid, content = helpers.send_smtplib(d, "a@client.test", ["b@dest.test"],
                                        b"Subject: after\r\n\r\nstill here\r\n")
    assert d.client_part(qid) == content
    d.stop()
    assert d.verify() == 0
    # Every vanished client's message was whole when it was committed: each stored body is
    # exactly what was sent (they may or may not have been committed before the hang-up).
    for e in d.spool_json():
        if e["id"] != qid:
            assert d.client_part(e["id"]) == b"Subject: abrupt\r\n\r\nhello\r\n"


def test_unterminated_command_line_gets_500_and_close(ringmail):
    with ringmail.raw() as c:
        c.ehlo()
        c.send(b"X" * (1 << 20))
        r = c.reply()
        assert (r.code, r.enhanced) == (500, "5.5.2"), r
        assert c.is_closed(timeout=10)
    with ringmail.raw() as c:  # a line just over 512 octets is refused, the session goes on
        c.ehlo()
        r = c.cmd("NOOP " + "x" * 600)
        assert (r.code, r.enhanced) == (500, "5.5.2"), r
        assert c.cmd("NOOP").code == 250


def bdat_ready(d):
    c = d.raw()
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@client.test>").code == 250
    assert c.cmd("RCPT TO:<b@dest.test>").code == 250
    return c


def test_bdat_size_past_64_bits_is_a_syntax_error(ringmail):
    for size in ("18446744073709551616", "1" + "0" * 30):
        with bdat_ready(ringmail) as c:
            r = c.cmd(f"BDAT {size} LAST")
            assert (r.code, r.enhanced) == (501, "5.5.4"), r
            assert c.is_closed(timeout=10)


def test_bdat_chunk_over_the_size_limit_is_refused_at_once(ringmail_factory):
    d = ringmail_factory("--max-message-size", "100000")
    for size in ("100001", "18446744073709551615"):
        with bdat_ready(d) as c:
            r = c.cmd(f"BDAT {size}")
            assert (r.code, r.enhanced) == (552, "5.3.4"), r
            assert c.is_closed(timeout=10)
    with bdat_ready(d) as c:
        c.send(b"BDAT 100000 LAST\r\n" + b"x" * 99998 + b"\r\n")
        assert c.reply().code == 250
