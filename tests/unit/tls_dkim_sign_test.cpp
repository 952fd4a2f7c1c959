// tls_dkim_sign_test.cpp — pins tls/dkim_keys.hpp and tls/dkim_sign.hpp: the key table's
// syntax, errors and lookup; the RFC 8463 Appendix A worked example reproduced bit for bit; what
// the signer puts in the DKIM-Signature field; and that the signature does not depend on how the
// message is split into chunks. Independent verification of the signatures is in tests/dkim/
// (python3-dkim).
#include "tls/dkim_sign.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tls/auth.hpp"
#include "tls/dkim_keys.hpp"

namespace ringmail::tls {
namespace {

std::string b64(const uint8_t* p, size_t n) {
    std::string out(base64_encoded_bytes(n), '\0');
    out.resize(base64_encode({reinterpret_cast<const char*>(p), n}, out.data(), out.size()));
    return out;
}

std::vector<uint8_t> unb64(std::string_view s) {
    std::vector<uint8_t> out(s.size());
    size_t n = 0;
    EXPECT_TRUE(base64_decode(s, reinterpret_cast<char*>(out.data()), out.size(), &n));
    out.resize(n);
    return out;
}

// --- RFC 8463 Appendix A ----------------------------------------------------------------------

constexpr std::string_view rfc8463_seed = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
constexpr std::string_view rfc8463_public = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
constexpr std::string_view rfc8463_message =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";
constexpr std::string_view rfc8463_bh = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=";
constexpr std::string_view rfc8463_b =
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";
// Its DKIM-Signature field with the b= value removed, as the signer hashed it.
constexpr std::string_view rfc8463_signature_field =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";

// PKCS#8 PrivateKeyInfo of an Ed25519 seed (RFC 8410 §7), as PEM.
std::string ed25519_pem(const std::vector<uint8_t>& seed) {
    std::string der("\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20", 16);
    der.append(reinterpret_cast<const char*>(seed.data()), seed.size());
    return "-----BEGIN PRIVATE KEY-----\n" +
           b64(reinterpret_cast<const uint8_t*>(der.data()), der.size()) +
           "\n-----END PRIVATE KEY-----\n";
}

TEST(DkimRfc8463, AppendixAKeyBodyHashAndSignature) {
    std::string error;
    const auto key = DkimKey::from_pem(ed25519_pem(unb64(rfc8463_seed)), &error);
    ASSERT_NE(key, nullptr) << error;
    EXPECT_EQ(key->algorithm(), DkimAlgorithm::ed25519_sha256);
    EXPECT_EQ(key->public_key_base64(), rfc8463_public);

    // The streaming signer's body hash is the example's bh=.
    DkimSigner signer;
    signer.feed(rfc8463_message);
    DkimKeyTable empty;
    EXPECT_EQ(signer.prepare(empty, {}), DkimSignStatus::no_key);
    EXPECT_EQ(b64(signer.body_hash().data(), signer.body_hash().size()), rfc8463_bh);

    // Header hash of h=from:to:subject:date:message-id:from:subject:date — the second from,
    // subject and date name no further instance — then the signature field without b= value.
    std::string data;
    const size_t body = rfc8463_message.find("\r\n\r\n") + 2;
    std::string_view headers = rfc8463_message.substr(0, body);
    while (!headers.empty()) {
        const size_t end = headers.find("\r\n") + 2;
        dkim_canon_header_relaxed(headers.substr(0, end), &data);
        data += "\r\n";
        headers.remove_prefix(end);
    }
    dkim_canon_header_relaxed(rfc8463_signature_field, &data);
    uint8_t sig[dkim_signature_max_bytes];
    const size_t n = key->sign(dkim_sha256(data), sig, sizeof sig);
    ASSERT_EQ(n, dkim_ed25519_signature_bytes);
    EXPECT_EQ(b64(sig, n), rfc8463_b);
}

// --- Key table --------------------------------------------------------------------------------

class DkimTableTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        rsa_pem_ = new std::string(DkimKey::generate_pem(DkimAlgorithm::rsa_sha256, 2048));
        ed_pem_ = new std::string(DkimKey::generate_pem(DkimAlgorithm::ed25519_sha256));
        weak_pem_ = new std::string(DkimKey::generate_pem(DkimAlgorithm::rsa_sha256, 768));
    }
    static void TearDownTestSuite() {
        delete rsa_pem_;
        delete ed_pem_;
        delete weak_pem_;
    }
    void SetUp() override {
        std::string tmpl = ::testing::TempDir() + "dkim-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
        write("rsa.pem", *rsa_pem_);
        write("ed.pem", *ed_pem_);
        write("weak.pem", *weak_pem_);
        write("junk.pem", "not a key\n");
    }
    void TearDown() override {
        for (const char* f : {"rsa.pem", "ed.pem", "weak.pem", "junk.pem"}) {
            unlink((dir_ + "/" + f).c_str());
        }
        rmdir(dir_.c_str());
    }
    void write(const std::string& name, const std::string& text) {
        std::ofstream(dir_ + "/" + name, std::ios::binary) << text;
    }
    bool load(DkimKeyTable* t, std::string_view text, std::string* error) {
        return t->load_text(text, "keys", dir_, error);
    }
    std::string load_error(std::string_view text) {
        DkimKeyTable t;
        std::string error;
        EXPECT_FALSE(load(&t, text, &error)) << text;
        return error;
    }

    static std::string* rsa_pem_;
    static std::string* ed_pem_;
    static std::string* weak_pem_;
    std::string dir_;
};
std::string* DkimTableTest::rsa_pem_ = nullptr;
std::string* DkimTableTest::ed_pem_ = nullptr;
std::string* DkimTableTest::weak_pem_ = nullptr;

TEST_F(DkimTableTest, CommentsBlankLinesAndLookupByParent) {
    DkimKeyTable t;
    std::string error;
    ASSERT_TRUE(load(&t,
                     "# signing keys\n\n"
                     "  Example.COM   sel1\trsa-sha256 rsa.pem   # org domain\r\n"
                     "example.com sel2 ed25519-sha256 ed.pem\n"
                     "mail.example.org s ed25519-sha256 ed.pem\n",
                     &error))
        << error;
    EXPECT_EQ(t.size(), 3u);
    DkimKeyMatch m = t.find("example.com");
    ASSERT_EQ(m.count, 2u);
    EXPECT_EQ(m.entries[0]->algorithm, DkimAlgorithm::rsa_sha256);
    EXPECT_EQ(m.entries[0]->selector, "sel1");
    EXPECT_EQ(m.entries[0]->key->bits(), 2048u);
    EXPECT_EQ(m.entries[1]->algorithm, DkimAlgorithm::ed25519_sha256);
    m = t.find("News.Mail.EXAMPLE.com.");
    ASSERT_EQ(m.count, 2u);
    EXPECT_EQ(m.entries[0]->domain, "example.com");
    EXPECT_EQ(t.find("example.org").count, 0u) << "a child never signs for its parent";
    EXPECT_EQ(t.find("x.mail.example.org").count, 1u);
    EXPECT_EQ(t.find("notexample.com").count, 0u);
    EXPECT_EQ(t.find("com").count, 0u);
}

TEST_F(DkimTableTest, ErrorsNameLineAndCause) {
    EXPECT_EQ(load_error("\nexample.com sel rsa-sha256\n"),
              "keys:2: expected DOMAIN SELECTOR ALGORITHM KEYFILE, got 3 fields");
    EXPECT_EQ(load_error("example.com sel rsa-sha1 rsa.pem\n"),
              "keys:1: unknown algorithm 'rsa-sha1' (rsa-sha256 or ed25519-sha256)");
    EXPECT_EQ(load_error("exa..mple.com sel rsa-sha256 rsa.pem\n"),
              "keys:1: bad domain 'exa..mple.com'");
    EXPECT_EQ(load_error("example.com se/l rsa-sha256 rsa.pem\n"), "keys:1: bad selector 'se/l'");
    EXPECT_EQ(load_error("example.com sel rsa-sha256 ed.pem\n"),
              "keys:1: ed.pem holds a ed25519-sha256 key, not rsa-sha256");
    EXPECT_EQ(load_error("a.com s rsa-sha256 rsa.pem\na.com t rsa-sha256 rsa.pem\n"),
              "keys:2: second rsa-sha256 key for a.com");
    EXPECT_NE(load_error("example.com sel rsa-sha256 missing.pem\n").find("keys:1: cannot open"),
              std::string::npos);
    EXPECT_NE(load_error("example.com sel rsa-sha256 junk.pem\n")
                  .find("keys:1: junk.pem: not a PEM private key"),
              std::string::npos);
}

TEST_F(DkimTableTest, WeakRsaKeyRefused) {
    EXPECT_EQ(load_error("example.com sel rsa-sha256 weak.pem\n"),
              "keys:1: weak.pem: RSA key of 768 bits (allowed 1024-4096)");
}

TEST_F(DkimTableTest, DnsRecords) {
    std::string error;
    const auto ed = DkimKey::from_pem(*ed_pem_, &error);
    ASSERT_NE(ed, nullptr) << error;
    EXPECT_EQ(ed->dns_record().rfind("v=DKIM1; k=ed25519; p=", 0), 0u);
    EXPECT_EQ(ed->public_key_base64().size(), 44u);
    const auto rsa = DkimKey::from_pem(*rsa_pem_, &error);
    ASSERT_NE(rsa, nullptr) << error;
    EXPECT_EQ(rsa->dns_record().rfind(
                  "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", 0),
              0u);
}

// --- Signer -----------------------------------------------------------------------------------

class DkimSignerTest : public DkimTableTest {
  protected:
    void SetUp() override {
        DkimTableTest::SetUp();
        std::string error;
        ASSERT_TRUE(load(&table_,
                         "example.com rsa rsa-sha256 rsa.pem\n"
                         "example.com ed ed25519-sha256 ed.pem\n"
                         "only-ed.example ed ed25519-sha256 ed.pem\n",
                         &error))
            << error;
    }
    // Signs text fed in pieces of chunk bytes (0: whole); returns the fields, or the status.
    std::string sign(std::string_view text, size_t chunk = 0, DkimSignStatus* status = nullptr,
                     DkimSignOptions options = {1700000000, 0}) {
        signer_.reset();
        if (chunk == 0) chunk = text.size() + 1;
        for (size_t off = 0; off < text.size(); off += chunk)
            signer_.feed(text.substr(off, chunk));
        std::string out;
        const DkimSignStatus s = signer_.sign_inline(table_, options, &out);
        if (status != nullptr) *status = s;
        return out;
    }
    DkimSignStatus status_of(std::string_view text) {
        DkimSignStatus s;
        (void)sign(text, 0, &s);
        return s;
    }

    DkimKeyTable table_;
    DkimSigner signer_;
};

constexpr std::string_view sample =
    "Received: from client by relay\r\n"
    "From: Joe <joe@Mail.Example.com>\r\n"
    "To: a@example.net,\r\n\tb@example.net\r\n"
    "Subject:  folded\r\n   subject  \r\n"
    "X-Mailer: not signed\r\n"
    "Date: Tue, 8 Dec 2026 04:00:00 +0000\r\n"
    "Message-ID: <1@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Body  line \r\n..dot\r\n\xc3\xa4\r\n\r\n\r\n";

TEST_F(DkimSignerTest, DualSignatureFields) {
    DkimSignStatus s;
    const std::string fields = sign(sample, 0, &s);
    ASSERT_EQ(s, DkimSignStatus::ok);
    EXPECT_EQ(signer_.from_domain(), "mail.example.com");
    ASSERT_EQ(signer_.signature_count(), 2u);
    const size_t second = fields.find("DKIM-Signature:", 1);
    ASSERT_NE(second, std::string::npos);
    const std::string rsa = fields.substr(0, second);
    const std::string ed = fields.substr(second);
    EXPECT_EQ(
        rsa.rfind("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=rsa;", 0),
        0u)
        << rsa;
    EXPECT_NE(ed.find("a=ed25519-sha256;"), std::string::npos);
    for (const std::string& f : {rsa, ed}) {
        std::string flat;  // without folding white space
        for (char c : f) {
            if (c != '\r' && c != '\n' && c != ' ') flat += c;
        }
        EXPECT_NE(flat.find(";t=1700000000;"), std::string::npos) << f;
        EXPECT_EQ(flat.find("x="), std::string::npos) << f;
        EXPECT_NE(flat.find("h=from:to:subject:date:message-id:mime-version:content-type:from;"),
                  std::string::npos)
            << f;
        EXPECT_NE(flat.find(";bh="), std::string::npos);
        // Every line at most 78 columns, continuation lines start with white space.
        size_t start = 0;
        for (size_t end; (end = f.find("\r\n", start)) != std::string::npos; start = end + 2) {
            EXPECT_LE(end - start, dkim_header_line_max_columns) << f;
            if (start != 0) {
                EXPECT_EQ(f[start], ' ');
            }
        }
        EXPECT_EQ(start, f.size()) << "ends in CRLF";
    }
}

TEST_F(DkimSignerTest, ExpiryAndParentDomain) {
    const std::string f = sign(sample, 0, nullptr, {1700000000, 3600});
    EXPECT_NE(f.find(" x=1700003600;"), std::string::npos) << f;
    EXPECT_NE(f.find(" d=example.com;"), std::string::npos);
}

// Same text, any chunk boundaries: byte-identical fields (PKCS#1 v1.5 and Ed25519 are both
// deterministic). Every split point, then fixed chunk sizes.
TEST_F(DkimSignerTest, ChunkSplitInvariance) {
    const std::string whole = sign(sample);
    ASSERT_FALSE(whole.empty());
    const DkimDigest d0 = signer_.header_digest(1);
    for (size_t i = 1; i < sample.size(); ++i) {
        signer_.reset();
        signer_.feed(sample.substr(0, i));
        signer_.feed(sample.substr(i));
        ASSERT_EQ(signer_.prepare(table_, {1700000000, 0}), DkimSignStatus::ok);
        ASSERT_EQ(signer_.header_digest(1), d0) << "split at " << i;
    }
    for (size_t chunk : {1u, 2u, 3u, 7u, 64u})
        EXPECT_EQ(sign(sample, chunk), whole) << chunk;
}

TEST_F(DkimSignerTest, UnsignedHeadersDoNotMatterSignedOnesDo) {
    const std::string base = sign(sample);
    std::string extra(sample);
    extra.insert(0, "X-Spam: whatever\r\n");
    EXPECT_EQ(sign(extra), base);
    std::string changed(sample);
    changed.replace(changed.find("folded"), 6, "Folded");
    EXPECT_NE(sign(changed), base);
    std::string body(sample);
    body.replace(body.find("Body"), 4, "body");
    EXPECT_NE(sign(body), base);
    std::string spaces(sample);
    spaces.replace(spaces.find("Body  line"), 10, "Body \t line");
    EXPECT_EQ(sign(spaces), base) << "relaxed: white-space runs are equal";
}

TEST_F(DkimSignerTest, FromRules) {
    EXPECT_EQ(status_of("To: a@example.com\r\n\r\nx\r\n"), DkimSignStatus::no_from);
    EXPECT_EQ(status_of("From: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n"),
              DkimSignStatus::multiple_from);
    EXPECT_EQ(status_of("From: undisclosed\r\n\r\nx\r\n"), DkimSignStatus::bad_from);
    EXPECT_EQ(status_of("From: a@example.com, b@example.com\r\n\r\nx\r\n"),
              DkimSignStatus::bad_from);
    EXPECT_EQ(status_of("From: a@[192.0.2.1]\r\n\r\nx\r\n"), DkimSignStatus::bad_from);
    EXPECT_EQ(status_of("From: a@other.example\r\n\r\nx\r\n"), DkimSignStatus::no_key);
    EXPECT_EQ(status_of("From: \"x@evil.example\" <a@example.com>\r\n\r\nx\r\n"),
              DkimSignStatus::ok);
    EXPECT_EQ(signer_.from_domain(), "example.com");
    EXPECT_EQ(status_of("FROM : a@example.com (Joe)\r\n\r\nx\r\n"), DkimSignStatus::ok);
    EXPECT_EQ(status_of("From: a@only-ed.example\r\n"), DkimSignStatus::ok) << "no body at all";
    EXPECT_EQ(signer_.signature_count(), 1u);
}

TEST_F(DkimSignerTest, SignedHeadersAreBounded) {
    std::string many = "From: a@example.com\r\n";
    for (size_t i = 0; i < dkim_signed_fields_max; ++i)
        many += "To: x@example.net\r\n";
    EXPECT_EQ(status_of(many + "\r\nx\r\n"), DkimSignStatus::headers_too_large);
    const std::string huge =
        "From: a@example.com\r\nSubject: " + std::string(dkim_signed_headers_max_bytes, 'x') +
        "\r\n\r\nx\r\n";
    EXPECT_EQ(status_of(huge), DkimSignStatus::headers_too_large);
    // A huge header that is not signed costs nothing.
    const std::string unsigned_huge =
        "From: a@example.com\r\nX-Big: " + std::string(4 * dkim_signed_headers_max_bytes, 'x') +
        "\r\n\r\nx\r\n";
    EXPECT_EQ(status_of(unsigned_huge), DkimSignStatus::ok);
}

}  // namespace
}  // namespace ringmail::tls
