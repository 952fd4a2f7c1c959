// destination.hpp — what resolving a mail domain gives the scheduler, and the pure rules that
// turn DNS answers into it.
//
// Called by dns/resolver.cpp (which feeds it udns answers) and by the scheduler (which reads
// Resolution). Nothing here touches a socket or a clock, so every rule is unit-tested alone:
//  - MX order: preference ascending, random among equal preferences (RFC 5321 §5.1), from a
//    seedable generator so a test or a simulation replays the same order;
//  - null MX (RFC 7505 §3) is recognised only as the single record "0 .";
//  - an MX host that is one of our own addresses cuts the list at its preference (RFC 5321
//    §5.1: "discard all MX records with preference >= its own"); nothing left is a mail loop;
//  - the destination key names the sorted MX host set (or the smarthost, or the literal
//    address) and port, so domains served by the same hosts share one destination.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/ip_address.hpp"

namespace ringmail::dns {

using ringmail::IpAddress;

// Defaults of the DNS flags (the lead may move them to core/base/limits.hpp).
inline constexpr uint32_t cache_max_ttl_s_default = 3600;
inline constexpr uint32_t negative_ttl_s_default = 60;
inline constexpr uint32_t cache_entries_default = 100000;
inline constexpr uint32_t query_timeout_s_default = 4;  // udns: first try; doubled each round
inline constexpr uint32_t query_tries_default = 3;
inline constexpr size_t dns_servers_max = 6;      // udns DNS_MAXSERV
inline constexpr size_t mx_hosts_max = 10;        // after ordering; the rest are dropped
inline constexpr size_t host_addresses_max = 16;  // per MX host and address family
inline constexpr uint16_t smtp_port = 25;

struct DnsConfig {
    // --dns-server IP[:PORT] (repeatable; "[v6]:PORT" for IPv6 with a port).
    // Empty: the nameservers of /etc/resolv.conf.
    std::vector<std::string> servers;
    uint32_t cache_max_ttl_s = cache_max_ttl_s_default;  // --dns-cache-max-ttl-s
    uint32_t negative_ttl_s = negative_ttl_s_default;    // --dns-negative-ttl-s
    uint32_t cache_entries = cache_entries_default;      // --dns-cache-entries
    uint32_t query_timeout_s = query_timeout_s_default;  // udns "timeout" (1..300)
    uint32_t query_tries = query_tries_default;          // udns "attempts" (1..50)
    uint64_t rng_seed = 0;                               // 0: from getrandom()
};

enum class Outcome : uint8_t { ok, bounce, defer };

struct MxHost {
    std::string name;  // lower case, no trailing dot; "[192.0.2.1]" for a literal
    uint16_t preference = 0;
    std::vector<IpAddress> addresses;  // IPv4 first, then IPv6; never empty in an ok result
};

struct Resolution {
    Outcome outcome = Outcome::defer;
    const char* status = "";    // enhanced status code (RFC 3463): "5.1.2"; "" when ok
    std::string text;           // why, for the DSN and the log
    std::vector<MxHost> hosts;  // ok: in the order to try
    uint16_t port = smtp_port;
    std::string destination_key;  // ok only: equal keys share a destination
    uint64_t destination_hash = 0;
    uint32_t ttl_s = 0;       // how long the answer may be reused (capped)
    uint64_t expires_ms = 0;  // on the resolver's clock; set by the resolver
};
using ResolutionPtr = std::shared_ptr<const Resolution>;

struct MxRecord {
    std::string name;  // as received; "" or "." is the root
    uint16_t preference = 0;
};

// splitmix64: small, seedable, good enough to spread load over equal-preference MX hosts.
class Rng {
  public:
    explicit Rng(uint64_t seed) : state_(seed) {}
    [[nodiscard]] uint64_t next();
    [[nodiscard]] uint32_t below(uint32_t n);  // uniform enough in [0, n), n > 0

  private:
    uint64_t state_;
};

// RFC 7505 §3: a single MX record with preference 0 and the root as exchange.
[[nodiscard]] bool is_null_mx(std::span<const MxRecord> records);

// Drops root exchanges (invalid next to real MX records, RFC 7505 §3), lower-cases names,
// sorts by preference and shuffles each run of equal preference; keeps mx_hosts_max.
void order_mx(std::vector<MxRecord>& records, Rng& rng);

// "mx:a.example,b.example:25" — names sorted and de-duplicated, so order does not matter.
[[nodiscard]] std::string destination_key_for_hosts(std::span<const MxHost> hosts, uint16_t port);
[[nodiscard]] std::string destination_key_for_relay(std::string_view host, uint16_t port);
[[nodiscard]] std::string destination_key_for_address(const IpAddress& ip, uint16_t port);
[[nodiscard]] uint64_t destination_hash(std::string_view key);  // FNV-1a 64

// Lower case, one trailing dot removed.
[[nodiscard]] std::string normalize_domain(std::string_view domain);
// The same into a caller's buffer (no allocation); false when it does not fit.
[[nodiscard]] bool normalize_into(std::string_view domain, char* buf, size_t size,
                                  std::string_view* out);

// RFC 5321 §4.1.3: "[192.0.2.1]" or "[IPv6:2001:db8::1]" (tag case-insensitive).
[[nodiscard]] std::optional<IpAddress> parse_domain_literal(std::string_view text);

// Canonical text: dotted quad for IPv4 (and IPv4-mapped), RFC 5952 for IPv6.
[[nodiscard]] std::string format_ip(const IpAddress& ip);

// --smarthost HOST[:PORT]: "relay.example", "relay.example:587", "[relay.example]:587" (the
// Postfix spelling), "192.0.2.1:2525", "[192.0.2.1]", "[IPv6:2001:db8::1]:25",
// "[2001:db8::1]:25".
struct Smarthost {
    std::string host;                  // lower case; empty when literal is set
    std::optional<IpAddress> literal;  // an address: no DNS at all
    uint16_t port = smtp_port;
};
[[nodiscard]] std::optional<Smarthost> parse_smarthost(std::string_view text);

// --dns-server IP[:PORT]: "192.0.2.53", "192.0.2.53:5353", "2001:db8::53", "[2001:db8::53]:53".
struct DnsServer {
    sockaddr_storage addr{};
    socklen_t length = 0;
};
[[nodiscard]] std::optional<DnsServer> parse_dns_server(std::string_view text);

// Our own addresses, for the mail-loop check. A wildcard listener (0.0.0.0 or ::) stands for
// every address of this host: the interface addresses given, loopback, and the wildcard itself.
class OwnAddresses {
  public:
    OwnAddresses() = default;
    OwnAddresses(std::vector<IpAddress> listen, std::vector<IpAddress> interfaces);
    [[nodiscard]] bool contains(const IpAddress& ip) const;
    // A relay (--smarthost) at ip:port is us only if we also listen on that port: a local
    // content filter on 127.0.0.1:10025 is another program, not a loop.
    [[nodiscard]] bool contains(const IpAddress& ip, uint16_t port) const;
    void set_listen_ports(std::vector<uint16_t> ports) { ports_ = std::move(ports); }
    // getifaddrs(): call at start, never on a reactor in the steady state.
    [[nodiscard]] static std::vector<IpAddress> interface_addresses();

  private:
    std::vector<IpAddress> addresses_;
    std::vector<uint16_t> ports_;  // empty: any port
    bool any_local_ = false;
};

// The answers for one MX host (or the implicit MX, or the smarthost).
struct HostAnswer {
    MxHost host;
    bool tempfail = false;  // an A or AAAA query failed for a reason other than "no such data"
};

// Turns the answers for the MX hosts of `domain` into the outcome (without TTL). The hosts
// are in delivery order. implicit_mx: the single host is the domain itself (RFC 5321 §5.1).
[[nodiscard]] Resolution decide_mail_domain(std::string_view domain, bool implicit_mx,
                                            std::vector<HostAnswer> hosts, const OwnAddresses& own);
// The same for a smarthost (port given): failures defer, so mail waits for a fixed config.
[[nodiscard]] Resolution decide_relay(HostAnswer answer, uint16_t port, const OwnAddresses& own);
// A domain literal or literal smarthost: no DNS.
[[nodiscard]] Resolution decide_address(const IpAddress& ip, uint16_t port, const OwnAddresses& own,
                                        bool is_relay);

[[nodiscard]] Resolution make_bounce(const char* status, std::string text);
[[nodiscard]] Resolution make_defer(const char* status, std::string text);

}  // namespace ringmail::dns
