// tls_dkim_canon_test.cpp — pins tls/dkim_canon.hpp: DKIM relaxed canonicalization of header
// fields (RFC 6376 §3.4.2) and of the body (§3.4.4), one rule per test, and the body hash's
// independence from how the body is split into chunks.
#include "tls/dkim_canon.hpp"

#include <gtest/gtest.h>

#include <string>

#include "tls/auth.hpp"

namespace ringmail::tls {
namespace {

std::string canon_body(std::string_view body) {
    RelaxedBodyHasher h;
    std::string out;
    h.set_tee(&out);
    h.feed(body);
    (void)h.finish();
    return out;
}

std::string b64(const DkimDigest& d) {
    char buf[64];
    const size_t n =
        base64_encode({reinterpret_cast<const char*>(d.data()), d.size()}, buf, sizeof buf);
    return std::string(buf, n);
}

std::string body_hash(std::string_view body) {
    RelaxedBodyHasher h;
    h.feed(body);
    return b64(h.finish());
}

std::string canon_header(std::string_view field) {
    std::string out;
    dkim_canon_header_relaxed(field, &out);
    return out;
}

TEST(DkimSha256, KnownAnswers) {
    EXPECT_EQ(b64(dkim_sha256("")), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    EXPECT_EQ(b64(dkim_sha256("abc")), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
}

TEST(DkimHeaderRelaxed, NameLowerCasedAndSpaceAroundColonRemoved) {
    EXPECT_EQ(canon_header("SubJect : Hello\r\n"), "subject:Hello");
    EXPECT_EQ(canon_header("To:\t a@b"), "to:a@b");
}

TEST(DkimHeaderRelaxed, FoldedValueIsUnfolded) {
    EXPECT_EQ(canon_header("Subject: a\r\n b\r\n\t\tc\r\n"), "subject:a b c");
}

TEST(DkimHeaderRelaxed, WhiteSpaceRunsBecomeOneSpaceAndTrailingGoes) {
    EXPECT_EQ(canon_header("Subject:  x \t y\t \r\n"), "subject:x y");
    EXPECT_EQ(canon_header("Subject:\r\n"), "subject:");
}

TEST(DkimHeaderRelaxed, EightBitBytesPassUnchanged) {
    EXPECT_EQ(canon_header("Subject: gr\xc3\xbc\xc3\x9f  dich\r\n"),
              "subject:gr\xc3\xbc\xc3\x9f dich");
}

TEST(DkimBodyRelaxed, EmptyBodyIsEmpty) {
    EXPECT_EQ(canon_body(""), "");
    EXPECT_EQ(body_hash(""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    EXPECT_EQ(canon_body("\r\n"), "");
    EXPECT_EQ(canon_body("\r\n\r\n \t\r\n"), "");
}

TEST(DkimBodyRelaxed, TrailingWhiteSpaceRemoved) {
    EXPECT_EQ(canon_body("a \t\r\nb\t\r\n"), "a\r\nb\r\n");
}

TEST(DkimBodyRelaxed, WhiteSpaceRunsReducedToOneSpace) {
    EXPECT_EQ(canon_body("a  \t b\r\n\t\tc\r\n"), "a b\r\n c\r\n");
}

TEST(DkimBodyRelaxed, TrailingEmptyLinesRemovedInnerOnesKept) {
    EXPECT_EQ(canon_body("a\r\n\r\n \r\nb\r\n\r\n\r\n  \r\n\r\n"), "a\r\n\r\n\r\nb\r\n");
}

TEST(DkimBodyRelaxed, ManyTrailingEmptyLines) {
    std::string body = "text\r\n";
    for (int i = 0; i < 10000; ++i)
        body += "\r\n";
    EXPECT_EQ(canon_body(body), "text\r\n");
}

TEST(DkimBodyRelaxed, LastLineWithoutCrlfGetsOne) {
    EXPECT_EQ(canon_body("a\r\nlast"), "a\r\nlast\r\n");
    // Its trailing white space goes too: it is the line a receiver sees once DATA ends it.
    EXPECT_EQ(canon_body("a\r\nlast  \t"), "a\r\nlast\r\n");
    EXPECT_EQ(body_hash("a\r\nlast  "), body_hash("a\r\nlast\r\n"));
}

TEST(DkimBodyRelaxed, LinesStartingWithDotsAreOrdinary) {
    // The spool holds the text after dot-unstuffing; the signer hashes it as stored.
    EXPECT_EQ(canon_body(".\r\n..x\r\n. \r\n"), ".\r\n..x\r\n.\r\n");
}

TEST(DkimBodyRelaxed, EightBitBytesPassUnchanged) {
    EXPECT_EQ(canon_body("\xe4\xf6\xfc  \xff\r\n"), "\xe4\xf6\xfc \xff\r\n");
}

TEST(DkimBodyRelaxed, LongLinesHashedWhole) {
    std::string line(100000, 'x');
    line[500] = ' ';
    line[501] = ' ';
    std::string expect = line.substr(0, 501) + line.substr(502) + "\r\n";
    EXPECT_EQ(canon_body(line + "   \r\n"), expect);
}

TEST(DkimBodyRelaxed, BareCrIsAnOrdinaryByte) {
    EXPECT_EQ(canon_body("a\rb \r\n"), "a\rb\r\n");
    EXPECT_EQ(canon_body("a \r"), "a \r\r\n");
}

// The hash may not depend on the chunk boundaries: every two-way split, every three-way split
// of a shorter text, and one byte at a time all give the one-piece digest.
TEST(DkimBodyRelaxed, ChunkSplitInvariance) {
    const std::string body =
        "Hi.\r\n\r\nWe  lost\t the game. \r\n \t \r\n..dot\r\n\xe9t\xe9  \r\nx\ry \r\n\r\n\r\n  ";
    const std::string whole = body_hash(body);
    for (size_t i = 0; i <= body.size(); ++i) {
        RelaxedBodyHasher h;
        h.feed(std::string_view(body).substr(0, i));
        h.feed(std::string_view(body).substr(i));
        ASSERT_EQ(b64(h.finish()), whole) << "split at " << i;
    }
    const std::string shorter = body.substr(0, 40);
    const std::string shorter_hash = body_hash(shorter);
    for (size_t i = 0; i <= shorter.size(); ++i) {
        for (size_t j = i; j <= shorter.size(); ++j) {
            RelaxedBodyHasher h;
            h.feed(std::string_view(shorter).substr(0, i));
            h.feed(std::string_view(shorter).substr(i, j - i));
            h.feed(std::string_view(shorter).substr(j));
            ASSERT_EQ(b64(h.finish()), shorter_hash) << i << "," << j;
        }
    }
    RelaxedBodyHasher h;
    for (char c : body)
        h.feed(std::string_view(&c, 1));
    EXPECT_EQ(b64(h.finish()), whole);
}

TEST(DkimBodyRelaxed, ResetStartsAfresh) {
    RelaxedBodyHasher h;
    h.feed("garbage  \r\n\r\npending");
    h.reset();
    h.feed("a\r\n");
    EXPECT_EQ(b64(h.finish()), body_hash("a\r\n"));
    h.reset();
    EXPECT_EQ(b64(h.finish()), body_hash(""));
}

}  // namespace
}  // namespace ringmail::tls
