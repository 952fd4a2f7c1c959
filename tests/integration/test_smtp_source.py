"""test_smtp_source.py — Postfix's load generator against the real daemon.

Pins: 20 concurrent sessions reusing their connections (smtp-source -d) deliver 2000 messages;
the spool then holds exactly 2000, each once, with the envelope smtp-source sent and a body of
plausible size, and the spool verifies clean.
"""

import subprocess

MESSAGES = 2000
BODY_BYTES = 1024


def test_smtp_source_2000(ringmail):
    r = subprocess.run(["smtp-source", "-d", "-s", "20", "-m", str(MESSAGES), "-l",
                        str(BODY_BYTES), "-f", "a@example.com", "-t", "b@example.net",
                        f"127.0.0.1:{ringmail.port}"], capture_output=True, timeout=180)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")[-2000:]
    stored = ringmail.spool_json()
    assert len(stored) == MESSAGES
    assert len({e["id"] for e in stored}) == MESSAGES, "every message stored once"
    for e in stored:
        assert e["mail_from"] == "a@example.com"
        assert [x["address"] for x in e["rcpts"]] == ["b@example.net"]
        # 1024 bytes of text plus smtp-source's few headers plus our Received header.
        assert BODY_BYTES < e["body_bytes"] < BODY_BYTES + 2048, e
    assert ringmail.verify() == 0
    # Spot-check one body end to end through the tool.
    part = ringmail.client_part(stored[len(stored) // 2]["id"])
    assert len(part) >= BODY_BYTES and part.endswith(b"\r\n")
