// smtp_dsn_test.cpp — the RFC 3464 bounce builder: the message is parsed back (headers,
// multipart/report parts, delivery-status fields) and checked field by field; plus the rules
// that protect it: CRLF only, no line over 998 octets, a boundary absent from the content,
// remote text unable to inject fields, and the original headers cut at their limit.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "net/smtp/smtp_dsn.hpp"

namespace ringmail::smtp {
namespace {

using namespace std::string_literals;
using Fields = std::vector<std::pair<std::string, std::string>>;

constexpr int64_t kArrival = 1700000000;  // Tue, 14 Nov 2023 22:13:20 +0000
constexpr int64_t kNow = 1700003600;

// Lines of a CRLF text (it must not contain a bare CR or LF).
std::vector<std::string> crlf_lines(std::string_view t) {
    std::vector<std::string> r;
    size_t from = 0;
    for (size_t at; (at = t.find("\r\n", from)) != std::string_view::npos; from = at + 2)
        r.emplace_back(t.substr(from, at - from));
    EXPECT_EQ(from, t.size()) << "text does not end in CRLF";
    return r;
}

// A header block (fields with folding) → name/value pairs, unfolded (RFC 5322 §2.2.3).
Fields parse_fields(std::string_view block) {
    Fields f;
    for (const std::string& line : crlf_lines(block)) {
        if (line.empty()) continue;
        if ((line[0] == ' ' || line[0] == '\t') && !f.empty()) {
            f.back().second += line;
            continue;
        }
        const size_t colon = line.find(':');
        EXPECT_NE(colon, std::string::npos) << "not a field: " << line;
        if (colon == std::string::npos) continue;
        std::string value = line.substr(colon + 1);
        if (!value.empty() && value[0] == ' ') value.erase(0, 1);
        f.emplace_back(line.substr(0, colon), value);
    }
    return f;
}

std::string field(const Fields& f, std::string_view name) {
    for (const auto& [n, v] : f)
        if (n == name) return v;
    return "<absent>";
}

struct Part {
    Fields headers;
    std::string content;
};

struct Parsed {
    Fields headers;
    std::string boundary;
    std::vector<Part> parts;
};

Parsed parse(const std::string& text) {
    Parsed p;
    const size_t end = text.find("\r\n\r\n");
    EXPECT_NE(end, std::string::npos);
    p.headers = parse_fields(text.substr(0, end + 2));
    const std::string ct = field(p.headers, "Content-Type");
    const size_t b = ct.find("boundary=\"");
    EXPECT_NE(b, std::string::npos);
    p.boundary = ct.substr(b + 10, ct.find('"', b + 10) - b - 10);
    const std::string delim = "\r\n--" + p.boundary;
    size_t at = text.find(delim, end);
    while (at != std::string::npos) {
        const size_t start = at + delim.size();
        if (text.compare(start, 2, "--") == 0) {
            EXPECT_EQ(text.substr(start), "--\r\n");
            break;
        }
        const size_t next = text.find(delim, start);
        EXPECT_NE(next, std::string::npos);
        const std::string body = text.substr(start + 2, next - start - 2);
        const size_t hend = body.find("\r\n\r\n");
        Part part;
        part.headers = parse_fields(body.substr(0, hend + 2));
        part.content = body.substr(hend + 4);
        p.parts.push_back(part);
        at = next;
    }
    return p;
}

// The delivery-status body: blocks separated by empty lines.
std::vector<Fields> status_blocks(const std::string& content) {
    std::vector<Fields> r;
    size_t from = 0;
    while (from < content.size()) {
        size_t at = content.find("\r\n\r\n", from);
        const size_t stop = at == std::string::npos ? content.size() : at + 2;
        r.push_back(parse_fields(content.substr(from, stop - from)));
        from = at == std::string::npos ? content.size() : at + 4;
    }
    return r;
}

const std::string kOriginal =
    "Received: from client.example ([192.0.2.7])\r\n\tby mx.test (ringmail) with ESMTP id "
    "0000000000001234\r\n\tfor <u@relay.test>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "From: Sender <sender@origin.test>\r\nSubject: hello\r\nMessage-ID: <m1@origin.test>\r\n"
    "\r\nbody line 1\r\nbody line 2\r\n";

struct Fixture {
    std::vector<DsnRecipient> rcpts;
    DsnInput in;
    Fixture() {
        rcpts.push_back({"a@dest.test", "rfc822;A+2Bx@dest.test", DsnAction::failed, "5.1.1",
                         "mx.dest.test", "550 5.1.1 <a@dest.test>: unknown user", kNow - 60});
        rcpts.push_back({"b@other.test", "", DsnAction::failed, "5.4.4", "", "", 0});
        in.reporting_mta = "mx.test";
        in.sender = "sender@origin.test";
        in.queue_id = 0x1234;
        in.dsn_id = 0xabcd;
        in.arrival_unix_s = kArrival;
        in.now_unix_s = kNow;
        in.recipients = rcpts;
        in.original_text = kOriginal;
    }
};

void expect_well_formed(const std::string& text) {
    for (size_t i = 0; i < text.size(); ++i) {
        const bool lf_ok = text[i] != '\n' || (i > 0 && text[i - 1] == '\r');
        const bool cr_ok = text[i] != '\r' || (i + 1 < text.size() && text[i + 1] == '\n');
        ASSERT_TRUE(lf_ok && cr_ok) << "bare CR or LF at " << i;
    }
    for (const std::string& line : crlf_lines(text))
        ASSERT_LE(line.size(), 998u);
}

TEST(SmtpDsn, ShouldNeverBounceToTheNullSender) {
    EXPECT_FALSE(should_bounce(""));
    EXPECT_TRUE(should_bounce("a@b.test"));
}

TEST(SmtpDsn, DateFormat) {
    EXPECT_EQ(format_rfc5322_date(kArrival), "Tue, 14 Nov 2023 22:13:20 +0000");
    EXPECT_EQ(format_rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
}

TEST(SmtpDsn, MessageHeadersAndPartStructure) {
    Fixture f;
    const Dsn d = build_dsn(f.in);
    expect_well_formed(d.text);
    const Parsed p = parse(d.text);
    EXPECT_EQ(field(p.headers, "From"), "MAILER-DAEMON@mx.test (Mail Delivery System)");
    EXPECT_EQ(field(p.headers, "To"), "<sender@origin.test>");
    EXPECT_EQ(field(p.headers, "Subject"), "Undelivered Mail Returned to Sender");
    EXPECT_EQ(field(p.headers, "Date"), "Tue, 14 Nov 2023 23:13:20 +0000");
    EXPECT_EQ(field(p.headers, "Message-ID"), "<000000000000abcd.0000000000001234@mx.test>");
    EXPECT_EQ(field(p.headers, "Auto-Submitted"), "auto-replied");
    EXPECT_EQ(field(p.headers, "MIME-Version"), "1.0");
    EXPECT_EQ(field(p.headers, "Content-Type"),
              "multipart/report; report-type=delivery-status;\tboundary=\"" + p.boundary + "\"");
    ASSERT_EQ(p.parts.size(), 3u);
    EXPECT_EQ(field(p.parts[0].headers, "Content-Type"), "text/plain; charset=utf-8");
    EXPECT_EQ(field(p.parts[1].headers, "Content-Type"), "message/delivery-status");
    EXPECT_EQ(field(p.parts[2].headers, "Content-Type"), "text/rfc822-headers");
    EXPECT_NE(p.parts[0].content.find("<a@dest.test>: host mx.dest.test said: 550 5.1.1"),
              std::string::npos);
    EXPECT_NE(p.parts[0].content.find("<b@other.test>: 5.4.4"), std::string::npos);
    EXPECT_FALSE(d.eight_bit);
}

TEST(SmtpDsn, DeliveryStatusFields) {
    Fixture f;
    const Parsed p = parse(build_dsn(f.in).text);
    ASSERT_EQ(p.parts.size(), 3u);
    const auto blocks = status_blocks(p.parts[1].content);
    ASSERT_EQ(blocks.size(), 3u);
    EXPECT_EQ(blocks[0], (Fields{{"Reporting-MTA", "dns; mx.test"},
                                 {"X-Ringmail-Queue-ID", "0000000000001234"},
                                 {"Arrival-Date", "Tue, 14 Nov 2023 22:13:20 +0000"}}));
    EXPECT_EQ(blocks[1], (Fields{{"Final-Recipient", "rfc822; a@dest.test"},
                                 {"Original-Recipient", "rfc822; A+x@dest.test"},
                                 {"Action", "failed"},
                                 {"Status", "5.1.1"},
                                 {"Remote-MTA", "dns; mx.dest.test"},
                                 {"Diagnostic-Code", "smtp; 550 5.1.1 <a@dest.test>: unknown user"},
                                 {"Last-Attempt-Date", "Tue, 14 Nov 2023 23:12:20 +0000"}}));
    EXPECT_EQ(blocks[2], (Fields{{"Final-Recipient", "rfc822; b@other.test"},
                                 {"Action", "failed"},
                                 {"Status", "5.4.4"}}));
}

TEST(SmtpDsn, OriginalHeadersOnlyWithOurReceivedFirst) {
    Fixture f;
    const Parsed p = parse(build_dsn(f.in).text);
    ASSERT_EQ(p.parts.size(), 3u);
    EXPECT_EQ(p.parts[2].content, kOriginal.substr(0, kOriginal.find("\r\n\r\n") + 2));
    EXPECT_EQ(p.parts[2].content.find("body line"), std::string::npos);
    EXPECT_EQ(p.parts[2].content.rfind("Received: ", 0), 0u);
}

TEST(SmtpDsn, DelayedNoticeHasItsOwnSubjectAndAction) {
    Fixture f;
    for (auto& r : f.rcpts)
        r.action = DsnAction::delayed;
    const Parsed p = parse(build_dsn(f.in).text);
    EXPECT_EQ(field(p.headers, "Subject"), "Delayed Mail (still being retried)");
    EXPECT_EQ(field(status_blocks(p.parts[1].content)[1], "Action"), "delayed");
}

TEST(SmtpDsn, BoundaryNeverOccursInTheContent) {
    Fixture f;
    // The first boundary the builder would try, planted in the original headers.
    std::string original = "X-Trap: =_ringmail_000000000000abcd_0\r\n" + kOriginal;
    f.in.original_text = original;
    const Dsn d = build_dsn(f.in);
    const Parsed p = parse(d.text);
    EXPECT_NE(p.boundary, "=_ringmail_000000000000abcd_0");
    ASSERT_EQ(p.parts.size(), 3u);
    for (const Part& part : p.parts)
        EXPECT_EQ(part.content.find(p.boundary), std::string::npos);
    EXPECT_NE(p.parts[2].content.find("X-Trap: =_ringmail_000000000000abcd_0"), std::string::npos);
}

TEST(SmtpDsn, CrLfInRemoteTextCannotInjectFieldsOrParts) {
    Fixture f;
    const std::string evil =
        "550 no\r\nX-Injected: yes\r\n\r\n--=_ringmail_000000000000abcd_0--\r\nBcc: x@evil.test\n"
        "\rZ: \0z"s;
    f.rcpts[0].diagnostic = evil;
    f.rcpts[0].remote_mta = "mx.evil.test\r\nX-Host: injected";
    f.in.sender = "sender@origin.test>\r\nBcc: victim@x.test";
    const Dsn d = build_dsn(f.in);
    expect_well_formed(d.text);
    for (const std::string& line : crlf_lines(d.text)) {
        EXPECT_NE(line.rfind("X-Injected", 0), 0u) << line;
        EXPECT_NE(line.rfind("Bcc", 0), 0u) << line;
        EXPECT_NE(line.rfind("X-Host", 0), 0u) << line;
        EXPECT_NE(line.rfind("Z:", 0), 0u) << line;
    }
    EXPECT_EQ(d.text.find('\0'), std::string::npos);
    const Parsed p = parse(d.text);
    ASSERT_EQ(p.parts.size(), 3u);  // no part was added
    const std::string diag = field(status_blocks(p.parts[1].content)[1], "Diagnostic-Code");
    EXPECT_EQ(diag.rfind("smtp; 550 no X-Injected: yes", 0), 0u) << diag;
}

TEST(SmtpDsn, LongDiagnosticsAreFolded) {
    Fixture f;
    std::string words;
    for (int i = 0; i < 200; ++i)
        words += "word" + std::to_string(i) + " ";
    const std::string diag = "550 " + std::string(3000, 'x') + " " + words;
    f.rcpts[0].diagnostic = diag;
    const Dsn d = build_dsn(f.in);
    expect_well_formed(d.text);
    const Parsed p = parse(d.text);
    const std::string got = field(status_blocks(p.parts[1].content)[1], "Diagnostic-Code");
    // Unfolded, only whitespace differs: no octet of the text is lost.
    auto squeeze = [](std::string s) {
        std::erase(s, ' ');
        return s;
    };
    EXPECT_EQ(squeeze(got), squeeze("smtp; " + diag));
    // Words were folded near 78 columns, not left on one long line.
    size_t short_lines = 0;
    for (const std::string& line : crlf_lines(p.parts[1].content))
        short_lines += line.size() <= 78;
    EXPECT_GT(short_lines, 20u);
}

TEST(SmtpDsn, HeadersPartIsCutAtTheLimitOnALineEnd) {
    Fixture f;
    std::string original;
    for (int i = 0; i < 100; ++i)
        original += "X-Header-" + std::to_string(i) + ": " + std::string(80, 'v') + "\r\n";
    original += "\r\nbody\r\n";
    f.in.original_text = original;
    f.in.headers_max_bytes = 1000;
    const Parsed p = parse(build_dsn(f.in).text);
    ASSERT_EQ(p.parts.size(), 3u);
    const std::string& h = p.parts[2].content;
    EXPECT_LE(h.size(), 1000u);
    EXPECT_GT(h.size(), 1000u - 100);
    EXPECT_EQ(original.rfind(h, 0), 0u) << "a prefix of whole lines";
}

TEST(SmtpDsn, OverlongOriginalHeaderLinesAreCut) {
    Fixture f;
    const std::string original = "X-Long: " + std::string(5000, 'L') + "\r\nSubject: s\r\n\r\nb";
    f.in.original_text = original;
    const Dsn d = build_dsn(f.in);
    expect_well_formed(d.text);
    const Parsed p = parse(d.text);
    EXPECT_NE(p.parts[2].content.find("\r\nSubject: s"), std::string::npos);
}

TEST(SmtpDsn, MessageWithoutHeaderSectionAndEightBitHeaders) {
    Fixture f;
    f.in.original_text = "\r\njust a body\r\n";
    Parsed p = parse(build_dsn(f.in).text);
    ASSERT_EQ(p.parts.size(), 3u);
    EXPECT_EQ(p.parts[2].content, "");

    const std::string utf8 = "Subject: gr\xc3\xbc\xc3\x9f\x65\r\n\r\nx";
    f.in.original_text = utf8;
    const Dsn d = build_dsn(f.in);
    EXPECT_TRUE(d.eight_bit);
    p = parse(d.text);
    EXPECT_EQ(field(p.parts[2].headers, "Content-Transfer-Encoding"), "8bit");
}

}  // namespace
}  // namespace ringmail::smtp
