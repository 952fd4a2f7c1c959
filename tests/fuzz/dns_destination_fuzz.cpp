// dns_destination_fuzz.cpp — the pure rules that turn DNS answers into a delivery destination
// (dns/destination.hpp), over arbitrary answers and names. The DNS wire format itself is
// parsed by udns, inside the resolver; what reaches ringmail is MX records and addresses, which
// this target makes up.
//
// Input: one byte of flags (bit0 implicit MX: the domain itself is the only host, bit1 a
// wildcard listener, bit2 smarthost, bits3-7 the shuffle seed), then text lines:
//   line 1        the mail domain (also parsed as a domain literal, smarthost and DNS server)
//   "own A B..."  our listening addresses (added to 192.0.2.200 and 2001:db8::200 when a
//                 wildcard listener stands for every interface address)
//   "ports P..."  our listening ports
//   "PREF NAME A B ! ..."  an MX record and the addresses its host resolved to ("!": a lookup
//                 of that host failed temporarily)
// Checked: MX ordering keeps the most preferred hosts, sorted, each run of equal preference
// shuffled only (RFC 5321 §5.1), deterministically for a seed; null MX is the single "0 ."
// (RFC 7505); the decision is the one the rules give — never a destination that is one of our
// own addresses (mail loop), 5.4.6 when we are the best MX, 5.4.4 / 4.4.3 when no host has an
// address — with a status code of the outcome's class; the destination key does not depend on
// host order; literals, smarthosts and DNS servers parse to what they print.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dns/destination.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace ringmail::dns {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (size_t at = 0;;) {
        const size_t end = s.find(sep, at);
        out.push_back(s.substr(at, end - at));
        if (end == std::string_view::npos) return out;
        at = end + 1;
    }
}

uint16_t parse_u16(std::string_view s) {
    uint32_t v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return 0;
        v = (v * 10 + static_cast<uint32_t>(c - '0')) & 0xffff;
    }
    return static_cast<uint16_t>(v);
}

bool has_upper(std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

bool is_v4_mapped(const IpAddress& ip) {
    static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::equal(std::begin(kPrefix), std::end(kPrefix), ip.bytes.begin());
}

// OwnAddresses, as destination.hpp describes it.
struct OwnReference {
    std::vector<IpAddress> listen, interfaces;
    std::vector<uint16_t> ports;
    [[nodiscard]] bool contains(const IpAddress& ip) const {
        const auto unspecified = [](const IpAddress& a) {
            const size_t from = is_v4_mapped(a) ? 12 : 0;
            return std::all_of(a.bytes.begin() + static_cast<ptrdiff_t>(from), a.bytes.end(),
                               [](uint8_t b) { return b == 0; });
        };
        const bool any = std::any_of(listen.begin(), listen.end(), unspecified);
        const bool loopback =
            is_v4_mapped(ip) ? ip.bytes[12] == 127 : ip == *IpAddress::parse("::1");
        if (any && (loopback || unspecified(ip))) return true;
        if (std::find(listen.begin(), listen.end(), ip) != listen.end()) return true;
        return any && std::find(interfaces.begin(), interfaces.end(), ip) != interfaces.end();
    }
    [[nodiscard]] bool contains(const IpAddress& ip, uint16_t port) const {
        return contains(ip) &&
               (ports.empty() || std::find(ports.begin(), ports.end(), port) != ports.end());
    }
};

// A literal prints to text that parses back to the same address.
void check_literal(const IpAddress& ip) {
    const std::string text = format_ip(ip);
    const std::string literal = is_v4_mapped(ip) ? "[" + text + "]" : "[IPv6:" + text + "]";
    const std::optional<IpAddress> back = parse_domain_literal(literal);
    FUZZ_CHECK(back && *back == ip);
}

void check_text(std::string_view t) {
    if (const std::optional<IpAddress> ip = parse_domain_literal(t)) {
        FUZZ_CHECK(t.front() == '[' && t.back() == ']');
        check_literal(*ip);
    }
    if (const std::optional<Smarthost> s = parse_smarthost(t)) {
        FUZZ_CHECK(s->port >= 1);
        // A name or an address (Resolver::resolve_smarthost asserts a non-empty name; "." once
        // parsed to an empty one: corpus/dns_destination/regression-smarthost-empty-host.bin).
        FUZZ_CHECK(s->host.empty() == s->literal.has_value());
        FUZZ_CHECK(!has_upper(s->host));
        FUZZ_CHECK(std::all_of(s->host.begin(), s->host.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                   c == '_';
        }));
        if (s->literal) check_literal(*s->literal);
    }
    if (const std::optional<DnsServer> d = parse_dns_server(t)) {
        const sa_family_t family = d->addr.ss_family;
        FUZZ_CHECK((family == AF_INET && d->length == sizeof(sockaddr_in)) ||
                   (family == AF_INET6 && d->length == sizeof(sockaddr_in6)));
        const uint16_t port = family == AF_INET
                                  ? reinterpret_cast<const sockaddr_in*>(&d->addr)->sin_port
                                  : reinterpret_cast<const sockaddr_in6*>(&d->addr)->sin6_port;
        FUZZ_CHECK(port != 0);
    }
    const std::string norm = normalize_domain(t);
    FUZZ_CHECK(!has_upper(norm));
    char buf[300];
    std::string_view out;
    const bool fits = normalize_into(t, buf, sizeof buf, &out);
    FUZZ_CHECK(fits == (norm.size() < sizeof buf));
    if (fits) FUZZ_CHECK(out == norm);
}

void check_order(const std::vector<MxRecord>& input, uint64_t seed) {
    std::vector<MxRecord> ordered = input;
    Rng rng(seed);
    order_mx(ordered, rng);
    std::vector<MxRecord> again = input;
    Rng rng2(seed);
    order_mx(again, rng2);
    FUZZ_CHECK(ordered.size() == again.size());
    for (size_t i = 0; i < ordered.size(); ++i)
        FUZZ_CHECK(ordered[i].name == again[i].name &&
                   ordered[i].preference == again[i].preference);

    // Root exchanges dropped, names normalised, the most preferred mx_hosts_max kept, sorted.
    std::vector<MxRecord> kept;
    for (const MxRecord& r : input) {
        if (!r.name.empty() && r.name != ".")
            kept.push_back({normalize_domain(r.name), r.preference});
    }
    std::stable_sort(kept.begin(), kept.end(), [](const MxRecord& a, const MxRecord& b) {
        return a.preference < b.preference;
    });
    FUZZ_CHECK(ordered.size() == std::min(kept.size(), mx_hosts_max));
    for (size_t i = 0; i < ordered.size(); ++i) {
        FUZZ_CHECK(ordered[i].preference == kept[i].preference);
        FUZZ_CHECK(!has_upper(ordered[i].name));
    }
    // Within each run of equal preference, a permutation of the input's names.
    for (size_t begin = 0; begin < ordered.size();) {
        size_t end = begin;
        while (end < ordered.size() && ordered[end].preference == ordered[begin].preference)
            ++end;
        std::vector<std::string> got, all;
        for (size_t i = begin; i < end; ++i)
            got.push_back(ordered[i].name);
        for (const MxRecord& r : kept) {
            if (r.preference == ordered[begin].preference) all.push_back(r.name);
        }
        std::sort(got.begin(), got.end());
        std::sort(all.begin(), all.end());
        if (end < ordered.size() || ordered.size() == kept.size()) {
            FUZZ_CHECK(got == all);
        } else {
            FUZZ_CHECK(std::includes(all.begin(), all.end(), got.begin(), got.end()));
        }
        begin = end;
    }
}

void check_status(const Resolution& r) {
    switch (r.outcome) {
        case Outcome::ok:
            FUZZ_CHECK(std::string_view(r.status).empty());
            FUZZ_CHECK(!r.hosts.empty() && !r.destination_key.empty());
            FUZZ_CHECK(r.destination_hash == destination_hash(r.destination_key));
            for (const MxHost& h : r.hosts)
                FUZZ_CHECK(!h.addresses.empty());
            break;
        case Outcome::bounce:
            FUZZ_CHECK(std::string_view(r.status).starts_with("5.") && !r.text.empty());
            FUZZ_CHECK(r.hosts.empty());
            break;
        case Outcome::defer:
            FUZZ_CHECK(std::string_view(r.status).starts_with("4.") && !r.text.empty());
            FUZZ_CHECK(r.hosts.empty());
            break;
    }
}

void check_mail_domain(std::string_view domain, bool implicit, const std::vector<HostAnswer>& hosts,
                       const OwnAddresses& own, const OwnReference& ref) {
    const Resolution r = decide_mail_domain(domain, implicit, hosts, own);
    check_status(r);
    // RFC 5321 §5.1 as a reference: hosts no better than our own best are dropped.
    std::optional<uint16_t> ours;
    for (const HostAnswer& h : hosts) {
        for (const IpAddress& a : h.host.addresses) {
            if (ref.contains(a) && (!ours || h.host.preference < *ours)) ours = h.host.preference;
        }
    }
    std::vector<const HostAnswer*> keep;
    for (const HostAnswer& h : hosts) {
        if (!ours || h.host.preference < *ours) keep.push_back(&h);
    }
    if (ours && keep.empty()) {
        FUZZ_CHECK(r.outcome == Outcome::bounce && std::string_view(r.status) == "5.4.6");
        return;
    }
    std::vector<const MxHost*> usable;
    bool tempfail = false;
    for (const HostAnswer* h : keep) {
        tempfail = tempfail || h->tempfail;
        if (!h->host.addresses.empty()) usable.push_back(&h->host);
    }
    if (usable.empty()) {
        const bool bounce = implicit && !tempfail;
        FUZZ_CHECK(r.outcome == (bounce ? Outcome::bounce : Outcome::defer));
        FUZZ_CHECK(std::string_view(r.status) == (bounce ? "5.4.4" : "4.4.3"));
        return;
    }
    FUZZ_CHECK(r.outcome == Outcome::ok && r.port == smtp_port);
    FUZZ_CHECK(r.hosts.size() == usable.size());
    for (size_t i = 0; i < usable.size(); ++i) {
        FUZZ_CHECK(r.hosts[i].name == usable[i]->name);
        FUZZ_CHECK(r.hosts[i].preference == usable[i]->preference);
        FUZZ_CHECK(r.hosts[i].addresses == usable[i]->addresses);
        for (const IpAddress& a : r.hosts[i].addresses)
            FUZZ_CHECK(!ref.contains(a));  // never a destination that is us: a mail loop
    }
    FUZZ_CHECK(r.destination_key == destination_key_for_hosts(r.hosts, smtp_port));
    std::vector<MxHost> reversed(r.hosts.rbegin(), r.hosts.rend());
    FUZZ_CHECK(destination_key_for_hosts(reversed, smtp_port) == r.destination_key);
}

void check_relay(const HostAnswer& answer, uint16_t port, const OwnAddresses& own,
                 const OwnReference& ref) {
    const Resolution r = decide_relay(answer, port, own);
    check_status(r);
    const bool loop = std::any_of(answer.host.addresses.begin(), answer.host.addresses.end(),
                                  [&](const IpAddress& a) { return ref.contains(a, port); });
    if (loop) {
        FUZZ_CHECK(r.outcome == Outcome::defer && std::string_view(r.status) == "4.4.6");
    } else if (answer.host.addresses.empty()) {
        FUZZ_CHECK(r.outcome == Outcome::defer && std::string_view(r.status) == "4.4.3");
    } else {
        FUZZ_CHECK(r.outcome == Outcome::ok && r.port == port && r.hosts.size() == 1);
        FUZZ_CHECK(r.destination_key == destination_key_for_relay(answer.host.name, port));
    }
}

void check_address(const IpAddress& ip, uint16_t port, bool is_relay, const OwnAddresses& own,
                   const OwnReference& ref) {
    FUZZ_CHECK(own.contains(ip) == ref.contains(ip));
    FUZZ_CHECK(own.contains(ip, port) == ref.contains(ip, port));
    const Resolution r = decide_address(ip, port, own, is_relay);
    check_status(r);
    const bool loop = is_relay ? ref.contains(ip, port) : ref.contains(ip);
    FUZZ_CHECK((r.outcome == Outcome::ok) == !loop);
    if (loop) FUZZ_CHECK(r.outcome == (is_relay ? Outcome::defer : Outcome::bounce));
    if (!loop) FUZZ_CHECK(r.hosts.size() == 1 && r.hosts[0].addresses == std::vector{ip});
    check_literal(ip);
}

}  // namespace
}  // namespace ringmail::dns

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace ringmail::dns;
    if (size < 1) return 0;
    const uint8_t flags = data[0];
    const bool implicit = (flags & 1) != 0;
    const bool relay = (flags & 4) != 0;
    const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
    const std::vector<std::string_view> lines = split(text, '\n');
    const std::string_view domain = lines[0];
    check_text(domain);

    OwnReference ref;
    ref.interfaces = {*IpAddress::parse("192.0.2.200"), *IpAddress::parse("2001:db8::200")};
    if (flags & 2) ref.listen.push_back(*IpAddress::parse("0.0.0.0"));
    std::vector<MxRecord> records;
    std::vector<std::vector<std::string_view>> tokens;
    for (size_t i = 1; i < lines.size() && records.size() < 64; ++i) {
        std::vector<std::string_view> t = split(lines[i], ' ');
        if (t[0] == "own") {
            for (size_t k = 1; k < t.size(); ++k) {
                if (const auto a = IpAddress::parse(t[k])) ref.listen.push_back(*a);
            }
        } else if (t[0] == "ports") {
            for (size_t k = 1; k < t.size(); ++k)
                ref.ports.push_back(parse_u16(t[k]));
        } else {
            const std::string_view name = t.size() > 1 ? t[1] : std::string_view();
            check_text(name);
            records.push_back({std::string(name), parse_u16(t[0])});
            tokens.push_back(std::move(t));
        }
    }
    OwnAddresses own(ref.listen, ref.interfaces);
    own.set_listen_ports(ref.ports);

    // RFC 7505 §3: null MX is exactly one record "0 .".
    FUZZ_CHECK(is_null_mx(records) == (records.size() == 1 && records[0].preference == 0 &&
                                       (records[0].name.empty() || records[0].name == ".")));
    check_order(records, flags >> 3);

    // The answers for the ordered hosts: each host keeps the addresses listed on its line.
    std::vector<MxRecord> ordered = records;
    Rng rng(flags >> 3);
    order_mx(ordered, rng);
    std::vector<HostAnswer> hosts;
    for (const MxRecord& r : ordered) {
        HostAnswer h;
        h.host.name = r.name;
        h.host.preference = r.preference;
        for (size_t i = 0; i < records.size(); ++i) {
            if (normalize_domain(records[i].name) != r.name ||
                records[i].preference != r.preference)
                continue;
            for (size_t k = 2; k < tokens[i].size(); ++k) {
                if (tokens[i][k] == "!") h.tempfail = true;
                if (const auto a = IpAddress::parse(tokens[i][k])) h.host.addresses.push_back(*a);
            }
            break;
        }
        hosts.push_back(std::move(h));
    }
    if (!implicit) check_mail_domain(domain, false, hosts, own, ref);
    if (implicit && !hosts.empty()) check_mail_domain(domain, true, {hosts[0]}, own, ref);
    const uint16_t port =
        hosts.empty() ? smtp_port : std::max<uint16_t>(1, hosts[0].host.preference);
    if (relay && !hosts.empty()) check_relay(hosts[0], port, own, ref);
    size_t addresses = 0;
    for (const HostAnswer& h : hosts) {
        for (const IpAddress& a : h.host.addresses) {
            if (++addresses > 16) break;
            check_address(a, port, relay, own, ref);
        }
    }
    return 0;
}
