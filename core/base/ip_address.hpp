// ip_address.hpp — an IPv4 or IPv6 address, the one address type of every layer (client
// addresses, relay networks, DNS answers, destinations). Includes nothing of ours.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ringmail {

// IPv4 is stored as an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
struct IpAddress {
    std::array<uint8_t, 16> bytes{};
    static std::optional<IpAddress> parse(std::string_view text);  // "1.2.3.4", "::1"
    bool operator==(const IpAddress&) const = default;
};

}  // namespace ringmail
