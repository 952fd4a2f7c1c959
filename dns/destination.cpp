// destination.cpp — pure rules from DNS answers to a delivery destination. See destination.hpp.
#include "dns/destination.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "core/base/assert.hpp"

namespace ringmail::dns {

namespace {

constexpr size_t kV4Offset = 12;  // IpAddress keeps IPv4 as ::ffff:a.b.c.d

char lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

bool is_v4_mapped(const IpAddress& ip) {
    static constexpr uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(ip.bytes.data(), prefix, sizeof prefix) == 0;
}

bool is_loopback(const IpAddress& ip) {
    if (is_v4_mapped(ip)) return ip.bytes[kV4Offset] == 127;
    static constexpr uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return std::memcmp(ip.bytes.data(), one, sizeof one) == 0;
}

bool is_unspecified(const IpAddress& ip) {
    if (is_v4_mapped(ip)) {
        return ip.bytes[12] == 0 && ip.bytes[13] == 0 && ip.bytes[14] == 0 && ip.bytes[15] == 0;
    }
    return std::all_of(ip.bytes.begin(), ip.bytes.end(), [](uint8_t b) { return b == 0; });
}

bool is_root(std::string_view name) {
    return name.empty() || name == ".";
}

// Parses a decimal port 1..65535.
std::optional<uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    uint32_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    if (v == 0 || v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
}

// "host" or "host:port" after a closing bracket or a name: splits off ":port" when present.
bool split_port(std::string_view rest, uint16_t* port) {
    if (rest.empty()) return true;
    if (rest[0] != ':') return false;
    const auto p = parse_port(rest.substr(1));
    if (!p) return false;
    *port = *p;
    return true;
}

std::optional<IpAddress> parse_v4(std::string_view text) {
    if (text.find(':') != std::string_view::npos) return std::nullopt;
    return IpAddress::parse(text);
}

std::optional<IpAddress> parse_v6(std::string_view text) {
    if (text.find(':') == std::string_view::npos) return std::nullopt;
    return IpAddress::parse(text);
}

// Host names for a smarthost: letters, digits, '-', '.', '_' (some internal relays use it).
// Labels of letters, digits, '-' and '_', 1 to 63 bytes each, one trailing dot allowed: "." or
// "a..b" name no host.
bool host_name_ok(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    if (name.empty() || name.size() > 253) return false;
    size_t label = 0;
    for (const char c : name) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok || ++label > 63) return false;
    }
    return label > 0;
}

bool any_own(const MxHost& h, const OwnAddresses& own) {
    return std::any_of(h.addresses.begin(), h.addresses.end(),
                       [&](const IpAddress& a) { return own.contains(a); });
}

Resolution make_ok(std::vector<MxHost> hosts, uint16_t port, std::string key) {
    Resolution r;
    r.outcome = Outcome::ok;
    r.hosts = std::move(hosts);
    r.port = port;
    r.destination_hash = destination_hash(key);
    r.destination_key = std::move(key);
    return r;
}

}  // namespace

uint64_t Rng::next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t Rng::below(uint32_t n) {
    RM_ASSERT(n > 0);
    return static_cast<uint32_t>(next() % n);
}

bool is_null_mx(std::span<const MxRecord> records) {
    return records.size() == 1 && records[0].preference == 0 && is_root(records[0].name);
}

void order_mx(std::vector<MxRecord>& records, Rng& rng) {
    std::erase_if(records, [](const MxRecord& r) { return is_root(r.name); });
    for (MxRecord& r : records)
        r.name = normalize_domain(r.name);
    std::stable_sort(records.begin(), records.end(), [](const MxRecord& a, const MxRecord& b) {
        return a.preference < b.preference;
    });
    // RFC 5321 §5.1: hosts of equal preference are tried in random order to spread the load.
    for (size_t begin = 0; begin < records.size();) {
        size_t end = begin + 1;
        while (end < records.size() && records[end].preference == records[begin].preference) {
            ++end;
        }
        for (size_t i = end - 1; i > begin; --i) {
            const size_t j = begin + rng.below(static_cast<uint32_t>(i - begin + 1));
            std::swap(records[i], records[j]);
        }
        begin = end;
    }
    if (records.size() > mx_hosts_max) records.resize(mx_hosts_max);
}

std::string destination_key_for_hosts(std::span<const MxHost> hosts, uint16_t port) {
    std::vector<std::string_view> names;
    names.reserve(hosts.size());
    for (const MxHost& h : hosts)
        names.push_back(h.name);
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::string key = "mx:";
    for (size_t i = 0; i < names.size(); ++i) {
        if (i > 0) key += ',';
        key += names[i];
    }
    key += ':';
    key += std::to_string(port);
    return key;
}

std::string destination_key_for_relay(std::string_view host, uint16_t port) {
    std::string key = "relay:";
    key += normalize_domain(host);
    key += ':';
    key += std::to_string(port);
    return key;
}

std::string destination_key_for_address(const IpAddress& ip, uint16_t port) {
    return "ip:" + format_ip(ip) + ":" + std::to_string(port);
}

uint64_t destination_hash(std::string_view key) {
    uint64_t h = 1469598103934665603ull;
    for (char c : key)
        h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    return h;
}

std::string normalize_domain(std::string_view domain) {
    if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    std::string out(domain);
    for (char& c : out)
        c = lower(c);
    return out;
}

bool normalize_into(std::string_view domain, char* buf, size_t size, std::string_view* out) {
    if (!domain.empty() && domain.back() == '.') domain.remove_suffix(1);
    if (domain.size() >= size) return false;
    for (size_t i = 0; i < domain.size(); i++)
        buf[i] = lower(domain[i]);
    *out = std::string_view(buf, domain.size());
    return true;
}

std::optional<IpAddress> parse_domain_literal(std::string_view text) {
    if (text.size() < 3 || text.front() != '[' || text.back() != ']') return std::nullopt;
    std::string_view inner = text.substr(1, text.size() - 2);
    constexpr std::string_view kTag = "IPv6:";
    if (inner.size() > kTag.size() && iequals(inner.substr(0, kTag.size()), kTag)) {
        return parse_v6(inner.substr(kTag.size()));
    }
    // General-address-literal tags other than IPv6 are not deliverable (§4.1.3).
    return parse_v4(inner);
}

std::string format_ip(const IpAddress& ip) {
    char buf[INET6_ADDRSTRLEN];
    if (is_v4_mapped(ip)) {
        inet_ntop(AF_INET, ip.bytes.data() + kV4Offset, buf, sizeof buf);
    } else {
        inet_ntop(AF_INET6, ip.bytes.data(), buf, sizeof buf);
    }
    return buf;
}

std::optional<Smarthost> parse_smarthost(std::string_view text) {
    Smarthost s;
    if (!text.empty() && text.front() == '[') {
        const size_t close = text.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        if (!split_port(text.substr(close + 1), &s.port)) return std::nullopt;
        const std::string_view inner = text.substr(1, close - 1);
        if (auto lit = parse_domain_literal(text.substr(0, close + 1))) {
            s.literal = lit;
        } else if (auto v6 = parse_v6(inner)) {
            s.literal = v6;  // "[2001:db8::1]": the tag is optional in a flag
        } else if (host_name_ok(inner)) {
            s.host = normalize_domain(inner);
        } else {
            return std::nullopt;
        }
        return s;
    }
    const size_t colon = text.find(':');
    if (colon != std::string_view::npos && text.find(':', colon + 1) != std::string_view::npos) {
        return std::nullopt;  // a bare IPv6 address: ambiguous with a port, needs brackets
    }
    const std::string_view host = text.substr(0, colon);
    if (colon != std::string_view::npos && !split_port(text.substr(colon), &s.port)) {
        return std::nullopt;
    }
    if (auto v4 = parse_v4(host)) {
        s.literal = v4;
    } else if (host_name_ok(host)) {
        s.host = normalize_domain(host);
    } else {
        return std::nullopt;
    }
    return s;
}

std::optional<DnsServer> parse_dns_server(std::string_view text) {
    std::string_view host = text;
    uint16_t port = 53;
    if (!text.empty() && text.front() == '[') {
        const size_t close = text.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        if (!split_port(text.substr(close + 1), &port)) return std::nullopt;
        host = text.substr(1, close - 1);
    } else if (std::count(text.begin(), text.end(), ':') == 1) {
        const size_t colon = text.find(':');
        if (!split_port(text.substr(colon), &port)) return std::nullopt;
        host = text.substr(0, colon);
    }
    const auto ip = IpAddress::parse(host);
    if (!ip) return std::nullopt;
    DnsServer s;
    if (is_v4_mapped(*ip) && host.find(':') == std::string_view::npos) {
        auto* sin = reinterpret_cast<sockaddr_in*>(&s.addr);
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        std::memcpy(&sin->sin_addr, ip->bytes.data() + kV4Offset, 4);
        s.length = sizeof(sockaddr_in);
    } else {
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(&s.addr);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        std::memcpy(&sin6->sin6_addr, ip->bytes.data(), 16);
        s.length = sizeof(sockaddr_in6);
    }
    return s;
}

OwnAddresses::OwnAddresses(std::vector<IpAddress> listen, std::vector<IpAddress> interfaces)
    : addresses_(std::move(listen)) {
    any_local_ = std::any_of(addresses_.begin(), addresses_.end(), is_unspecified);
    if (any_local_) addresses_.insert(addresses_.end(), interfaces.begin(), interfaces.end());
}

bool OwnAddresses::contains(const IpAddress& ip) const {
    // With a wildcard listener, loopback and the wildcard address itself reach us too.
    if (any_local_ && (is_loopback(ip) || is_unspecified(ip))) return true;
    return std::find(addresses_.begin(), addresses_.end(), ip) != addresses_.end();
}

bool OwnAddresses::contains(const IpAddress& ip, uint16_t port) const {
    if (!contains(ip)) return false;
    return ports_.empty() || std::find(ports_.begin(), ports_.end(), port) != ports_.end();
}

std::vector<IpAddress> OwnAddresses::interface_addresses() {
    std::vector<IpAddress> out;
    ifaddrs* list = nullptr;
    if (getifaddrs(&list) != 0) return out;
    for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
        if (i->ifa_addr == nullptr) continue;
        IpAddress a;
        if (i->ifa_addr->sa_family == AF_INET) {
            a.bytes[10] = 0xff;
            a.bytes[11] = 0xff;
            std::memcpy(a.bytes.data() + kV4Offset,
                        &reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr, 4);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            std::memcpy(a.bytes.data(),
                        &reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr, 16);
        } else {
            continue;
        }
        out.push_back(a);
    }
    freeifaddrs(list);
    return out;
}

Resolution make_bounce(const char* status, std::string text) {
    Resolution r;
    r.outcome = Outcome::bounce;
    r.status = status;
    r.text = std::move(text);
    return r;
}

Resolution make_defer(const char* status, std::string text) {
    Resolution r;
    r.outcome = Outcome::defer;
    r.status = status;
    r.text = std::move(text);
    return r;
}

Resolution decide_mail_domain(std::string_view domain, bool implicit_mx,
                              std::vector<HostAnswer> hosts, const OwnAddresses& own) {
    RM_ASSERT(!implicit_mx || hosts.size() == 1);
    const std::string name(domain);
    // RFC 5321 §5.1: if we are one of the MX hosts, only hosts strictly more preferred than
    // us may be used; if none is, the mail would loop back to us.
    for (size_t i = 0; i < hosts.size(); ++i) {
        if (!any_own(hosts[i].host, own)) continue;
        const uint16_t ours = hosts[i].host.preference;
        std::erase_if(hosts, [&](const HostAnswer& h) { return h.host.preference >= ours; });
        if (hosts.empty()) {
            return make_bounce("5.4.6", "mail for " + name + " loops back to myself");
        }
        break;
    }
    bool tempfail = false;
    std::vector<MxHost> usable;
    for (HostAnswer& h : hosts) {
        tempfail = tempfail || h.tempfail;
        if (!h.host.addresses.empty()) usable.push_back(std::move(h.host));
    }
    if (usable.empty() && implicit_mx && !tempfail) {
        return make_bounce("5.4.4", "no MX or address records for " + name);
    }
    if (usable.empty()) {
        return make_defer("4.4.3", "no address for the mail exchangers of " + name);
    }
    std::string key = destination_key_for_hosts(usable, smtp_port);
    return make_ok(std::move(usable), smtp_port, std::move(key));
}

Resolution decide_relay(HostAnswer answer, uint16_t port, const OwnAddresses& own) {
    const std::string name = answer.host.name;
    // A smarthost that is us is a configuration error: defer (4.4.6) so that mail waits
    // for the fix instead of bouncing.
    if (std::any_of(answer.host.addresses.begin(), answer.host.addresses.end(),
                    [&](const IpAddress& a) { return own.contains(a, port); })) {
        return make_defer("4.4.6", "smarthost " + name + " loops back to myself");
    }
    if (answer.host.addresses.empty()) {
        return make_defer("4.4.3", "no address for smarthost " + name);
    }
    std::string key = destination_key_for_relay(name, port);
    std::vector<MxHost> hosts;
    hosts.push_back(std::move(answer.host));
    return make_ok(std::move(hosts), port, std::move(key));
}

Resolution decide_address(const IpAddress& ip, uint16_t port, const OwnAddresses& own,
                          bool is_relay) {
    const std::string text = format_ip(ip);
    if (is_relay ? own.contains(ip, port) : own.contains(ip)) {
        if (is_relay) return make_defer("4.4.6", "smarthost [" + text + "] is myself");
        return make_bounce("5.4.6", "mail for [" + text + "] loops back to myself");
    }
    MxHost h;
    h.name = "[" + text + "]";
    h.addresses.push_back(ip);
    std::vector<MxHost> hosts;
    hosts.push_back(std::move(h));
    return make_ok(std::move(hosts), port, destination_key_for_address(ip, port));
}

}  // namespace ringmail::dns
