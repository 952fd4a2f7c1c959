"""test_flag_ranges.py — no flag value can stop the relay once it runs: every value the code
after start could not live with (an assertion, an overflow, a ring or a buffer the kernel or
the allocator refuses) is refused at start with one line on stderr and exit code 2, and the
values at the edges of each range start a relay that serves mail."""

import socket
import subprocess

import pytest

LABEL63 = "a" * 63
HOSTNAME_255 = ".".join([LABEL63] * 4)  # 4 × 63 + 3 dots = 255 octets
assert len(HOSTNAME_255) == 255

# (flags, what the one line on stderr must name)
BAD = [
    (["--max-recipients", "70000"], "--max-recipients"),  # the scheduler counts in 16 bits
    (["--max-recipients", "65536"], "--max-recipients"),
    (["--hostname", "h" * 300], "--hostname"),
    (["--hostname", HOSTNAME_255 + "a"], "--hostname"),  # 256 octets
    (["--hostname", "a" * 64 + ".example"], "--hostname"),  # a 64-octet label
    (["--hostname", "bad_name.example"], "--hostname"),
    (["--hostname", "-lead.example"], "--hostname"),
    (["--hostname", "trail-.example"], "--hostname"),
    (["--hostname", "a..example"], "--hostname"),
    (["--hostname", "mx.example."], "--hostname"),
    (["--hostname", "mx example"], "--hostname"),
    (["--threads", "257"], "--threads"),  # queue ids carry the core in one byte
    (["--threads", "200"], "--threads"),  # 200 × 199 channels of 4096 entries
    (["--channel-capacity", "1048576", "--threads", "16"], "--channel-capacity"),  # 16 GiB
    (["--channel-capacity", "1000"], "--channel-capacity"),
    (["--ring-entries", "32768"], "--ring-entries"),  # its 4x CQ is past the kernel's limit
    (["--ring-entries", "127"], "--ring-entries"),
    (["--recv-buffer-count", "100"], "--recv-buffer-count"),
    (["--recv-buffer-count", "65536"], "--recv-buffer-count"),
    (["--recv-buffer-bytes", "1048576", "--recv-buffer-count", "2048"], "--recv-buffer-bytes"),
    (["--max-message-size", "2147483648"], "--max-message-size"),  # 32-bit record lengths
    (["--max-message-size", "1023"], "--max-message-size"),
    (["--staging-memory", "1000"], "--staging-memory"),
    (["--segment-size", "100"], "--segment-size"),
    (["--segment-size", "8589934592"], "--segment-size"),
    (["--segment-size", "1048576"], "--segment-size"),  # a 25 MiB message cannot fit
    (["--timeout-command-ms", "0"], "--timeout-command-ms"),
    (["--timeout-data-ms", "0"], "--timeout-data-ms"),
    (["--timeout-connect-ms", "0"], "--timeout-connect-ms"),
    (["--outbound-idle-ms", "0"], "--outbound-idle-ms"),
    (["--greet-delay-ms", "4000000000"], "--greet-delay-ms"),
    (["--commit-window-us", "5000000"], "--commit-window-us"),
    (["--commit-depth", "0"], "--commit-depth"),
    (["--commit-depth", "9"], "--commit-depth"),
    (["--retry-schedule", "0s:1h"], "--retry-schedule"),
    (["--retry-schedule", "1h:5m"], "--retry-schedule"),
    (["--retry-schedule", "1s:3651d"], "--retry-schedule"),
    (["--max-queue-lifetime", "0"], "--max-queue-lifetime"),
    (["--max-queue-lifetime", "3651d"], "--max-queue-lifetime"),
    (["--compact-after", "0"], "--compact-after"),
    (["--compact-after", "99999999999d"], "--compact-after"),  # negative once signed
    (["--max-connections", "0"], "--max-connections"),
    (["--max-connections-per-ip", "0"], "--max-connections-per-ip"),
    (["--max-messages-per-connection", "0"], "--max-messages-per-connection"),
    (["--max-recipients-per-transaction", "0"], "--max-recipients-per-transaction"),
    (["--max-recipients-per-transaction", "129"], "--max-recipients-per-transaction"),
    (["--max-connections-per-destination", "0"], "--max-connections-per-destination"),
    (["--max-outbound-connections", "0"], "--max-outbound-connections"),
    (["--outbound-timeout-percent", "0"], "--outbound-timeout-percent"),
    (["--max-received-headers", "0"], "--max-received-headers"),  # every message a loop
    (["--delivery-port", "0"], "--delivery-port"),
    (["--delivery-port", "65536"], "--delivery-port"),
    (["--listen", "127.0.0.1:0"], "--listen"),
    (["--listen", "127.0.0.1:70000"], "--listen"),
    (["--listen", "localhost:2525"], "--listen"),
    (["--listen", "300.1.1.1:2525"], "--listen"),
    (["--submission-listen", "nowhere:587"], "nowhere:587"),
    (["--listen", "127.0.0.1:2,127.0.0.1:2"], "listed twice"),
    (["--dns-server", "resolver.example"], "--dns-server"),
    (["--dns-server", "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7"],
     "--dns-server"),
    (["--smarthost", "bad host:x"], "--smarthost"),
    (["--relay-networks", "10.0.0.0/99"], "--relay-networks"),
    (["--auth-failures-max", "0"], "--auth-failures-max"),
    (["--outbound-tls", "sometimes"], "--outbound-tls"),
    (["--log-level", "loud"], "--log-level"),
    (["--threads", "-1"], "--threads"),
    (["--tls-cert", "missing-cert.pem", "--tls-key", "missing-key.pem"], "--tls-cert"),
    (["--tls-cert", "missing-cert.pem"], "--tls-cert"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("flags,named", BAD, ids=[" ".join(f)[:60] for f, _ in BAD])
def test_bad_value_is_refused_at_start(flags, named, tmp_path, helpers):
    # A value that slipped through would start a relay: the timeout ends it, and the test fails.
    r = subprocess.run([helpers.RINGMAIL_BIN, "--listen", f"127.0.0.1:{free_port()}",
                        "--spool-dir", str(tmp_path / "spool"), "--no-delivery", *flags],
                       capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, (r.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1, f"one line on stderr, got {err!r}"
    assert lines[0].startswith("ringmail: ") and named in lines[0], lines[0]
    assert not (tmp_path / "spool").exists(), "refused before touching the spool"


def one_message(d, rcpts, helpers):
    """EHLO, MAIL, the recipients pipelined in groups, DATA: returns the DATA reply."""
    with d.raw() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.com>").code == 250
        for lo in range(0, rcpts, 100):  # PIPELINING: a group of RCPTs per round trip
            group = range(lo, min(rcpts, lo + 100))
            c.send("".join(f"RCPT TO:<r{i}@example.net>\r\n" for i in group))
            for i in group:
                r = c.reply()
                assert r.code == 250, (i, r)
        assert c.cmd("DATA").code == 354
        c.send("Subject: edges\r\n\r\nhello\r\n.\r\n")
        return c.reply()


@pytest.mark.parametrize("flags,hostname,rcpts", [
    (["--max-recipients", "65535"], None, 150),
    (["--max-recipients", "2000"], None, 1200),
    ([], HOSTNAME_255, 1),
    ([], "mx-1.Example-Host.test", 1),
    (["--threads", "1", "--ring-entries", "16384", "--commit-depth", "8",
      "--commit-window-us", "1000000"], None, 1),
    (["--retry-schedule", "1ms:3650d", "--max-queue-lifetime", "3650d", "--compact-after",
      "3650d", "--max-received-headers", "1000"], None, 1),
    (["--threads", "2", "--channel-capacity", "1048576"], None, 1),
], ids=["max-recipients-65535", "1200-of-2000-recipients", "hostname-255", "hostname-ldh",
        "engine-edges", "duration-edges", "channel-edge"])
def test_edge_values_start_and_serve(flags, hostname, rcpts, ringmail_factory, helpers):
    kw = {"hostname": hostname} if hostname else {}
    # The longest greeting delay too (127.0.0.1 is a relay network: it does not wait).
    d = ringmail_factory(*flags, greet_delay_ms=600000, **kw)
    with d.raw() as c:
        r = c.ehlo()
        assert r.lines[0] == (hostname or helpers.HOSTNAME), r
    r = one_message(d, rcpts, helpers)
    assert r.code == 250, r
    msg_id = helpers.QUEUED_TEXT_RE.search(r.text).group(1)
    stored = d.spool_by_id()
    assert len(stored[msg_id]["rcpts"]) == rcpts
