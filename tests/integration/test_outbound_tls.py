"""test_outbound_tls.py — STARTTLS on outbound delivery (issue 4, delivery side), end to end.

Pins --outbound-tls: under `may` (the default) a destination offering STARTTLS gets the mail
inside TLS (the aiosmtpd peer sees an encrypted session; the delivery log says
tls=TLSv1.x/<cipher>), one that does not offer it gets it in clear (tls=none), and one whose
handshake fails (it answers 220 to STARTTLS, then sends garbage and hangs up) gets it in clear
on an immediate retry; under `encrypt` a destination without STARTTLS is deferred with 4.7.5
and never sees a MAIL command, while a TLS destination is delivered to.

The TLS peers use a self-signed certificate made with openssl at test time (ringmail verifies
no certificate, as Postfix's `may`/`encrypt` levels do). Isolation as in test_delivery.py: the
test's own dnsmasq, every MX on 127.0.0.4x, ringmail on 127.0.0.1.
"""

import ssl
import subprocess

import pytest

import aiosmtpd  # noqa: F401  the MX peers; installed by tools/install-deps.sh test

from delivery_peers import (DNSMASQ, CaptureServer, Dnsmasq, _Controller,  # noqa: E402
                            _CountingSMTP, _Handler, delivery_lines, free_port_on, stop_all,
                            wait_for)

assert DNSMASQ, "dnsmasq is needed (tools/install-deps.sh test)"

IP = {
    "tls": "127.0.0.41",     # tls.test: offers STARTTLS, TLS works
    "plain": "127.0.0.42",   # plain.test: no STARTTLS
    "broken": "127.0.0.43",  # broken.test: offers STARTTLS, the handshake fails
}
SENDER = "sender@s.test"


def zone():
    z = []
    for key, ip in IP.items():
        z += [f"--mx-host={key}.test,mx.{key}.test,10", f"--host-record=mx.{key}.test,{ip}"]
    return z


def make_cert(tmp):
    key, cert = f"{tmp}/mx.key", f"{tmp}/mx.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=mx.tls.test"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


class _TlsSeenSMTP(_CountingSMTP):
    """Records, per message, whether the session ran inside TLS when DATA ended."""

    async def smtp_DATA(self, arg):
        self.rm_owner.tls_seen.append(self._tls_protocol is not None)
        ssl_object = self.transport.get_extra_info("ssl_object")
        self.rm_owner.tls_reused.append(ssl_object is not None and ssl_object.session_reused)
        await super().smtp_DATA(arg)


class _BrokenTlsSMTP(_TlsSeenSMTP):
    """Says 220 to STARTTLS, then answers the ClientHello with bytes that are not TLS and
    hangs up: a broken TLS stack (or a middlebox) on the destination."""

    async def smtp_STARTTLS(self, arg):
        await self.push("220 2.0.0 Ready to start TLS")
        self.transport.write(b"garbage, not a TLS record\r\n" * 4)
        self.transport.close()


class TlsCapture(CaptureServer):
    """A CaptureServer that offers STARTTLS (or a broken one)."""

    def __init__(self, host, port, tls_context, broken=False, **kw):
        super().__init__(host, port, **kw)
        self.tls_context = tls_context
        self.broken = broken
        self.tls_seen = []
        self.tls_reused = []  # per message: did the session resume an earlier one

    def start(self):
        smtp_class = _BrokenTlsSMTP if self.broken else _TlsSeenSMTP
        owner = self

        class Ctl(_Controller):
            def factory(self):
                return smtp_class(owner, self.handler, **self.SMTP_kwargs)

        kwargs = {}
        if self.tls_context is not None:
            kwargs["tls_context"] = self.tls_context
        self.controller = Ctl(self, _Handler(self), hostname=self.host, port=self.port,
                              ready_timeout=10, server_hostname=self.name, decode_data=False,
                              **kwargs)
        self.controller.start()
        return self


class Net:
    def __init__(self, tmp_path, ringmail_factory):
        self.tmp = str(tmp_path)
        self.factory = ringmail_factory
        self.port = free_port_on(sorted(IP.values()))
        self.ctx = make_cert(self.tmp)
        self.dns = Dnsmasq(zone(), self.tmp).start()
        self.peers = [self.dns]

    def server(self, key, tls=True, broken=False):
        s = TlsCapture(IP[key], self.port, self.ctx if tls else None, broken=broken,
                       name=f"mx.{key}.test").start()
        self.peers.append(s)
        return s

    def daemon(self, *flags):
        return self.factory("--dns-server", f"127.0.0.1:{self.dns.port}", "--delivery-port",
                            str(self.port), "--retry-schedule", "1s:2s", "--timeout-connect-ms",
                            "3000", *flags, delivery=True)

    def stop(self):
        stop_all(self.peers)


@pytest.fixture
def net(tmp_path, ringmail_factory):
    n = Net(tmp_path, ringmail_factory)
    yield n
    n.stop()


def message(tag):
    return (f"From: {SENDER}\r\nTo: someone@example.test\r\nSubject: tls {tag}\r\n"
            f"Message-ID: <{tag}@client.test>\r\n\r\nHello over {tag}.\r\n")


def send(d, helpers, rcpt, tag):
    return helpers.send_smtplib(d, SENDER, [rcpt], message(tag))[0]


def tls_field(line):
    """The tls= field of a raw delivery log line."""
    return line.rsplit(" tls=", 1)[1].strip() if " tls=" in line else None


def wait_line(d, msg_id, status, timeout=30.0):
    """(parsed, raw) of the first delivery line of msg_id with that status."""
    def found():
        for raw in d.log_text().splitlines():
            for x in delivery_lines(raw):
                if x["id"] == msg_id and x["status"] == status:
                    return x, raw
        return None

    return wait_for(found, f"{msg_id} {status}; log:\n{d.log_text()[-3000:]}", timeout=timeout)


def test_may_delivers_inside_tls(net, helpers):
    mx = net.server("tls")
    d = net.daemon()
    msg_id = send(d, helpers, "u@tls.test", "may-tls")
    _, raw = wait_line(d, msg_id, "delivered")
    assert tls_field(raw).startswith("TLSv1."), raw
    assert "/TLS_" in tls_field(raw), raw
    envs = wait_for(lambda: mx.snapshot(), "the message at the TLS MX")
    assert envs[0].rcpts == ["u@tls.test"]
    assert mx.tls_seen == [True]  # the MX's session was inside TLS when DATA came
    # (The chunks the capture records are what its SMTP layer got: plaintext after TLS.)
    commands = [data for _, data in mx.chunks]
    assert commands[:3] == [b"EHLO ringmail.test\r\n", b"STARTTLS\r\n",
                            b"EHLO ringmail.test\r\n"], commands[:4]


def test_next_connection_resumes_the_tls_session(net, helpers):
    """The session of one connection is offered again by the next to the same host (as
    Postfix's smtp_tls_session_cache does); the MX (OpenSSL, TLS 1.3 tickets) resumes it."""
    mx = net.server("tls")
    d = net.daemon("--max-messages-per-connection", "1")
    for n, tag in enumerate(("resume-1", "resume-2"), 1):
        msg_id = send(d, helpers, "u@tls.test", tag)
        _, raw = wait_line(d, msg_id, "delivered")
        assert tls_field(raw).startswith("TLSv1."), raw
        wait_for(lambda: len(mx.tls_reused) >= n, f"message {n} at the MX")
    assert mx.connections >= 2, "one connection per message"
    assert mx.tls_reused == [False, True], mx.tls_reused


def test_may_without_starttls_delivers_in_clear(net, helpers):
    mx = net.server("plain", tls=False)
    d = net.daemon("--outbound-tls", "may")
    msg_id = send(d, helpers, "u@plain.test", "may-plain")
    _, raw = wait_line(d, msg_id, "delivered")
    assert tls_field(raw) == "none", raw
    assert mx.tls_seen == [False]


def test_encrypt_without_starttls_defers_and_sends_nothing(net, helpers):
    mx = net.server("plain", tls=False)
    d = net.daemon("--outbound-tls", "encrypt")
    msg_id = send(d, helpers, "u@plain.test", "encrypt-plain")
    x, raw = wait_line(d, msg_id, "deferred")
    assert x["reply"].startswith("4.7.5 "), raw
    assert "STARTTLS" in x["reply"], raw
    # The MX was asked (EHLO) but got no envelope and no MAIL command.
    wait_for(lambda: mx.connections >= 1, "the MX saw the EHLO")
    assert mx.snapshot() == []
    assert not any(b"MAIL FROM" in data for _, data in mx.chunks), mx.chunks


def test_encrypt_with_tls_delivers(net, helpers):
    mx = net.server("tls")
    d = net.daemon("--outbound-tls", "encrypt")
    msg_id = send(d, helpers, "u@tls.test", "encrypt-tls")
    _, raw = wait_line(d, msg_id, "delivered")
    assert tls_field(raw).startswith("TLSv1."), raw
    assert mx.tls_seen == [True]


def test_may_failed_handshake_retries_in_clear(net, helpers):
    mx = net.server("broken", broken=True)
    d = net.daemon()
    msg_id = send(d, helpers, "u@broken.test", "may-broken")
    _, raw = wait_line(d, msg_id, "delivered")
    assert tls_field(raw) == "none", raw
    assert mx.tls_seen == [False]
    assert mx.connections >= 2  # the failed TLS attempt, then the clear one
    assert "TLS handshake with mx.broken.test" in d.log_text()
    # Remembered: the next message goes in clear at once, without a second failed handshake.
    failures = d.log_text().count("TLS handshake with mx.broken.test")
    msg2 = send(d, helpers, "v@broken.test", "may-broken-2")
    _, raw2 = wait_line(d, msg2, "delivered")
    assert tls_field(raw2) == "none", raw2
    assert d.log_text().count("TLS handshake with mx.broken.test") == failures


def test_encrypt_failed_handshake_defers(net, helpers):
    mx = net.server("broken", broken=True)
    d = net.daemon("--outbound-tls", "encrypt")
    msg_id = send(d, helpers, "u@broken.test", "encrypt-broken")
    x, raw = wait_line(d, msg_id, "deferred")
    assert x["reply"].startswith("4.7.5 "), raw
    assert "TLS handshake" in x["reply"], raw
    assert mx.snapshot() == []
    assert not any(b"MAIL FROM" in data for _, data in mx.chunks), mx.chunks


def test_none_never_sends_starttls(net, helpers):
    mx = net.server("tls")
    d = net.daemon("--outbound-tls", "none")
    msg_id = send(d, helpers, "u@tls.test", "none")
    _, raw = wait_line(d, msg_id, "delivered")
    assert tls_field(raw) == "none", raw
    assert mx.tls_seen == [False]
    assert not any(b"STARTTLS" in data for _, data in mx.chunks), mx.chunks
