// relay_policy.cpp — trusted networks, accepted domains, and the no-open-relay decision.
//
// Called by the server session at every RCPT (may_send) and by the driver at accept
// (network_trusted). Pure: no I/O, no allocation after construction.
#include "net/smtp/relay_policy.hpp"

#include <arpa/inet.h>
#include <strings.h>

#include <cstring>

namespace ringmail::smtp {
namespace {

constexpr size_t kV4MappedOffset = 12;  // ::ffff:a.b.c.d keeps the IPv4 octets last
constexpr uint8_t kV4PrefixOffsetBits = 96;

std::optional<uint32_t> parse_small_decimal(std::string_view s, uint32_t max) {
    if (s.empty() || s.size() > 3) return std::nullopt;
    uint32_t v = 0;
    for (const char ch : s) {
        if (ch < '0' || ch > '9') return std::nullopt;
        v = v * 10 + static_cast<uint32_t>(ch - '0');
    }
    if (v > max) return std::nullopt;
    return v;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool iends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

std::string to_lower(std::string s) {
    for (char& ch : s) {
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    }
    return s;
}

}  // namespace

std::optional<Cidr> Cidr::parse(std::string_view text) {
    const size_t slash = text.find('/');
    const std::string_view addr_text = text.substr(0, slash);
    const auto addr = IpAddress::parse(addr_text);
    if (!addr) return std::nullopt;
    // IPv4 text counts its prefix over 32 bits; v4-mapped IPv6 text over 128.
    const bool v4_text = addr_text.find(':') == std::string_view::npos;
    Cidr c;
    c.base = *addr;
    if (slash != std::string_view::npos) {
        const auto bits = parse_small_decimal(text.substr(slash + 1), v4_text ? 32 : 128);
        if (!bits) return std::nullopt;
        c.prefix_bits = static_cast<uint8_t>(*bits + (v4_text ? kV4PrefixOffsetBits : 0));
    }
    // Clear the host bits so that equal networks compare equal.
    for (size_t bit = c.prefix_bits; bit < 128; ++bit) {
        c.base.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
    }
    return c;
}

bool Cidr::contains(const IpAddress& a) const {
    const size_t full = prefix_bits / 8;
    if (std::memcmp(base.bytes.data(), a.bytes.data(), full) != 0) return false;
    const unsigned rest = prefix_bits % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<uint8_t>(0xff00u >> rest);
    return (base.bytes[full] & mask) == (a.bytes[full] & mask);
}

RelayPolicy::RelayPolicy(std::vector<Cidr> networks, std::vector<std::string> domains)
    : networks_(std::move(networks)) {
    domains_.reserve(domains.size());
    for (auto& d : domains) {
        if (!d.empty()) domains_.push_back(to_lower(std::move(d)));
    }
}

bool RelayPolicy::network_trusted(const IpAddress& client) const {
    for (const Cidr& c : networks_) {
        if (c.contains(client)) return true;
    }
    return false;
}

bool RelayPolicy::domain_accepted(std::string_view domain) const {
    if (domain.empty()) return false;
    for (const std::string& entry : domains_) {
        // ".example.com" matches strict subdomains only; the leading dot keeps the match on a
        // label boundary, so "evilexample.com" never matches.
        const bool parent = entry.front() == '.';
        if (parent ? domain.size() > entry.size() && iends_with(domain, entry)
                   : iequals(domain, entry))
            return true;
    }
    return false;
}

bool RelayPolicy::may_send(bool client_trusted, std::string_view local_part,
                           std::string_view domain) const {
    if (client_trusted) return true;
    // Open-relay scanner tricks: '%' (the "percent hack") and '!' (UUCP bang paths) are
    // routing operators for some downstream MTAs, and a quoted "@" hides a second domain.
    // Delivered to one of our domains they could be re-relayed elsewhere: refuse them.
    if (local_part.find_first_of("%!@") != std::string_view::npos) return false;
    if (domain.empty() || domain.front() == '[') return false;  // literals name no domain of ours
    if (domain.back() == '.') return false;  // "relay.test." must not slip past suffix checks
    return domain_accepted(domain);
}

}  // namespace ringmail::smtp
