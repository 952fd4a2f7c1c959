"""test_delivery.py — outbound delivery (issue 3) end to end: the real daemon delivering to real
peers on loopback, with its MX records served by a real dnsmasq.

Pins: MX preference and fallback to the next MX, implicit MX, null MX (5.1.10) and NXDOMAIN
(5.1.2) bounces, SERVFAIL and a down destination deferred then delivered after retry, 4xx from
Postfix's smtp-sink deferred, per-recipient 5xx giving exactly one RFC 3464 DSN to the sender's
own MX, no DSN for a bounce of a bounce, queue lifetime expiry (4.4.7), domains sharing an MX
sharing its connections within --max-connections-per-destination, a restart in the middle of a
retry schedule losing and repeating nothing, the Received-header loop limit (5.4.6), and a
multi-recipient transaction sent pipelined; a DSN durable before the bounces it reports (in
spool log order, across segment boundaries) and waiting, never dropped, while its original cannot
be read; every delivery line naming its recipient; recipients past a server's RCPT limit sent in
the next transaction at once; the active-queue limit. Every delivered body is checked byte for
byte: the relay's Received header followed by exactly what the client sent.

Isolation: ringmail listens on 127.0.0.1 only and asks only the dnsmasq of the test
(--dns-server), never the machine's resolvers; every MX host is a peer of the test on
127.0.0.2..127.0.0.30 at one delivery port chosen per test.
"""

import email
import email.policy
import os
import re

import pytest

import aiosmtpd  # noqa: F401,E402  the MX peers; installed by tools/install-deps.sh test

from delivery_peers import (DNSMASQ, SMTP_SINK, CaptureServer, Dnsmasq,  # noqa: E402
                            ServfailResponder, SmtpSink, Tarpit, delivery_lines, free_port_on,
                            stop_all, wait_for)

# The peers are installed by the test command: missing ones fail the run, never skip it.
assert DNSMASQ and SMTP_SINK, "dnsmasq and Postfix's smtp-sink are needed (tools/install-deps.sh test)"

# The addresses of the MX hosts (ringmail itself is on 127.0.0.1: an MX there is a loop).
IP = {
    "sender": "127.0.0.20",  # s.test: where DSNs go
    "pref_low": "127.0.0.2",
    "pref_high": "127.0.0.3",
    "fallback_down": "127.0.0.4",
    "fallback_up": "127.0.0.5",
    "implicit": "127.0.0.6",
    "down": "127.0.0.7",
    "reject": "127.0.0.8",
    "shared": "127.0.0.9",
    "up": "127.0.0.10",
    "multi": "127.0.0.11",
    "loop": "127.0.0.12",
    "sink": "127.0.0.13",
    "servfail": "127.0.0.14",
    "tarpit": "127.0.0.15",
    "tarpit_next": "127.0.0.16",
    "limited": "127.0.0.17",
}
SHARED_DOMAINS = [f"d{i}.test" for i in range(10)]
SENDER = "sender@s.test"


def zone():
    """The dnsmasq records every test may use."""
    z = [
        "--mx-host=s.test,mx.s.test,10",
        f"--host-record=mx.s.test,{IP['sender']}",
        # Preference: both up, the lower preference value must win (RFC 5321 §5.1).
        "--mx-host=pref.test,mx-high.pref.test,20",
        "--mx-host=pref.test,mx-low.pref.test,10",
        f"--host-record=mx-low.pref.test,{IP['pref_low']}",
        f"--host-record=mx-high.pref.test,{IP['pref_high']}",
        # Fallback: the preferred MX refuses connections.
        "--mx-host=fallback.test,mx1.fallback.test,10",
        "--mx-host=fallback.test,mx2.fallback.test,20",
        f"--host-record=mx1.fallback.test,{IP['fallback_down']}",
        f"--host-record=mx2.fallback.test,{IP['fallback_up']}",
        f"--host-record=implicit.test,{IP['implicit']}",
        "--dns-rr=nullmx.test,15,000000",
        "--mx-host=down.test,mx.down.test,10",
        f"--host-record=mx.down.test,{IP['down']}",
        "--mx-host=r.test,mx.r.test,10",
        f"--host-record=mx.r.test,{IP['reject']}",
        f"--host-record=mx.shared.test,{IP['shared']}",
        "--mx-host=up.test,mx.up.test,10",
        f"--host-record=mx.up.test,{IP['up']}",
        "--mx-host=multi.test,mx.multi.test,10",
        f"--host-record=mx.multi.test,{IP['multi']}",
        "--mx-host=loop.test,mx.loop.test,10",
        f"--host-record=mx.loop.test,{IP['loop']}",
        "--mx-host=sink.test,mx.sink.test,10",
        f"--host-record=mx.sink.test,{IP['sink']}",
        # An MX that accepts and never greets, with a working MX behind it, and alone.
        "--mx-host=tarpit.test,mx1.tarpit.test,10",
        "--mx-host=tarpit.test,mx2.tarpit.test,20",
        f"--host-record=mx1.tarpit.test,{IP['tarpit']}",
        f"--host-record=mx2.tarpit.test,{IP['tarpit_next']}",
        "--mx-host=mute.test,mx.mute.test,10",
        f"--host-record=mx.mute.test,{IP['tarpit']}",
        "--mx-host=limited.test,mx.limited.test,10",
        f"--host-record=mx.limited.test,{IP['limited']}",
    ]
    z += [f"--mx-host={d},mx.shared.test,10" for d in SHARED_DOMAINS]
    return z


FINAL = {"delivered", "bounced", "expired"}


class Net:
    """The peers of one test: dnsmasq, SMTP servers on IP[...]:port, and the daemon's flags."""

    def __init__(self, tmp_path, ringmail_factory, helpers):
        self.tmp = str(tmp_path)
        self.factory = ringmail_factory
        self.h = helpers
        self.peers = []
        self.port = free_port_on(sorted(set(IP.values())))
        self.dns = None

    def start_dns(self, records=None):
        self.dns = Dnsmasq(zone() if records is None else records, self.tmp).start()
        self.peers.append(self.dns)
        return self.dns

    def capture(self, key, **kw):
        s = CaptureServer(IP[key], self.port, name=f"mx-{key}.test", **kw).start()
        self.peers.append(s)
        return s

    def sink(self, key, *flags):
        s = SmtpSink(IP[key], self.port, self.tmp, flags).start()
        self.peers.append(s)
        return s

    def daemon(self, *flags, retry="1s:2s"):
        assert self.dns is not None, "delivery without the test's DNS server is forbidden here"
        return self.factory("--dns-server", f"127.0.0.1:{self.dns.port}", "--delivery-port",
                            str(self.port), "--retry-schedule", retry, "--timeout-connect-ms",
                            "3000", *flags, delivery=True)

    def stop(self):
        stop_all(self.peers)


@pytest.fixture
def net(tmp_path, ringmail_factory, helpers):
    n = Net(tmp_path, ringmail_factory, helpers)
    n.start_dns()
    yield n
    n.stop()


# --- helpers -------------------------------------------------------------------------------

def message(tag, extra_headers="", body="Hello.\r\n.leading dot line\r\n"):
    return (f"From: {SENDER}\r\nTo: someone@example.test\r\nSubject: test {tag}\r\n"
            f"Message-ID: <{tag}@client.test>\r\n{extra_headers}\r\n{body}")


def send(d, helpers, rcpts, tag, mail_from=SENDER, **kw):
    return helpers.send_smtplib(d, mail_from, rcpts, message(tag, **kw))


def attempts_of(d, msg_id):
    return [x for x in delivery_lines(d.log_text()) if x["id"] == msg_id]


def wait_status(d, msg_id, rcpt, status, timeout=20.0):
    """The first delivery log line of (msg_id, rcpt) with that status."""
    def found():
        for x in attempts_of(d, msg_id):
            if x["rcpt"] == rcpt and x["status"] == status:
                return x
        return None

    return wait_for(found, f"{msg_id} rcpt {rcpt} {status}; log:\n{d.log_text()[-3000:]}",
                    timeout=timeout)


def wait_envelopes(server, n, timeout=20.0):
    return wait_for(lambda: len(server.snapshot()) >= n and server.snapshot(),
                    f"{n} message(s) at {server.host}", timeout=timeout)


def rcpt_states(d, msg_id):
    e = d.spool_by_id().get(msg_id)
    return None if e is None else [s["state"] for s in e["rcpt_states"]]


def wait_states(d, msg_id, states, timeout=20.0):
    return wait_for(lambda: rcpt_states(d, msg_id) == states,
                    f"{msg_id} states {states} (now {rcpt_states(d, msg_id)})", timeout=timeout)


def wait_all_final(d, timeout=20.0):
    """Every message in the spool (DSNs included) has every recipient final. A segment whose
    messages are all final may already be deleted (then its messages are no longer listed)."""
    def done():
        entries = d.spool_json()
        return all(s["state"] in FINAL for e in entries for s in e["rcpt_states"])

    return wait_for(done, "every recipient final", timeout=timeout)


def check_delivered_body(helpers, env, content, msg_id=None):
    """What the MX got = our Received header (naming us and the queue id) + the client's
    bytes, exactly."""
    assert env.data.startswith(b"Received: from client.test"), env.data[:200]
    client_part = helpers.strip_received(env.data)
    received = env.data[:len(env.data) - len(client_part)]
    assert f"by {helpers.HOSTNAME} ".encode() in received, received
    if msg_id is not None:
        assert re.search(rf" id {msg_id}[;\s]".encode(), received), received
    assert client_part == content


def dsn_of(env):
    """(message, per-message fields, [per-recipient fields], original headers text)."""
    msg = email.message_from_bytes(env.data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1, [p.get_content_type() for p in parts]
    blocks = status[0].get_payload()
    per_message, per_rcpt = blocks[0], blocks[1:]
    headers = [p for p in parts if p.get_content_type() in ("text/rfc822-headers",
                                                             "message/rfc822")]
    assert len(headers) == 1, [p.get_content_type() for p in parts]
    h = headers[0].get_payload()
    original = h if isinstance(h, str) else h[0].as_string()
    return msg, per_message, per_rcpt, original


def check_dsn_envelope(env):
    assert env.mail_from == "<>" or env.mail_from == "", env.mail_from
    assert env.rcpts == [SENDER], env.rcpts


def fields(block):
    return {k.lower(): v for k, v in block.items()}


# --- MX selection ------------------------------------------------------------------------

def test_mx_preference_then_fallback_to_next_mx(net, helpers):
    low = net.capture("pref_low")
    high = net.capture("pref_high")
    up = net.capture("fallback_up")  # fallback_down: nothing listens there
    d = net.daemon()

    pid, pcontent = send(d, helpers, ["alice@pref.test"], "pref")
    fid, fcontent = send(d, helpers, ["bob@fallback.test"], "fallback")

    env = wait_envelopes(low, 1)[0]
    assert env.rcpts == ["alice@pref.test"] and env.mail_from == SENDER
    check_delivered_body(helpers, env, pcontent, pid)
    line = wait_status(d, pid, 0, "delivered")
    assert line["relay"] == f"mx-low.pref.test[{IP['pref_low']}]", line
    assert line["domain"] == "pref.test" and line["reply"].startswith("250"), line

    env = wait_envelopes(up, 1)[0]
    assert env.rcpts == ["bob@fallback.test"]
    check_delivered_body(helpers, env, fcontent, fid)
    line = wait_status(d, fid, 0, "delivered")
    assert line["relay"] == f"mx2.fallback.test[{IP['fallback_up']}]", line
    # The preferred MX being down is not a failure of the recipient: one attempt, delivered.
    assert [x["status"] for x in attempts_of(d, fid)] == ["delivered"]

    wait_states(d, pid, ["delivered"])
    wait_states(d, fid, ["delivered"])
    assert high.snapshot() == []  # never the less preferred MX while the preferred one answers


def test_implicit_mx_from_address_record(net, helpers):
    srv = net.capture("implicit")
    d = net.daemon()
    mid, content = send(d, helpers, ["carol@implicit.test"], "implicit")
    env = wait_envelopes(srv, 1)[0]
    assert env.rcpts == ["carol@implicit.test"]
    check_delivered_body(helpers, env, content, mid)
    line = wait_status(d, mid, 0, "delivered")
    assert IP["implicit"] in line["relay"], line
    wait_states(d, mid, ["delivered"])


# --- DNS failures --------------------------------------------------------------------------

@pytest.mark.parametrize("domain,code", [("nullmx.test", "5.1.10"), ("nosuch.test", "5.1.2")])
def test_dns_permanent_failure_bounces_with_dsn(net, helpers, domain, code):
    sender_mx = net.capture("sender")
    d = net.daemon()
    mid, _ = send(d, helpers, [f"dave@{domain}"], f"dns-{code}")
    line = wait_status(d, mid, 0, "bounced")
    assert code in line["reply"], line
    assert line["attempts"] == 1, line
    env = wait_envelopes(sender_mx, 1)[0]
    check_dsn_envelope(env)
    _, _, per_rcpt, original = dsn_of(env)
    assert len(per_rcpt) == 1
    f = fields(per_rcpt[0])
    assert f["final-recipient"].replace(" ", "").lower() == f"rfc822;dave@{domain}"
    assert f["action"].strip() == "failed"
    assert f["status"].strip() == code, f
    assert f"Message-ID: <dns-{code}@client.test>" in original
    wait_states(d, mid, ["bounced"])


def test_servfail_deferred_then_delivered_once_dns_fixed(net, helpers, tmp_path):
    upstream = ServfailResponder().start()
    net.peers.append(upstream)
    broken = zone() + [f"--server=/servfail.test/127.0.0.1#{upstream.port}"]
    fixed = zone() + ["--mx-host=servfail.test,mx.servfail.test,10",
                      f"--host-record=mx.servfail.test,{IP['servfail']}"]
    net.dns.restart(broken)
    srv = net.capture("servfail")
    d = net.daemon()
    mid, content = send(d, helpers, ["erin@servfail.test"], "servfail")

    line = wait_status(d, mid, 0, "deferred")
    assert line["reply"].startswith("4"), line
    assert upstream.queries >= 1
    assert srv.snapshot() == []
    wait_states(d, mid, ["deferred"])

    net.dns.restart(fixed)
    env = wait_envelopes(srv, 1)[0]
    check_delivered_body(helpers, env, content, mid)
    line = wait_status(d, mid, 0, "delivered")
    assert line["attempts"] >= 2, line
    wait_states(d, mid, ["delivered"])
    assert len(srv.snapshot()) == 1


# --- destinations that fail ----------------------------------------------------------------

def test_destination_down_then_up_is_delivered_on_retry(net, helpers):
    d = net.daemon()
    mid, content = send(d, helpers, ["frank@down.test"], "down-up")
    line = wait_status(d, mid, 0, "deferred")
    assert line["reply"].startswith("4"), line
    wait_states(d, mid, ["deferred"])

    srv = net.capture("down")
    env = wait_envelopes(srv, 1)[0]
    assert env.rcpts == ["frank@down.test"]
    check_delivered_body(helpers, env, content, mid)
    line = wait_status(d, mid, 0, "delivered")
    assert line["attempts"] >= 2, line
    wait_states(d, mid, ["delivered"])


def test_smtp_sink_soft_reject_defers_then_delivers(net, helpers):
    sink = net.sink("sink", "-r", "RCPT")  # every RCPT: 450 4.3.0
    d = net.daemon()
    mid, _ = send(d, helpers, ["gina@sink.test"], "soft")
    line = wait_status(d, mid, 0, "deferred")
    assert "450" in line["reply"] and "4.3.0" in line["reply"], line
    wait_states(d, mid, ["deferred"])
    assert sink.counters()[2] == 0

    sink.stop()
    net.peers.remove(sink)
    sink = net.sink("sink")
    wait_status(d, mid, 0, "delivered")
    wait_for(lambda: sink.counters()[2] >= 1, "smtp-sink counted the message")
    wait_states(d, mid, ["delivered"])


def test_smtp_sink_hard_reject_bounces_with_one_dsn(net, helpers):
    net.sink("sink", "-f", "RCPT")  # every RCPT: 500 5.3.0
    sender_mx = net.capture("sender")
    d = net.daemon()
    mid, _ = send(d, helpers, ["hank@sink.test", "ivy@sink.test"], "hard")
    for i in range(2):
        line = wait_status(d, mid, i, "bounced")
        assert "5.3.0" in line["reply"], line
    wait_all_final(d)
    envs = wait_envelopes(sender_mx, 1)
    assert len(envs) == 1, envs  # both recipients failed in one round: one DSN
    _, _, per_rcpt, _ = dsn_of(envs[0])
    assert sorted(fields(b)["final-recipient"].split(";")[1].strip() for b in per_rcpt) == [
        "hank@sink.test", "ivy@sink.test"]
    assert all(fields(b)["status"].strip() == "5.3.0" for b in per_rcpt)


def test_mx_that_never_greets_fails_like_a_refused_connection(net, helpers):
    """A host that accepts and never greets times out at the greeting and counts as failed:
    the next MX takes the mail (RFC 5321 §5.1); with no other MX the mail is deferred and ends
    at its lifetime with a DSN, never held by the silent host."""
    tarpit = Tarpit(IP["tarpit"], net.port).start()
    net.peers.append(tarpit)
    behind = net.capture("tarpit_next")
    sender_mx = net.capture("sender")
    # The greeting timeout: 5 min (RFC 5321 §4.5.3.2) at 1 %, 3 s.
    d = net.daemon("--outbound-timeout-percent", "1", "--max-queue-lifetime", "5s")
    fid, fcontent = send(d, helpers, ["kim@tarpit.test"], "tarpit-fallback")
    mid, _ = send(d, helpers, ["lee@mute.test"], "tarpit-alone")

    env = wait_envelopes(behind, 1)[0]
    check_delivered_body(helpers, env, fcontent, fid)
    line = wait_status(d, fid, 0, "delivered")
    assert line["relay"] == f"mx2.tarpit.test[{IP['tarpit_next']}]", line
    wait_states(d, fid, ["delivered"])

    line = wait_status(d, mid, 0, "deferred")
    assert "timed out" in line["reply"], line
    wait_for(lambda: rcpt_states(d, mid) in (["expired"], ["bounced"]),
             f"{mid} expired (now {rcpt_states(d, mid)})", timeout=30)
    env = wait_envelopes(sender_mx, 1)[0]
    check_dsn_envelope(env)
    _, _, per_rcpt, original = dsn_of(env)
    f = fields(per_rcpt[0])
    assert f["action"].strip() == "failed" and f["status"].strip().startswith("4."), f
    assert "Message-ID: <tarpit-alone@client.test>" in original
    assert tarpit.accepted >= 2  # both domains went there first


# --- DSNs ----------------------------------------------------------------------------------

def test_per_recipient_5xx_gives_exactly_one_dsn_with_the_fields(net, helpers):
    mx = net.capture("reject", reject={
        "bad1@r.test": "550 5.1.1 <bad1@r.test>: no such user",
        "bad2@r.test": "553 5.7.1 <bad2@r.test>: policy refusal",
    })
    sender_mx = net.capture("sender")
    d = net.daemon()
    mid, content = send(d, helpers, ["ok@r.test", "bad1@r.test", "bad2@r.test"], "per-rcpt",
                        extra_headers="X-Original-Marker: keep-me\r\n")

    env = wait_envelopes(mx, 1)[0]
    assert env.rcpts == ["ok@r.test"]
    check_delivered_body(helpers, env, content, mid)
    assert wait_status(d, mid, 0, "delivered")
    l1 = wait_status(d, mid, 1, "bounced")
    l2 = wait_status(d, mid, 2, "bounced")
    assert "550 5.1.1" in l1["reply"] and "553 5.7.1" in l2["reply"], (l1, l2)

    dsn_env = wait_envelopes(sender_mx, 1)[0]
    wait_all_final(d)
    assert len(sender_mx.snapshot()) == 1, sender_mx.snapshot()
    assert len(mx.snapshot()) == 1  # the DSN went to the sender's MX, not back to r.test
    check_dsn_envelope(dsn_env)

    msg, per_message, per_rcpt, original = dsn_of(dsn_env)
    assert msg["To"] and SENDER in msg["To"]
    assert "MAILER-DAEMON" in (msg["From"] or "").upper() or helpers.HOSTNAME in msg["From"]
    pm = fields(per_message)
    assert helpers.HOSTNAME in pm["reporting-mta"], pm
    by_rcpt = {fields(b)["final-recipient"].split(";")[1].strip(): fields(b) for b in per_rcpt}
    assert sorted(by_rcpt) == ["bad1@r.test", "bad2@r.test"]  # not the delivered one
    for addr, status, reply in (("bad1@r.test", "5.1.1", "550 5.1.1"),
                                ("bad2@r.test", "5.7.1", "553 5.7.1")):
        f = by_rcpt[addr]
        assert f["final-recipient"].replace(" ", "").startswith("rfc822;"), f
        assert f["action"].strip() == "failed", f
        assert f["status"].strip() == status, f
        assert f["remote-mta"].replace(" ", "").lower() == "dns;mx.r.test", f
        diag = re.sub(r"\s+", " ", f["diagnostic-code"])
        assert diag.replace(" ", "").lower().startswith("smtp;"), f
        assert reply in diag, f
    assert "X-Original-Marker: keep-me" in original
    assert "Message-ID: <per-rcpt@client.test>" in original
    assert "Subject: test per-rcpt" in original
    assert wait_states(d, mid, ["delivered", "bounced", "bounced"])



def test_dsn_is_durable_before_the_bounces_it_reports(net, helpers):
    """Postfix's order: the DSN exists before its recipients are marked bounced. In each
    core's spool log, a bounced recipient's status comes after the DSN that reports it, also
    where a segment fills up between the two (small segments, big DSNs, many of them), so a
    crash in between can repeat a DSN but never leave a bounce without one."""
    # Nothing is deleted under the test: s.test has no MX up, so every DSN stays queued, and
    # each message has a recipient at down.test, which stays down.
    d = net.daemon("--max-message-size", "65536", "--segment-size", "1048576")
    # A 40 KB header section: the DSN quotes it, so each bounce writes ~80 KB.
    pad = "".join(f"X-Pad-{i}: {'p' * 70}\r\n" for i in range(500))
    with d.smtp() as s:
        for i in range(60):
            msg = message(f"order-{i}", extra_headers=pad)
            assert s.sendmail(SENDER, ["bad@r.test", "hold@down.test"], msg) == {}
        s.quit()
    ids = [e["id"] for e in d.spool_json() if e["mail_from"] == SENDER]
    assert len(ids) == 60, ids
    # r.test is down until every message has been tried once; then they all bounce together,
    # so that many DSNs and bounces are being stored at once when segments fill up.
    wait_for(lambda: all(rcpt_states(d, i) == ["deferred", "deferred"] for i in ids),
             "every message deferred once")
    net.capture("reject", reject={"bad@r.test": "550 5.1.1 <bad@r.test>: no such user"})

    def settled():
        by_id = d.spool_by_id()
        if not all(by_id.get(i) and by_id[i]["rcpt_states"][0]["state"] == "bounced"
                   for i in ids):
            return None
        dsns = [e for e in by_id.values() if e["mail_from"] == ""]
        return by_id if len(dsns) >= len(ids) else None

    by_id = wait_for(settled, "every message bounced with its DSN queued", timeout=60)
    dsn_of_original = {}
    for e in by_id.values():
        if e["mail_from"] != "":
            continue
        m = re.search(rb"X-Ringmail-Queue-ID: ([0-9a-f]{16})", d.body(e["id"]))
        assert m, e
        assert m.group(1).decode() not in dsn_of_original, "two DSNs for one bounce"
        dsn_of_original[m.group(1).decode()] = e
    segments = {e["segment"] for e in dsn_of_original.values()}
    assert len(segments) >= 3, f"the DSNs must cross segments: {segments}"
    for i in ids:
        dsn = dsn_of_original.get(i)
        assert dsn is not None, f"{i} bounced without a DSN"
        status = by_id[i]["rcpt_states"][0]
        assert int(dsn["id"], 16) & 0xFF == int(i, 16) & 0xFF  # one core: one log
        assert dsn["log_index"] < status["log_index"], (i, dsn, status)


def test_dsn_waits_while_the_original_cannot_be_read(net, helpers):
    """A DSN is never given up: while the original cannot be read to build it, its bounce is
    not recorded (the recipient stays deferred in the spool), and once the read succeeds the
    DSN goes out and only then is the bounce recorded."""
    upstream = ServfailResponder().start()
    net.peers.append(upstream)
    net.dns.restart(zone() + [f"--server=/servfail.test/127.0.0.1#{upstream.port}"])
    sender_mx = net.capture("sender")
    d = net.daemon()
    mid, _ = send(d, helpers, ["erin@servfail.test"], "unreadable")
    wait_states(d, mid, ["deferred"])
    e = d.spool_by_id()[mid]
    path = os.path.join(d.spool_dir, f"core-{int(mid, 16) & 0xFF}", f"{e['segment']:016x}.seg")
    at = e["offset"] + e["body_bytes"] // 2 + 200  # inside the record: its checksum fails
    with open(path, "r+b") as f:
        f.seek(at)
        good = f.read(1)
        f.seek(at)
        f.write(bytes([good[0] ^ 0xFF]))
    try:
        net.dns.restart(zone())  # servfail.test is NXDOMAIN now: the recipient bounces (5.1.2)
        wait_status(d, mid, 0, "bounced")
        wait_for(lambda: f"bounce of {mid}: cannot read the original" in d.log_text(),
                 "the DSN read failure logged")
        assert f"bounce of {mid}: DSN" not in d.log_text()
    finally:
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(good)
    env = wait_envelopes(sender_mx, 1, timeout=30)[0]  # the read is tried again
    check_dsn_envelope(env)
    _, _, per_rcpt, _ = dsn_of(env)
    assert fields(per_rcpt[0])["status"].strip() == "5.1.2"
    wait_states(d, mid, ["bounced"])
    assert len(sender_mx.snapshot()) == 1

def test_bounce_of_a_null_sender_message_makes_no_dsn(net, helpers):
    net.capture("reject", reject={"bad1@r.test": "550 5.1.1 no such user"})
    sender_mx = net.capture("sender")
    d = net.daemon()
    mid, _ = send(d, helpers, ["bad1@r.test"], "null-sender", mail_from="<>")
    wait_status(d, mid, 0, "bounced")
    wait_for(lambda: f"bounce of {mid}: the sender is <>: no DSN" in d.log_text(),
             "the no-DSN log line")
    wait_states(d, mid, ["bounced"])
    entries = d.spool_json()
    assert [e["id"] for e in entries] == [mid], entries  # no DSN message was queued
    assert sender_mx.snapshot() == []
    assert f"bounce of {mid}: DSN" not in d.log_text()


def test_queue_lifetime_expiry_bounces_4_4_7(net, helpers):
    sender_mx = net.capture("sender")
    d = net.daemon("--max-queue-lifetime", "3s")
    mid, _ = send(d, helpers, ["jack@down.test"], "expiry")
    wait_status(d, mid, 0, "deferred")
    # The watchdog expires it at the deadline (no attempt, so no `delivery` log line).
    wait_states(d, mid, ["expired"], timeout=15)
    env = wait_envelopes(sender_mx, 1, timeout=15)[0]
    check_dsn_envelope(env)
    _, _, per_rcpt, original = dsn_of(env)
    assert len(per_rcpt) == 1
    f = fields(per_rcpt[0])
    assert f["final-recipient"].replace(" ", "").lower() == "rfc822;jack@down.test"
    assert f["action"].strip() == "failed"
    assert f["status"].strip() == "4.4.7", f
    assert "Message-ID: <expiry@client.test>" in original
    assert len(sender_mx.snapshot()) == 1


# --- connections ---------------------------------------------------------------------------

def test_domains_sharing_an_mx_share_its_connections(net, helpers):
    srv = net.capture("shared", data_delay_s=0.05)
    d = net.daemon("--max-connections-per-destination", "2", "--outbound-idle-ms", "30000")
    sent = {}
    with d.smtp() as s:
        assert s.ehlo()[0] == 250
        for i in range(50):
            rcpt = f"user{i}@{SHARED_DOMAINS[i % 10]}"
            msg = message(f"shared-{i}")
            assert s.sendmail(SENDER, [rcpt], msg) == {}
            sent[rcpt] = helpers.smtplib_content(msg)
        s.quit()
    envs = wait_envelopes(srv, 50, timeout=30)
    assert len(envs) == 50
    got = {}
    for e in envs:
        assert len(e.rcpts) == 1, e
        assert e.rcpts[0] not in got, f"{e.rcpts[0]} delivered twice"
        got[e.rcpts[0]] = e
    assert sorted(got) == sorted(sent)
    for rcpt, e in got.items():
        check_delivered_body(helpers, e, sent[rcpt])
    # One destination for the ten domains: its connection limit holds for all of them, and
    # the open connections were reused (messages-per-connection 100 > 50, idle 30 s).
    assert srv.max_open <= 2, srv.max_open
    assert 1 <= srv.connections <= 2, srv.connections
    assert len({e.conn for e in envs}) <= 2


def test_multi_recipient_transaction_is_one_pipelined_transaction(net, helpers):
    srv = net.capture("multi")
    d = net.daemon()
    rcpts = ["r1@multi.test", "r2@multi.test", "r3@multi.test"]
    mid, content = send(d, helpers, rcpts, "multi")
    env = wait_envelopes(srv, 1)[0]
    for i in range(3):
        wait_status(d, mid, i, "delivered")
    assert len(srv.snapshot()) == 1
    assert sorted(env.rcpts) == rcpts
    check_delivered_body(helpers, env, content, mid)
    assert srv.connections == 1
    # RFC 2920: MAIL and the RCPTs go as one group, not each after its reply.
    cmd_chunks = [c for conn, c in srv.chunks
                  if conn == env.conn and re.search(rb"(?im)^(MAIL FROM|RCPT TO)", c)]
    assert len(cmd_chunks) < 4, cmd_chunks
    wait_states(d, mid, ["delivered"] * 3)



def test_active_queue_limit_holds_back_due_messages_until_room_frees(net, helpers):
    """--active-queue-max: at most that many messages of a core are in an attempt at once
    (Postfix's qmgr_message_active_limit); the others stay due and go as attempts end, not
    deferred and not after a retry interval."""
    srv = net.capture("shared", data_delay_s=0.3)
    d = net.daemon("--threads", "1", "--active-queue-max", "2", "--outbound-idle-ms", "30000",
                   retry="10m:1h")
    ids = []
    with d.smtp() as s:
        assert s.ehlo()[0] == 250
        for i in range(8):
            rcpt = f"user{i}@{SHARED_DOMAINS[i % 10]}"
            assert s.sendmail(SENDER, [rcpt], message(f"active-{i}")) == {}
        s.quit()
    ids = [e["id"] for e in d.spool_json()]
    envs = wait_envelopes(srv, 8, timeout=30)
    assert len(envs) == 8
    # Eight messages to one destination that allows 20 connections: two at a time.
    assert srv.max_open <= 2, srv.max_open
    for mid in ids:
        line = wait_status(d, mid, 0, "delivered")
        assert line["attempts"] == 1, line
        assert [x["status"] for x in attempts_of(d, mid)] == ["delivered"]


def test_forgotten_destinations_are_made_again_from_dns(net, helpers):
    """--max-destinations 1: each new destination pushes the idle other one out of the table;
    mail for a forgotten destination resolves it again and is delivered like the first time."""
    low = net.capture("pref_low")
    imp = net.capture("implicit")
    d = net.daemon("--threads", "1", "--max-destinations", "1", "--outbound-idle-ms", "50")
    for round_ in range(3):
        a, _ = send(d, helpers, [f"a{round_}@pref.test"], f"forget-a{round_}")
        assert wait_status(d, a, 0, "delivered")["attempts"] == 1
        b, _ = send(d, helpers, [f"b{round_}@implicit.test"], f"forget-b{round_}")
        assert wait_status(d, b, 0, "delivered")["attempts"] == 1
    assert sorted(low.rcpts()) == [f"a{i}@pref.test" for i in range(3)]
    assert sorted(imp.rcpts()) == [f"b{i}@implicit.test" for i in range(3)]

# --- restart and loops ---------------------------------------------------------------------

def test_restart_in_the_middle_of_retries_loses_and_repeats_nothing(net, helpers):
    up = net.capture("up")
    d = net.daemon()
    m1, c1 = send(d, helpers, ["u1@up.test", "d1@down.test"], "restart-1")
    m2, c2 = send(d, helpers, ["d2@down.test"], "restart-2")
    m3, c3 = send(d, helpers, ["u2@up.test"], "restart-3")
    wait_status(d, m1, 0, "delivered")
    wait_status(d, m3, 0, "delivered")
    wait_status(d, m1, 1, "deferred")
    wait_status(d, m2, 0, "deferred")
    wait_states(d, m1, ["delivered", "deferred"])
    wait_states(d, m2, ["deferred"])
    assert sorted(up.rcpts()) == ["u1@up.test", "u2@up.test"]

    d.stop()
    down = net.capture("down")
    d.start()
    envs = wait_envelopes(down, 2)
    wait_status(d, m1, 1, "delivered")
    wait_status(d, m2, 0, "delivered")
    wait_all_final(d)
    assert sorted(down.rcpts()) == ["d1@down.test", "d2@down.test"]
    by_rcpt = {e.rcpts[0]: e for e in envs}
    check_delivered_body(helpers, by_rcpt["d1@down.test"], c1, m1)
    check_delivered_body(helpers, by_rcpt["d2@down.test"], c2, m2)
    # Nothing delivered before the restart went out again.
    assert sorted(up.rcpts()) == ["u1@up.test", "u2@up.test"]
    assert {x["rcpt"] for x in attempts_of(d, m1)} == {1}  # this life's log only
    assert attempts_of(d, m3) == []
    for m in (m1, m2, m3):  # final, or gone with a deleted segment
        assert rcpt_states(d, m) in (None, ["delivered"] * len(rcpt_states(d, m) or [])), m


def test_more_than_50_received_headers_bounce_5_4_6(net, helpers):
    mx = net.capture("loop")
    sender_mx = net.capture("sender")
    d = net.daemon()
    hops = "".join(f"Received: from hop{i}.test by hop{i + 1}.test; Mon, 1 Jan 2024 00:00:00"
                   f" +0000\r\n" for i in range(51))
    mid, _ = send(d, helpers, ["kim@loop.test"], "loop", extra_headers=hops)
    line = wait_status(d, mid, 0, "bounced")
    assert "5.4.6" in line["reply"], line
    env = wait_envelopes(sender_mx, 1)[0]
    _, _, per_rcpt, _ = dsn_of(env)
    assert fields(per_rcpt[0])["status"].strip() == "5.4.6"
    wait_states(d, mid, ["bounced"])
    assert mx.snapshot() == []  # a looping message is never sent on


# --- the delivery log ----------------------------------------------------------------------

# Every `delivery` line has all of these fields, in this order, whatever decided the outcome.
FULL_LINE_RE = re.compile(
    r"delivery id=(?P<id>[0-9a-f]{16}) rcpt=(?P<rcpt>\d+) to=<(?P<to>[^>]*)> "
    r"domain=(?P<domain>\S+) relay=(?P<relay>\S*) status=(?P<status>\w+) "
    r"attempts=(?P<attempts>\d+) delay=\d+\.\ds reply=\"(?P<reply>[^\"]*)\" tls=\S+$")


def full_lines(d, msg_id):
    out = []
    for line in d.log_text().splitlines():
        if f"delivery id={msg_id} " in line:
            m = FULL_LINE_RE.search(line)
            assert m, f"delivery line without every field: {line}"
            out.append(m.groupdict())
    return out


def test_every_delivery_line_names_its_recipient(net, helpers):
    """Outcomes decided without a remote reply (NXDOMAIN, a dead destination, expiry, a mail
    loop) name the recipient like the others, never `to=<>` (which reads as the null sender)."""
    net.capture("sender")
    net.capture("loop")
    d = net.daemon("--max-queue-lifetime", "4s")
    hops = "".join(f"Received: from hop{i}.test by hop{i + 1}.test; Mon, 1 Jan 2024 00:00:00"
                   f" +0000\r\n" for i in range(51))
    nx, _ = send(d, helpers, ["Nora@nosuch.test"], "name-nx")
    down, _ = send(d, helpers, ["dan@down.test", "dora@down.test"], "name-down")
    loop, _ = send(d, helpers, ["lou@loop.test"], "name-loop", extra_headers=hops)

    wait_status(d, nx, 0, "bounced")
    wait_status(d, loop, 0, "bounced")
    wait_status(d, down, 0, "deferred")
    wait_status(d, down, 1, "deferred")
    wait_status(d, down, 0, "expired", timeout=20)
    wait_status(d, down, 1, "expired", timeout=20)

    want = {(nx, 0): "Nora@nosuch.test", (loop, 0): "lou@loop.test",
            (down, 0): "dan@down.test", (down, 1): "dora@down.test"}
    seen = set()
    for mid in (nx, down, loop):
        lines = full_lines(d, mid)
        assert lines, mid
        for x in lines:
            assert x["to"] == want[(mid, int(x["rcpt"]))], x
            assert x["domain"] == want[(mid, int(x["rcpt"]))].split("@")[1].lower(), x
            seen.add((mid, x["status"]))
    assert {(nx, "bounced"), (loop, "bounced"), (down, "deferred"), (down, "expired")} <= seen
    expired = [x for x in full_lines(d, down) if x["status"] == "expired"]
    assert len(expired) == 2 and all("4.4.7" in x["reply"] for x in expired), expired


# --- a server's recipient limit --------------------------------------------------------------

def test_recipients_past_the_server_limit_go_in_the_next_transaction_at_once(net, helpers):
    """A server that takes 3 RCPTs per transaction (452 4.5.3 after): the other recipients go
    in the next transactions right away, without an attempt counted or a retry waited."""
    srv = net.capture("limited", rcpt_limit=3)
    # A long retry interval: a recipient that waited for one would not arrive in the test.
    d = net.daemon(retry="10m:1h")
    rcpts = [f"r{i}@limited.test" for i in range(8)]
    mid, content = send(d, helpers, rcpts, "limited")
    envs = wait_for(lambda: len(srv.rcpts()) >= 8 and srv.snapshot(),
                    "8 recipients delivered", timeout=20)
    assert sorted(srv.rcpts()) == sorted(rcpts)  # each once
    assert [len(e.rcpts) for e in envs] == [3, 3, 2], envs
    for e in envs:
        check_delivered_body(helpers, e, content, mid)
    for i in range(8):
        line = wait_status(d, mid, i, "delivered")
        assert line["attempts"] == 1, line
    assert all(x["status"] == "delivered" for x in attempts_of(d, mid)), attempts_of(d, mid)
    wait_states(d, mid, ["delivered"] * 8)
