// listener.cpp — see listener.hpp.
#include "net/inbound/listener.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ringmail::net {
namespace {

constexpr int kBacklog = 4096;

int open_one(const ListenAddress& a, bool reuseport, std::string* error) {
    sockaddr_storage ss{};
    socklen_t len;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, a.host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(a.port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, a.host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(a.port);
        len = sizeof *v6;
    } else {
        *error = "--listen " + a.host + ": not an IP address";
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *error = std::string("socket: ") + strerror(errno);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    // Accepted sockets inherit TCP_NODELAY: replies are whole and sent once per read, so
    // Nagle would only add a delayed-ACK stall between 354 and 250.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
        (reuseport && listen(fd, kBacklog) != 0)) {
        *error = "listen on " + a.host + ":" + std::to_string(a.port) + ": " + strerror(errno);
        close(fd);
        return -1;
    }
    return fd;
}

}  // namespace

std::vector<std::vector<int>> open_listeners(const std::vector<ListenAddress>& addrs,
                                             uint32_t threads, std::string* error) {
    std::vector<std::vector<int>> out(threads);
    for (const auto& a : addrs) {
        // SO_REUSEPORT would let us join the group of another process of the same user that
        // already listens there and silently take half its connections: a plain bind first
        // finds such a listener (EADDRINUSE), as operators expect.
        int probe = open_one(a, false, error);
        if (probe < 0) {
            for (auto& v : out)
                for (int f : v)
                    close(f);
            return {};
        }
        close(probe);
        for (uint32_t t = 0; t < threads; t++) {
            int fd = open_one(a, true, error);
            if (fd < 0) {
                for (auto& v : out)
                    for (int f : v)
                        close(f);
                return {};
            }
            out[t].push_back(fd);
        }
    }
    return out;
}

}  // namespace ringmail::net
