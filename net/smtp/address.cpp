// address.cpp — RFC 5321 §4.1.2 path parser (see address.hpp for the contract).
//
// A cursor over the caller's text; no allocation, no copies. Each grammar rule is one small
// function that advances the cursor or reports failure.
#include "net/smtp/address.hpp"

#include <arpa/inet.h>

#include <cstring>

#include "core/base/limits.hpp"

namespace ringmail::smtp {
namespace {

constexpr size_t kLabelMaxBytes = 63;  // RFC 1035 §2.3.4

bool is_alpha(unsigned char c) {
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}
bool is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

// RFC 5322 §3.2.3 atext, plus UTF-8 octets (RFC 6531 §3.3 extends atext with UTF8-non-ascii).
bool is_atext(unsigned char c) {
    if (is_alpha(c) || is_digit(c) || c >= 0x80) return true;
    return std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr && c != 0;
}

struct Cursor {
    std::string_view s;
    size_t i = 0;
    bool utf8 = false;

    [[nodiscard]] bool at_end() const { return i >= s.size(); }
    [[nodiscard]] unsigned char peek() const { return at_end() ? 0 : s[i]; }
    bool eat(char c) {
        if (at_end() || s[i] != c) return false;
        ++i;
        return true;
    }
};

// Dot-string = Atom *("." Atom)
bool parse_dot_string(Cursor& c) {
    for (;;) {
        const size_t start = c.i;
        while (!c.at_end() && is_atext(c.peek())) {
            if (c.peek() >= 0x80) c.utf8 = true;
            ++c.i;
        }
        if (c.i == start) return false;  // empty atom: leading, trailing or double dot
        if (!c.eat('.')) return true;
    }
}

// Quoted-string = DQUOTE *QcontentSMTP DQUOTE (RFC 5321 §4.1.2; UTF-8 per RFC 6531)
bool parse_quoted_string(Cursor& c) {
    if (!c.eat('"')) return false;
    while (!c.at_end()) {
        const unsigned char ch = c.peek();
        ++c.i;
        if (ch == '"') return true;
        if (ch == '\\') {  // quoted-pairSMTP = "\" %d32-126
            const unsigned char q = c.peek();
            if (q < 32 || q > 126) return false;
            ++c.i;
            continue;
        }
        if (ch >= 0x80) {
            c.utf8 = true;
            continue;
        }
        if (ch < 32 || ch > 126) return false;  // controls, CR, LF, NUL, DEL
    }
    return false;  // unbalanced quote
}

// One sub-domain = Let-dig [Ldh-str]; labels never start or end with '-'.
bool parse_label(Cursor& c) {
    const size_t start = c.i;
    while (!c.at_end()) {
        const unsigned char ch = c.peek();
        if (!(is_alpha(ch) || is_digit(ch) || ch == '-' || ch >= 0x80)) break;
        if (ch >= 0x80) c.utf8 = true;
        ++c.i;
    }
    const size_t len = c.i - start;
    if (len == 0 || len > kLabelMaxBytes) return false;
    return c.s[start] != '-' && c.s[c.i - 1] != '-';
}

// Domain = sub-domain *("." sub-domain), optionally one trailing dot (reported, not refused:
// the relay policy decides).
bool parse_domain(Cursor& c, bool allow_trailing_dot, bool* trailing_dot) {
    for (;;) {
        if (!parse_label(c)) return false;
        if (!c.eat('.')) return true;
        if (allow_trailing_dot && trailing_dot != nullptr) {
            const unsigned char next = c.peek();
            if (!(is_alpha(next) || is_digit(next) || next >= 0x80)) {
                *trailing_dot = true;
                return true;
            }
        }
    }
}

bool literal_address_ok(std::string_view inner) {
    char buf[64];
    unsigned char bin[16];
    constexpr std::string_view kV6Tag = "IPv6:";
    const bool v6 = inner.size() > kV6Tag.size() &&
                    strncasecmp(inner.data(), kV6Tag.data(), kV6Tag.size()) == 0;
    if (v6) inner.remove_prefix(kV6Tag.size());
    if (inner.empty() || inner.size() >= sizeof buf) return false;
    // Only the characters of an address: inet_pton would stop at a NUL and accept what follows.
    for (const char ch : inner) {
        const bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                        (ch >= 'A' && ch <= 'F') || ch == '.' || ch == ':';
        if (!ok) return false;
    }
    std::memcpy(buf, inner.data(), inner.size());
    buf[inner.size()] = '\0';
    return inet_pton(v6 ? AF_INET6 : AF_INET, buf, bin) == 1;
}

// address-literal = "[" ( IPv4 / "IPv6:" IPv6 ) "]"; general literals are not supported.
bool parse_address_literal(Cursor& c) {
    if (!c.eat('[')) return false;
    const size_t start = c.i;
    while (!c.at_end() && c.peek() != ']')
        ++c.i;
    if (c.at_end()) return false;
    const std::string_view inner = c.s.substr(start, c.i - start);
    ++c.i;
    return literal_address_ok(inner);
}

// A-d-l = At-domain *( "," At-domain ) ":" — parsed only to be dropped (§4.1.1.3).
bool parse_source_route(Cursor& c) {
    do {
        if (!c.eat('@')) return false;
        if (!parse_domain(c, false, nullptr)) return false;
    } while (c.eat(','));
    return c.eat(':');
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Mailbox = Local-part "@" ( Domain / address-literal ), or a bare postmaster when allowed.
bool parse_mailbox(Cursor& c, const PathOptions& options, Path& p) {
    const size_t start = c.i;
    p.quoted_local = c.peek() == '"';
    const bool local_ok = p.quoted_local ? parse_quoted_string(c) : parse_dot_string(c);
    if (!local_ok) return false;
    p.local_part = c.s.substr(start, c.i - start);
    if (!c.eat('@')) {
        p.address = p.local_part;
        return options.allow_postmaster && iequals(p.local_part, "postmaster");
    }
    const size_t dstart = c.i;
    p.domain_literal = c.peek() == '[';
    const bool domain_ok =
        p.domain_literal ? parse_address_literal(c) : parse_domain(c, true, &p.trailing_dot);
    if (!domain_ok) return false;
    p.domain = c.s.substr(dstart, c.i - dstart);
    p.address = c.s.substr(start, c.i - start);
    return true;
}

bool within_limits(const Path& p, size_t path_bytes) {
    return p.local_part.size() <= limits::local_part_max_bytes &&
           p.domain.size() <= limits::domain_max_bytes && path_bytes <= limits::path_max_bytes;
}

std::string_view skip_spaces(std::string_view s) {
    while (!s.empty() && s.front() == ' ')
        s.remove_prefix(1);
    return s;
}

}  // namespace

bool utf8_valid(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto b0 = static_cast<unsigned char>(s[i]);
        size_t n = 0;
        uint32_t cp = 0;
        if (b0 < 0x80) {
            ++i;
            continue;
        } else if (b0 >= 0xc2 && b0 <= 0xdf) {
            n = 1, cp = b0 & 0x1f;
        } else if (b0 >= 0xe0 && b0 <= 0xef) {
            n = 2, cp = b0 & 0x0f;
        } else if (b0 >= 0xf0 && b0 <= 0xf4) {
            n = 3, cp = b0 & 0x07;
        } else {
            return false;
        }
        if (i + n >= s.size()) return false;  // truncated sequence
        for (size_t k = 1; k <= n; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            if ((b & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (b & 0x3f);
        }
        // Overlongs, surrogates, beyond U+10FFFF.
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

bool domain_syntax_ok(std::string_view domain, bool* utf8) {
    Cursor c{domain};
    const bool ok = parse_domain(c, false, nullptr) && c.at_end();
    if (utf8 != nullptr) *utf8 = c.utf8;
    return ok && domain.size() <= limits::domain_max_bytes && (!c.utf8 || utf8_valid(domain));
}

PathResult parse_path(std::string_view text, PathOptions options) {
    PathResult r;
    Cursor c{skip_spaces(text)};
    const bool bracketed = c.eat('<');
    if (bracketed && c.eat('>')) {
        if (!options.allow_null) return r;
        r.status = PathStatus::ok;
    } else {
        if (bracketed && c.peek() == '@') {
            if (!parse_source_route(c)) return r;
            r.path.source_route = true;
        }
        if (!parse_mailbox(c, options, r.path)) return r;
        if (bracketed && !c.eat('>')) return r;
        r.path.utf8 = c.utf8;
        if (c.utf8 && !utf8_valid(r.path.address)) return r;
        r.status = within_limits(r.path, c.i + (bracketed ? 0 : 2)) ? PathStatus::ok
                                                                    : PathStatus::too_long;
    }
    // The path ends at the end of the line or at the space before the parameters.
    if (!c.at_end() && c.peek() != ' ') {
        r.status = PathStatus::syntax;
        return r;
    }
    r.rest = skip_spaces(c.s.substr(c.i));
    return r;
}

}  // namespace ringmail::smtp
