// smtp_address_test.cpp — RFC 5321 §4.1.2 path parsing (net/smtp/address.hpp): forms, limits,
// source routes, quoted local parts, literals, UTF-8.
#include <gtest/gtest.h>

#include <string>

#include "net/smtp/address.hpp"

namespace ringmail::smtp {
namespace {

PathResult parse(std::string_view s, PathOptions o = {}) {
    return parse_path(s, o);
}

TEST(SmtpAddress, PlainBracketedPathWithParams) {
    const auto r = parse("<User@Example.COM> SIZE=10 BODY=8BITMIME");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_EQ(r.path.address, "User@Example.COM");
    EXPECT_EQ(r.path.local_part, "User");
    EXPECT_EQ(r.path.domain, "Example.COM");
    EXPECT_EQ(r.rest, "SIZE=10 BODY=8BITMIME");
}

TEST(SmtpAddress, SpaceAfterColonAndBracketlessFormAccepted) {
    EXPECT_EQ(parse(" <a@b.example>").path.address, "a@b.example");
    const auto r = parse("a@b.example SIZE=1");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_EQ(r.path.address, "a@b.example");
    EXPECT_EQ(r.rest, "SIZE=1");
}

TEST(SmtpAddress, NullPathOnlyWhenAllowed) {
    EXPECT_EQ(parse("<>").status, PathStatus::syntax);
    const auto r = parse("<> BODY=7BIT", {.allow_null = true});
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_EQ(r.path.address, "");
    EXPECT_EQ(r.rest, "BODY=7BIT");
}

TEST(SmtpAddress, BarePostmasterOnlyWhenAllowed) {
    EXPECT_EQ(parse("<postmaster>").status, PathStatus::syntax);
    const auto r = parse("<PostMaster>", {.allow_postmaster = true});
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_EQ(r.path.address, "PostMaster");
    EXPECT_EQ(r.path.domain, "");
    EXPECT_EQ(parse("<webmaster>", {.allow_postmaster = true}).status, PathStatus::syntax);
}

TEST(SmtpAddress, SourceRouteIsParsedAndDropped) {
    const auto r = parse("<@a.example,@b.example:user@c.example>");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_TRUE(r.path.source_route);
    EXPECT_EQ(r.path.address, "user@c.example");
    EXPECT_EQ(r.path.domain, "c.example");
    EXPECT_EQ(parse("<@a.example:>").status, PathStatus::syntax);
    EXPECT_EQ(parse("<@a.example user@c.example>").status, PathStatus::syntax);
    EXPECT_EQ(parse("@a.example:user@c.example").status, PathStatus::syntax);  // needs <>
}

TEST(SmtpAddress, QuotedLocalPartIsOneOpaquePartWithQuotesKept) {
    const auto r = parse(R"(<"victim@remote"@relay.test>)");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_TRUE(r.path.quoted_local);
    EXPECT_EQ(r.path.local_part, R"("victim@remote")");
    EXPECT_EQ(r.path.domain, "relay.test");
    EXPECT_EQ(parse(R"(<"john \"q\" doe"@x.example>)").path.local_part, R"("john \"q\" doe")");
}

TEST(SmtpAddress, MalformedPathsAreSyntaxErrors) {
    for (const char* bad : {"<user>",
                            "<@b.example>",
                            "<a@>",
                            "<a@b..example>",
                            "<.a@b.example>",
                            "<a.@b.example>",
                            "<a..b@c.example>",
                            "<\"unbalanced@b.example>",
                            "<a@b.example",
                            "a@b.example>",
                            "<a@b_c.example>",
                            "<a@-b.example>",
                            "<a@b-.example>",
                            "<a b@c.example>",
                            "<a@b.example>x",
                            "<victim@remote.example@relay.test>",
                            "<a@[1.2.3]>",
                            "<a@[999.1.1.1]>",
                            "<a@[IPv6:zz::1]>",
                            "<a@[IPv6:::1 ]>",
                            "<a@[tag:x]>",
                            "",
                            "<a@b.example>>",
                            "<\"a\rb\"@c.example>",
                            "<a@b.example.."})
        EXPECT_EQ(parse(bad).status, PathStatus::syntax) << bad;
    // A NUL inside a literal: inet_pton stops at it and accepted what follows (the fuzzer).
    using namespace std::literals;
    for (std::string_view bad :
         {"<a@[IPv6:::\0]>"sv, "<a@[1.2.3.4\0x]>"sv, "a@[IPv6:::\0]"sv, "a@[1.2.3.4\0x]"sv})
        EXPECT_EQ(parse(bad).status, PathStatus::syntax) << bad.size();
}

TEST(SmtpAddress, DomainLiteralsParse) {
    auto r = parse("<u@[192.0.2.1]>");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_TRUE(r.path.domain_literal);
    EXPECT_EQ(r.path.domain, "[192.0.2.1]");
    r = parse("<u@[IPv6:2001:db8::1]>");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_EQ(r.path.domain, "[IPv6:2001:db8::1]");
}

TEST(SmtpAddress, TrailingDotIsReportedNotRefused) {
    const auto r = parse("<victim@relay.test.>");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_TRUE(r.path.trailing_dot);
    EXPECT_EQ(r.path.domain, "relay.test.");
}

TEST(SmtpAddress, LocalPartLimitIs64Octets) {
    const std::string l64(64, 'a');
    EXPECT_EQ(parse("<" + l64 + "@b.example>").status, PathStatus::ok);
    EXPECT_EQ(parse("<" + l64 + "a@b.example>").status, PathStatus::too_long);
}

std::string domain_of(size_t n) {  // a first label of 1..51 octets, then ".<50 octets>" labels
    size_t first = n % 51;
    if (first == 0) first = 51;
    std::string d(first, 'd');
    while (d.size() < n)
        d += "." + std::string(50, 'e');
    return d;
}

TEST(SmtpAddress, DomainLimitIs255AndPathLimitIs256) {
    // "<" + 1 + "@" + 252 + ">" = 256 octets: the longest path.
    EXPECT_EQ(parse("<a@" + domain_of(252) + ">").status, PathStatus::ok);
    EXPECT_EQ(parse("<a@" + domain_of(253) + ">").status, PathStatus::too_long);
    EXPECT_EQ(parse("a@" + domain_of(252)).status, PathStatus::ok);  // brackets counted anyway
    EXPECT_EQ(parse("a@" + domain_of(253)).status, PathStatus::too_long);
    EXPECT_TRUE(domain_syntax_ok(domain_of(255), nullptr));
    EXPECT_FALSE(domain_syntax_ok(domain_of(256), nullptr));
    EXPECT_EQ(parse("<a@" + std::string(64, 'x') + ".example>").status, PathStatus::syntax);
}

TEST(SmtpAddress, Utf8IsFlaggedAndMustBeWellFormed) {
    auto r = parse("<j\xc3\xb6rg@b\xc3\xbc\x63her.example>");
    ASSERT_EQ(r.status, PathStatus::ok);
    EXPECT_TRUE(r.path.utf8);
    EXPECT_FALSE(parse("<ascii@b.example>").path.utf8);
    EXPECT_EQ(parse("<j\xc3@b.example>").status, PathStatus::syntax);          // truncated
    EXPECT_EQ(parse("<j\xc0\xaf@b.example>").status, PathStatus::syntax);      // overlong '/'
    EXPECT_EQ(parse("<j\xed\xa0\x80@b.example>").status, PathStatus::syntax);  // surrogate
}

TEST(SmtpAddress, Utf8Validator) {
    EXPECT_TRUE(utf8_valid("plain"));
    EXPECT_TRUE(utf8_valid("\xe2\x82\xac \xf0\x9f\x98\x80"));
    EXPECT_FALSE(utf8_valid("\xe2\x82"));
    EXPECT_FALSE(utf8_valid("\xf5\x80\x80\x80"));
    EXPECT_FALSE(utf8_valid("\x80"));
}

TEST(SmtpAddress, ControlCharactersNeverPass) {
    EXPECT_EQ(parse(std::string("<a\0b@c.example>", 15)).status, PathStatus::syntax);
    EXPECT_EQ(parse("<a\tb@c.example>").status, PathStatus::syntax);
    EXPECT_EQ(parse(std::string("<\"a\0b\"@c.example>", 17)).status, PathStatus::syntax);
}

}  // namespace
}  // namespace ringmail::smtp
