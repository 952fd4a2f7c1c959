// relay_policy.hpp — who may relay where (no open relay; smtp.md "Relay policy").
//
// A client in --relay-networks (or, later, an authenticated one) may relay to any domain.
// Anyone may send to the --relay-domains. Everything else is refused at RCPT with 554 5.7.1,
// including the address tricks open-relay scanners try: '%' and '!' in the local part, a
// quoted local part holding '@', source routes, domain literals, trailing dots, and suffix
// matches that are not on a label boundary.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/ip_address.hpp"

namespace ringmail::smtp {

using ringmail::IpAddress;

struct Cidr {
    IpAddress base;
    uint8_t prefix_bits = 128;  // over the 128-bit form (IPv4 /8 is stored as /104)
    // "127.0.0.0/8", "::1/128", "::ffff:10.0.0.0/104", "10.1.2.3" (a single host).
    static std::optional<Cidr> parse(std::string_view text);
    bool contains(const IpAddress& a) const;
};

class RelayPolicy {
  public:
    RelayPolicy() = default;
    RelayPolicy(std::vector<Cidr> networks, std::vector<std::string> domains);

    // Client address in --relay-networks.
    [[nodiscard]] bool network_trusted(const IpAddress& client) const;
    // The recipient domain is one we accept mail for from anyone: an exact,
    // case-insensitive match of a --relay-domains entry, or a subdomain of an entry written
    // with a leading dot (".example.com").
    [[nodiscard]] bool domain_accepted(std::string_view domain) const;
    // Full decision for one recipient (address already parsed, source route removed).
    // Untrusted clients are refused routing tricks in the local part even to our domains.
    [[nodiscard]] bool may_send(bool client_trusted, std::string_view local_part,
                                std::string_view domain) const;

  private:
    std::vector<Cidr> networks_;
    std::vector<std::string> domains_;  // lower case
};

}  // namespace ringmail::smtp
