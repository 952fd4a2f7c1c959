// address.hpp — RFC 5321 §4.1.2 path parsing for MAIL FROM and RCPT TO.
//
// Called by the server session (net/smtp/smtp_server.cpp) on the text after "FROM:" / "TO:".
// Parses in place: every view in the result points into the text given. Guarantees:
//  - limits of RFC 5321 §4.5.3.1: local part ≤ 64, domain ≤ 255, path ≤ 256 octets
//    (including the angle brackets) — otherwise PathStatus::too_long;
//  - a source route (<@a,@b:user@c>, §4.1.1.3 and Appendix C) is parsed and dropped: the
//    address is user@c — a relay must never route on it;
//  - a quoted local part is one opaque local part (it may hold '@'); its quotes are kept;
//  - CR, LF, NUL, controls and malformed UTF-8 never pass;
//  - the flags tell the relay policy about the tricks (quoted local part, domain literal,
//    trailing dot) instead of deciding policy here.
#pragma once

#include <cstdint>
#include <string_view>

namespace ringmail::smtp {

struct PathOptions {
    bool allow_null = false;        // MAIL FROM:<> (the null reverse-path)
    bool allow_postmaster = false;  // RCPT TO:<postmaster> without a domain (§4.5.1)
};

enum class PathStatus : uint8_t {
    ok,
    syntax,    // malformed
    too_long,  // over a §4.5.3.1 limit
};

struct Path {
    std::string_view address;     // local@domain ("" for <>, "postmaster" for <postmaster>)
    std::string_view local_part;  // quotes kept when quoted
    std::string_view domain;      // "" for <> and <postmaster>; "[1.2.3.4]" for a literal
    bool quoted_local = false;
    bool domain_literal = false;
    bool trailing_dot = false;  // "user@example.com." (legal in DNS, a trick for relays)
    bool source_route = false;  // an A-d-l was present and dropped
    bool utf8 = false;          // non-ASCII octets (RFC 6531; needs the SMTPUTF8 parameter)
};

struct PathResult {
    PathStatus status = PathStatus::syntax;
    Path path;
    std::string_view rest;  // after the path: the ESMTP parameters, leading spaces removed
};

// Parses "<path> params", " <path>", or the bracketless "user@domain params" Postfix also
// accepts. Leading spaces are skipped (clients send "FROM: <a@b>").
[[nodiscard]] PathResult parse_path(std::string_view text, PathOptions options);

// A domain name as RFC 5321 §4.1.2 "Domain" (letters, digits, hyphens; UTF-8 allowed and
// reported in *utf8). No trailing dot.
[[nodiscard]] bool domain_syntax_ok(std::string_view domain, bool* utf8);

// True when the octets are well-formed UTF-8 (no overlongs, no surrogates).
[[nodiscard]] bool utf8_valid(std::string_view s);

}  // namespace ringmail::smtp
