"""test_swaks.py — swaks, the SMTP test tool operators reach for, against the real daemon.

Pins: swaks transactions (plain and with --pipeline) succeed (exit 0), and each is stored once
under the queue id of its 250 with the envelope swaks gave and its content intact.
"""

import subprocess

import pytest

SWAKS_TIMEOUT_S = 60


def swaks(d, *args):
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{d.port}", "--helo", "swaks.test",
                        *args], capture_output=True, timeout=SWAKS_TIMEOUT_S)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, f"swaks exited {r.returncode}:\n{out}\n{r.stderr.decode()}"
    return out


def queue_ids(helpers, transcript):
    return helpers.QUEUED_TEXT_RE.findall(
        "\n".join(ln for ln in transcript.splitlines() if "<-" in ln and "250" in ln))


@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
def test_swaks_body(ringmail, helpers, pipeline):
    extra = ["--pipeline"] if pipeline else []
    out = swaks(ringmail, "--from", "sender@example.com", "--to", "rcpt@example.net",
                "--header", "Subject: swaks test", "--body", "hello from swaks", *extra)
    if pipeline:
        assert "PIPELINING" in out
    ids = queue_ids(helpers, out)
    assert len(ids) == 1, out
    e = ringmail.spool_by_id()
    assert list(e) == ids
    entry = e[ids[0]]
    assert entry["mail_from"] == "sender@example.com"
    assert [r["address"] for r in entry["rcpts"]] == ["rcpt@example.net"]
    assert entry["helo"] == "swaks.test"
    part = ringmail.client_part(ids[0])
    assert b"\r\nSubject: swaks test\r\n" in part
    # swaks ends its text with an extra CRLF of its own before the final dot.
    assert part.rstrip(b"\r\n").endswith(b"\r\n\r\nhello from swaks")


def test_swaks_several_recipients_pipelined(ringmail, helpers):
    rcpts = [f"r{i}@example.net" for i in range(5)]
    out = swaks(ringmail, "--pipeline", "--from", "s@example.com", "--to", ",".join(rcpts),
                "--body", "to five")
    ids = queue_ids(helpers, out)
    assert len(ids) == 1, out
    entry = ringmail.spool_by_id()[ids[0]]
    assert [r["address"] for r in entry["rcpts"]] == rcpts


def test_swaks_data_file_exact(ringmail, helpers, tmp_path):
    content = (b"From: s@example.com\r\nTo: r@example.net\r\nSubject: exact\r\n\r\n"
               b".starts with a dot\r\n..two\r\n.\r\nlast line\r\n")
    f = tmp_path / "data.eml"
    f.write_bytes(content)
    out = swaks(ringmail, "--from", "s@example.com", "--to", "r@example.net", "--data", str(f))
    ids = queue_ids(helpers, out)
    assert len(ids) == 1, out
    part = ringmail.client_part(ids[0])
    # swaks sends the file as it is (dot-stuffed), then CRLF "." CRLF of its own.
    assert part.startswith(content) and part.rstrip(b"\r\n") == content.rstrip(b"\r\n")


def test_swaks_many_messages(ringmail, helpers):
    seen = []
    for i in range(5):
        out = swaks(ringmail, "--from", f"s{i}@example.com", "--to", "r@example.net", "--body",
                    f"message {i}", *(["--pipeline"] if i % 2 else []))
        seen += queue_ids(helpers, out)
    assert len(set(seen)) == 5
    by_id = ringmail.spool_by_id()
    assert set(by_id) == set(seen)
    for i, qid in enumerate(seen):
        assert by_id[qid]["mail_from"] == f"s{i}@example.com"
        assert ringmail.client_part(qid).rstrip(b"\r\n").endswith(f"message {i}".encode())
