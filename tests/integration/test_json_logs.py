"""test_json_logs.py — --log-format json: every line of the daemon's log is one JSON object.

The relay relays through --smarthost to an aiosmtpd server that accepts one recipient and
refuses another with 550 5.1.1, so one run produces each event: `accepted` (a message made
durable), `delivery` with status delivered and bounced (with the relay's host and IP, the
recipient, the DSN code, the reply), `dsn` (the bounce's DSN to the sender) and plain `log`
lines. Every line is parsed with Python's json module, and every event's keys are checked.
"""

import json
import re

from aiosmtpd.controller import Controller

from conftest import send_smtplib
from delivery_peers import free_port_on, wait_for

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
COMMON = {"time", "level", "event"}
KEYS = {
    "accepted": {"queue_id", "sender", "recipients", "size", "client_ip", "tls_version",
                 "tls_cipher"},
    "delivery": {"queue_id", "rcpt", "recipient", "domain", "relay_host", "relay_ip", "status",
                 "dsn", "reply", "attempts", "delay", "tls"},
    "dsn": {"queue_id", "dsn_id", "recipient", "recipients"},
    "log": {"message"},
}


class Picky:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 taken"


def events(d):
    out = []
    for line in d.log_text().splitlines():
        obj = json.loads(line)  # every line, or the test fails here
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def test_every_line_is_json_with_the_documented_keys(ringmail_factory):
    port = free_port_on(["127.0.0.2"])
    ctl = Controller(Picky(), hostname="127.0.0.2", port=port)
    ctl.start()
    try:
        d = ringmail_factory("--smarthost", f"[127.0.0.2]:{port}", "--log-format", "json",
                             delivery=True)
        mid, _ = send_smtplib(d, "sender@example.com",
                              ["someone@example.net", "nobody@example.net"],
                              "Subject: json\r\n\r\nhello\r\n")

        def done():
            evs = events(d)
            kinds = {(e["event"], e.get("status")) for e in evs}
            return ({("accepted", None), ("delivery", "delivered"), ("delivery", "bounced"),
                     ("dsn", None)} <= kinds) and evs

        evs = wait_for(done, "accepted, delivered, bounced and dsn events")
        d.stop()
        evs = events(d)  # the whole log, the stop included
    finally:
        ctl.stop()

    for e in evs:
        assert TIME_RE.match(e["time"]), e
        assert e["level"] in {"error", "warn", "info", "debug"}, e
        want = COMMON | KEYS[e["event"]]
        assert want <= set(e) <= want | {"core"}, (e["event"], sorted(e))
        if "core" in e:
            assert isinstance(e["core"], int)

    accepted = [e for e in evs if e["event"] == "accepted"]
    assert [a["queue_id"] for a in accepted][0] == mid
    a = accepted[0]
    assert a["sender"] == "sender@example.com" and a["recipients"] == 2
    assert a["client_ip"] == "127.0.0.1" and a["size"] > len("hello")

    by_status = {e["status"]: e for e in evs if e["event"] == "delivery" and e["queue_id"] == mid}
    ok, bad = by_status["delivered"], by_status["bounced"]
    assert ok["recipient"] == "someone@example.net" and ok["domain"] == "example.net"
    assert ok["relay_ip"] == "127.0.0.2" and ok["dsn"] == "2.0.0" and ok["attempts"] == 1
    assert isinstance(ok["delay"], float) and ok["delay"] >= 0
    assert bad["recipient"] == "nobody@example.net" and bad["dsn"] == "5.1.1"
    assert "no such user here" in bad["reply"]

    dsn = next(e for e in evs if e["event"] == "dsn")
    assert dsn["queue_id"] == mid and dsn["recipient"] == "sender@example.com"
    assert dsn["recipients"] == 1
    assert any(e["event"] == "log" and "ready" in e["message"] for e in evs)
