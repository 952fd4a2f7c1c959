// smtp_address_fuzz.cpp — the path parser (net/smtp/address.hpp) and the relay policy
// (net/smtp/relay_policy.hpp) over arbitrary text.
//
// Input: one byte of options (bit0 allow <>, bit1 allow <postmaster>), then text. The text is
// parsed as a MAIL/RCPT path; each half of it around the first '|' is also parsed as an IP
// address and as a CIDR network. Checked:
//  - an accepted path obeys RFC 5321 §4.5.3.1 limits, holds no control octet, points into the
//    text, is well-formed UTF-8 when not ASCII, and parses again to itself from "<address>";
//  - utf8_valid and domain_syntax_ok agree with independent implementations of their rules;
//  - no open relay: an untrusted client may send only to a configured domain (exact, or under a
//    ".domain" entry on a label boundary), never with '%', '!' or '@' in the local part, a
//    domain literal or a trailing dot;
//  - an IP address prints and parses back to itself; a network has no host bits and contains
//    exactly the addresses that share its prefix.
#include <arpa/inet.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/limits.hpp"
#include "net/smtp/address.hpp"
#include "net/smtp/relay_policy.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace ringmail::smtp {
namespace {

bool within(std::string_view part, std::string_view whole) {
    return part.empty() || (part.data() >= whole.data() &&
                            part.data() + part.size() <= whole.data() + whole.size());
}

bool in_range(unsigned char c, unsigned lo, unsigned hi) {
    return c >= lo && c <= hi;
}

// Unicode §3.9 Table 3-7, well-formed UTF-8 byte sequences.
bool reference_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto b = static_cast<unsigned char>(s[i]);
        const auto at = [&](size_t k) -> unsigned char {
            return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0;
        };
        size_t n = 0;
        unsigned lo = 0x80, hi = 0xbf;  // the second byte's range
        if (b <= 0x7f) {
            n = 0;
        } else if (in_range(b, 0xc2, 0xdf)) {
            n = 1;
        } else if (b == 0xe0) {
            n = 2, lo = 0xa0;
        } else if (in_range(b, 0xe1, 0xec) || in_range(b, 0xee, 0xef)) {
            n = 2;
        } else if (b == 0xed) {
            n = 2, hi = 0x9f;
        } else if (b == 0xf0) {
            n = 3, lo = 0x90;
        } else if (in_range(b, 0xf1, 0xf3)) {
            n = 3;
        } else if (b == 0xf4) {
            n = 3, hi = 0x8f;
        } else {
            return false;
        }
        if (n > 0 && !in_range(at(1), lo, hi)) return false;
        for (size_t k = 2; k <= n; ++k) {
            if (!in_range(at(k), 0x80, 0xbf)) return false;
        }
        i += n + 1;
    }
    return true;
}

// RFC 5321 §4.1.2 Domain, labels of RFC 1035 §2.3.4, UTF-8 labels of RFC 6531.
bool reference_domain(std::string_view d) {
    if (d.empty() || d.size() > limits::domain_max_bytes) return false;
    bool utf8 = false;
    size_t start = 0;
    for (;;) {
        const size_t dot = d.find('.', start);
        const std::string_view label = d.substr(start, dot - start);
        if (label.empty() || label.size() > 63) return false;
        if (label.front() == '-' || label.back() == '-') return false;
        for (const char ch : label) {
            const auto c = static_cast<unsigned char>(ch);
            const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '-' || c >= 0x80;
            if (!ok) return false;
            utf8 = utf8 || c >= 0x80;
        }
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return !utf8 || reference_utf8(d);
}

std::string lower(std::string_view s) {
    std::string r(s);
    for (char& c : r) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return r;
}

// The configured domains: an exact entry, or a strict subdomain of a ".entry".
constexpr std::string_view kDomains[] = {"relay.test", ".Sub.Test", "EXAMPLE.com", ""};

bool reference_accepted(std::string_view domain) {
    const std::string d = lower(domain);
    for (const std::string_view entry : kDomains) {
        if (entry.empty()) continue;
        const std::string e = lower(entry);
        if (e.front() != '.' && d == e) return true;
        if (e.front() == '.' && d.size() > e.size() && d.ends_with(e)) return true;
    }
    return false;
}

void check_path(std::string_view text, PathOptions opts, const RelayPolicy& policy) {
    const PathResult r = parse_path(text, opts);
    FUZZ_CHECK(within(r.rest, text));
    if (r.status != PathStatus::ok) return;
    const Path& p = r.path;
    FUZZ_CHECK(within(p.address, text) && within(p.local_part, text) && within(p.domain, text));
    FUZZ_CHECK(r.rest.empty() || r.rest.front() != ' ');
    FUZZ_CHECK(p.local_part.size() <= limits::local_part_max_bytes);
    FUZZ_CHECK(p.domain.size() <= limits::domain_max_bytes);
    FUZZ_CHECK(p.address.size() + 2 <= limits::path_max_bytes);
    if (p.domain.empty()) {
        // <> or <postmaster>, and only where allowed.
        FUZZ_CHECK(p.address == p.local_part);
        if (p.address.empty()) FUZZ_CHECK(opts.allow_null);
        if (!p.address.empty())
            FUZZ_CHECK(opts.allow_postmaster && lower(p.address) == "postmaster");
    } else {
        FUZZ_CHECK(p.address.size() == p.local_part.size() + 1 + p.domain.size());
        FUZZ_CHECK(p.address.data() == p.local_part.data());
        FUZZ_CHECK(p.address[p.local_part.size()] == '@');
        FUZZ_CHECK(p.address.ends_with(p.domain));
    }
    // A domain literal once held a NUL, inet_pton reading only up to it
    // (corpus/smtp_address/regression-nul-in-domain-literal.bin).
    bool non_ascii = false;
    for (const char ch : p.address) {
        const auto c = static_cast<unsigned char>(ch);
        FUZZ_CHECK(c >= 0x20 && c != 0x7f);  // no CR, LF, NUL or other control
        non_ascii = non_ascii || c >= 0x80;
    }
    if (non_ascii) FUZZ_CHECK(p.utf8 && reference_utf8(p.address));
    FUZZ_CHECK(p.quoted_local == (!p.local_part.empty() && p.local_part.front() == '"'));
    FUZZ_CHECK(p.domain_literal == (!p.domain.empty() && p.domain.front() == '['));
    if (p.domain_literal) FUZZ_CHECK(p.domain.back() == ']' && !p.trailing_dot);
    if (!p.domain_literal && !p.domain.empty()) {
        FUZZ_CHECK(p.trailing_dot == p.domain.ends_with("."));
        std::string_view d = p.domain;
        if (p.trailing_dot) d.remove_suffix(1);
        bool utf8 = false;
        FUZZ_CHECK(domain_syntax_ok(d, &utf8));
    }

    // What the session stores ("local@domain") parses again to the same path.
    const std::string again = "<" + std::string(p.address) + ">";
    const PathResult r2 = parse_path(again, opts);
    FUZZ_CHECK(r2.status == PathStatus::ok && r2.rest.empty());
    FUZZ_CHECK(r2.path.address == p.address && r2.path.local_part == p.local_part &&
               r2.path.domain == p.domain);
    FUZZ_CHECK(r2.path.quoted_local == p.quoted_local &&
               r2.path.domain_literal == p.domain_literal &&
               r2.path.trailing_dot == p.trailing_dot && !r2.path.source_route);

    // No open relay (smtp.md "Relay policy").
    FUZZ_CHECK(policy.may_send(true, p.local_part, p.domain));
    if (policy.may_send(false, p.local_part, p.domain)) {
        FUZZ_CHECK(p.local_part.find_first_of("%!@") == std::string_view::npos);
        FUZZ_CHECK(!p.domain_literal && !p.trailing_dot);
        FUZZ_CHECK(reference_accepted(p.domain));
    }
}

void check_ip(std::string_view text) {
    const std::optional<IpAddress> a = IpAddress::parse(text);
    if (!a) return;
    char buf[INET6_ADDRSTRLEN];
    FUZZ_CHECK(inet_ntop(AF_INET6, a->bytes.data(), buf, sizeof buf) != nullptr);
    const std::optional<IpAddress> b = IpAddress::parse(buf);
    FUZZ_CHECK(b && *b == *a);
}

bool reference_contains(const Cidr& c, const IpAddress& a) {
    for (size_t bit = 0; bit < c.prefix_bits; ++bit) {
        const auto mask = static_cast<uint8_t>(0x80u >> (bit % 8));
        if ((c.base.bytes[bit / 8] & mask) != (a.bytes[bit / 8] & mask)) return false;
    }
    return true;
}

void check_cidr(std::string_view text, std::string_view other) {
    const std::optional<Cidr> c = Cidr::parse(text);
    if (!c) return;
    FUZZ_CHECK(c->prefix_bits <= 128);
    const bool v4_text = text.substr(0, text.find('/')).find(':') == std::string_view::npos;
    if (v4_text) FUZZ_CHECK(c->prefix_bits >= 96);
    for (size_t bit = c->prefix_bits; bit < 128; ++bit)
        FUZZ_CHECK((c->base.bytes[bit / 8] & (0x80u >> (bit % 8))) == 0);
    FUZZ_CHECK(c->contains(c->base));
    const RelayPolicy trusting({*c}, {});
    FUZZ_CHECK(trusting.network_trusted(c->base));
    if (const std::optional<IpAddress> a = IpAddress::parse(other)) {
        FUZZ_CHECK(c->contains(*a) == reference_contains(*c, *a));
        FUZZ_CHECK(trusting.network_trusted(*a) == c->contains(*a));
    }
}

}  // namespace
}  // namespace ringmail::smtp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace ringmail::smtp;
    if (size < 1) return 0;
    static const RelayPolicy policy({*Cidr::parse("127.0.0.0/8")},
                                    {std::string(kDomains[0]), std::string(kDomains[1]),
                                     std::string(kDomains[2]), std::string(kDomains[3])});
    const PathOptions opts{.allow_null = (data[0] & 1) != 0,
                           .allow_postmaster = (data[0] & 2) != 0};
    const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

    check_path(text, opts, policy);

    FUZZ_CHECK(utf8_valid(text) == reference_utf8(text));
    bool utf8 = false;
    const bool domain_ok = domain_syntax_ok(text, &utf8);
    FUZZ_CHECK(domain_ok == reference_domain(text));
    if (domain_ok) {
        FUZZ_CHECK(utf8 == std::any_of(text.begin(), text.end(), [](char c) {
                       return static_cast<unsigned char>(c) >= 0x80;
                   }));
    }
    FUZZ_CHECK(policy.domain_accepted(text) == reference_accepted(text));

    const size_t bar = text.find('|');
    const std::string_view first = text.substr(0, bar);
    const std::string_view second = bar == text.npos ? std::string_view() : text.substr(bar + 1);
    check_ip(first);
    check_ip(second);
    check_cidr(first, second);
    check_cidr(second, first);
    return 0;
}
