"""Cross-verification of ringmail's DKIM signatures by an independent implementation.

Every edge-case message is signed by `ringmail-dkim sign` (the relay's signer, tls/dkim_sign.hpp)
with an RSA and an Ed25519 key at once, fed whole and in small chunks; Debian's python3-dkim
(dkimpy) must verify each signature, with the public keys served through dnsfunc (the DNS side
is tested with the integration suite). A tampered body must fail, so a verifier that accepted
anything would be caught too. Fails, never skips, when dkimpy or the tool is missing.
"""
import os
import subprocess
import time

import dkim
import pytest

TOOL = os.environ.get("RINGMAIL_DKIM_BIN", "build/ringmail-dkim")

HEAD = (b"From: Joe SixPack <joe@football.example.com>\r\n"
        b"To: Suzie Q <suzie@shopping.example.net>\r\n"
        b"Subject: Is dinner ready?\r\n"
        b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
        b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n")

MESSAGES = {
    "plain": HEAD + b"\r\nHi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n",
    "folded_headers": (b"From: Joe SixPack\r\n\t<joe@football.example.com>\r\n"
                       b"To: a@example.net,\r\n  b@example.net,\r\n\t c@example.net\r\n"
                       b"Subject: a subject\r\n that is\r\n\tfolded  three   times\r\n"
                       b"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n\r\nbody\r\n"),
    "trailing_whitespace": (b"From: joe@football.example.com  \t\r\n"
                            b"Subject:   spaced \t out\t \r\n"
                            b"\r\nline with trailing spaces   \r\n\ttab\t\tled line\t\r\n"
                            b"  \r\nend \t \r\n"),
    "empty_body": HEAD + b"\r\n",
    "no_body_separator": HEAD,
    "body_without_final_crlf": HEAD + b"\r\nlast line has no CRLF  ",
    "eight_bit": (b"From: =?utf-8?q?J=C3=B6rg?= <joerg@football.example.com>\r\n"
                  b"Subject: gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n"
                  b"Content-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Transfer-Encoding: 8bit\r\n"
                  b"\r\n\xc3\xa4\xc3\xb6\xc3\xbc \xe2\x82\xac 100\r\nLatin-1 \xe9\xe8\r\n"),
    "long_lines": HEAD + b"\r\n" + b"x" * 5000 + b"\r\n" + (b"word " * 400) + b"\r\n",
    "dot_lines": HEAD + b"\r\n.\r\n..\r\n.leading dot\r\n...three\r\n. \r\n",
    "many_trailing_blank_lines": HEAD + b"\r\ntext\r\n" + b"\r\n" * 50 + b" \t\r\n" * 5,
    "blank_lines_inside": HEAD + b"\r\n\r\n\r\na\r\n\r\n \r\n\r\nb\r\n",
    "duplicate_and_mixed_case": (b"FROM: joe@football.example.com\r\n"
                                 b"to: one@example.net\r\nTO: two@example.net\r\n"
                                 b"Received: from x by y\r\nsubject: Two Tos\r\n"
                                 b"mime-version: 1.0\r\nReferences: <a@b> <c@d>\r\n"
                                 b"In-Reply-To: <c@d>\r\nList-Unsubscribe: <mailto:u@example.com>\r\n"
                                 b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n"),
    "subdomain_signed_by_parent": (b"From: news@mail.football.example.com\r\nSubject: parent d=\r\n"
                                   b"\r\nsigned with d=football.example.com\r\n"),
}


def run(*args):
    return subprocess.run([TOOL, *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkim")
    # Three PEM forms: RSA PKCS#1 (openssl -traditional), RSA PKCS#8, Ed25519 PKCS#8 as
    # `openssl genpkey -algorithm ed25519` writes it.
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", d / "rsa8.pem"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", d / "rsa8.pem", "-traditional", "-out",
                    d / "rsa1.pem"], check=True, capture_output=True)
    assert b"BEGIN RSA PRIVATE KEY" in (d / "rsa1.pem").read_bytes()
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", d / "ed.pem"],
                   check=True, capture_output=True)
    (d / "rsa_other.pem").write_bytes(run("genkey", "--algorithm", "rsa-sha256", "--bits", "1024"))
    table = d / "keys"
    table.write_text("# domain selector algorithm key\n"
                     "football.example.com rsa2048 rsa-sha256 rsa1.pem\n"
                     "football.example.com ed ed25519-sha256 ed.pem\n"
                     "\n"
                     "example.org pkcs8 rsa-sha256 rsa8.pem   # a second domain\n")
    records = {}
    for line in run("dns", "--keys", str(table)).decode().splitlines():
        name, txt, value = line.split(" ", 2)
        assert txt == "TXT"
        records[(name + ".").encode()] = value.strip('"').encode()
    assert len(records) == 3
    return table, records


def verifies(d, i, records):
    """dkimpy's verify returns False or raises, depending on the fault."""
    try:
        return d.verify(idx=i, dnsfunc=lambda name, timeout=5: records.get(name))
    except dkim.DKIMException:
        return False


def verify_all(signed, records):
    """Verifies every DKIM-Signature of signed; returns how many there were."""
    count = signed.count(b"DKIM-Signature:")
    d = dkim.DKIM(signed)
    for i in range(count):
        assert d.verify(idx=i, dnsfunc=lambda name, timeout=5: records.get(name)), \
            f"signature {i} failed"
    return count


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_dkimpy_verifies_rsa_and_ed25519(name, keys, tmp_path):
    table, records = keys
    path = tmp_path / "msg"
    path.write_bytes(MESSAGES[name])
    now = str(int(time.time()))
    whole = run("sign", "--keys", str(table), "--time", now, "--expire", "86400", str(path))
    for chunk in ("1", "7", "4096"):
        split = run("sign", "--keys", str(table), "--time", now, "--expire", "86400",
                    "--chunk", chunk, str(path))
        assert split == whole, f"chunk size {chunk} changed the signature"
    assert whole.endswith(MESSAGES[name])
    head = whole[:len(whole) - len(MESSAGES[name])]
    for line in head.split(b"\r\n"):
        assert len(line) <= 78, line
    assert b"a=rsa-sha256" in head and b"a=ed25519-sha256" in head
    assert b"d=football.example.com" in head
    # SMTP cannot carry a text that does not end in CRLF (DATA ends with CRLF "." CRLF; a
    # client sending a BDAT body without one adds it for DATA), so receivers verify the text with
    # the CRLF: the signer hashes the last line as such a receiver will see it. (dkimpy alone
    # keeps trailing white space of an unterminated last line; OpenDKIM drops it.)
    received = whole if whole.endswith(b"\r\n") else whole + b"\r\n"
    assert verify_all(received, records) == 2


def test_tampered_body_fails(keys, tmp_path):
    table, records = keys
    path = tmp_path / "msg"
    path.write_bytes(MESSAGES["plain"])
    signed = run("sign", "--keys", str(table), str(path))
    tampered = signed.replace(b"We lost", b"We won")
    d = dkim.DKIM(tampered)
    for i in range(2):
        assert not verifies(d, i, records)


def test_added_from_fails(keys, tmp_path):
    """From is over-signed: a second From added after signing breaks the signature."""
    table, records = keys
    path = tmp_path / "msg"
    path.write_bytes(MESSAGES["plain"])
    signed = run("sign", "--keys", str(table), str(path))
    cut = signed.index(b"From: Joe")
    forged = signed[:cut] + b"From: evil@attacker.example\r\n" + signed[cut:]
    d = dkim.DKIM(forged)
    assert not verifies(d, 0, records)
    assert not verifies(d, 1, records)


def test_pkcs8_rsa_key_and_other_domain(keys, tmp_path):
    table, records = keys
    path = tmp_path / "msg"
    path.write_bytes(b"From: a@EXAMPLE.org\r\nSubject: x\r\n\r\nbody\r\n")
    signed = run("sign", "--keys", str(table), str(path))
    assert b"s=pkcs8" in signed
    assert verify_all(signed, records) == 1


def test_unlisted_domain_is_not_signed(keys, tmp_path):
    table, _ = keys
    path = tmp_path / "msg"
    path.write_bytes(b"From: a@example.com\r\n\r\nbody\r\n")
    r = subprocess.run([TOOL, "sign", "--keys", str(table), str(path)], capture_output=True)
    assert r.returncode == 1
    assert b"no key" in r.stderr
