"""test_relay.py — the relay policy on the wire: no open relay (smtp.md "Relay policy").

Pins: an untrusted client (127.0.0.2, outside --relay-networks 127.0.0.1/32) may send to the
--relay-domains and to nothing else; every address trick open-relay scanners try is refused
(554 5.7.1, or 501/553 where the address is syntactically refused); a trusted client relays
anywhere.
"""

import pytest

FLAGS = ("--relay-networks", "127.0.0.1/32", "--relay-domains", "relay.test")

TRICKS = [
    "victim@remote.example",
    "victim%remote.example@relay.test",
    "remote.example!victim@relay.test",
    '"victim@remote.example"@relay.test',
    "@relay.test:victim@remote.example",
    "victim@[127.0.0.1]",
    "victim@relay.test.",
    "victim@sub.relay.test",       # not a subdomain entry (no leading dot)
    "victim@evilrelay.test",       # suffix not on a label boundary
    "victim@relay.test.remote.example",
    '"victim%remote.example"@relay.test',
]


@pytest.fixture
def relay(ringmail_factory):
    return ringmail_factory(*FLAGS)


def rcpt_reply(d, source, rcpt):
    with d.raw(source=source) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        return c.cmd(f"RCPT TO:<{rcpt}>")


@pytest.mark.parametrize("rcpt", TRICKS)
def test_untrusted_tricks_refused(relay, rcpt):
    r = rcpt_reply(relay, "127.0.0.2", rcpt)
    assert (r.code == 554 and r.enhanced == "5.7.1") or r.code in (501, 553), (rcpt, r)


@pytest.mark.parametrize("rcpt", ["user@relay.test", "USER@Relay.Test", "first.last@relay.test"])
def test_untrusted_to_relay_domain_accepted(relay, rcpt):
    r = rcpt_reply(relay, "127.0.0.2", rcpt)
    assert r.code == 250, (rcpt, r)


def test_untrusted_message_to_relay_domain_stored(relay, helpers):
    qid, content = helpers.send_smtplib(relay, "a@example.com", ["user@relay.test"],
                                        b"Subject: in\r\n\r\nfor us\r\n", source="127.0.0.2")
    e = relay.spool_by_id()[qid]
    assert e["client_addr"] == "127.0.0.2"
    assert [r["address"] for r in e["rcpts"]] == ["user@relay.test"]
    assert relay.client_part(qid) == content


def test_untrusted_refused_recipient_means_no_message(relay):
    with relay.raw(source="127.0.0.2") as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        assert c.cmd("RCPT TO:<victim@remote.example>").code == 554
        r = c.cmd("DATA")
        assert r.code in (503, 554), r  # no valid recipient: no data phase
    assert relay.spool_json() == []


@pytest.mark.parametrize("rcpt", ["victim@remote.example", "user@relay.test"])
def test_trusted_relays_anywhere(relay, helpers, rcpt):
    qid, _ = helpers.send_smtplib(relay, "a@example.com", [rcpt], b"Subject: out\r\n\r\nx\r\n",
                                  source="127.0.0.1")
    e = relay.spool_by_id()[qid]
    assert e["client_addr"] == "127.0.0.1"
    assert [r["address"] for r in e["rcpts"]] == [rcpt]
