// ip_address.cpp — see ip_address.hpp.
#include "core/base/ip_address.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace ringmail {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    char buf[64];  // inet_pton wants a NUL-terminated string; longer is no address
    if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
    if (text.find('\0') != std::string_view::npos) return std::nullopt;  // a NUL would end it early
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    IpAddress a;
    in_addr v4{};
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        a.bytes[10] = 0xff;
        a.bytes[11] = 0xff;
        std::memcpy(a.bytes.data() + 12, &v4, sizeof v4);
        return a;
    }
    if (inet_pton(AF_INET6, buf, a.bytes.data()) == 1) return a;
    return std::nullopt;
}

}  // namespace ringmail
