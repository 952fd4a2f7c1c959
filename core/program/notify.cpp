// notify.cpp — see notify.hpp.
#include "core/program/notify.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace ringmail {
namespace {

// A decimal environment value, or 0 when absent or not a number.
uint64_t env_u64(const char* name) {
    const char* v = getenv(name);
    if (v == nullptr || *v == '\0') return 0;
    char* end = nullptr;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    return errno == 0 && *end == '\0' ? n : 0;
}

}  // namespace

Notifier Notifier::from_environment() {
    Notifier n;
    const char* path = getenv("NOTIFY_SOCKET");
    if (path == nullptr) return n;
    const size_t len = strlen(path);
    // "@name": the abstract namespace (a leading NUL); otherwise an absolute path.
    if (len < 2 || len >= sizeof n.addr_.sun_path || (path[0] != '/' && path[0] != '@')) return n;
    n.addr_.sun_family = AF_UNIX;
    memcpy(n.addr_.sun_path, path, len);
    if (path[0] == '@') n.addr_.sun_path[0] = '\0';
    n.addr_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    n.fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const uint64_t usec = env_u64("WATCHDOG_USEC");
    const uint64_t pid = env_u64("WATCHDOG_PID");
    if (usec > 0 && (pid == 0 || pid == static_cast<uint64_t>(getpid())))
        n.watchdog_interval_us_ = usec / 2 > 0 ? usec / 2 : 1;
    return n;
}

Notifier::Notifier(Notifier&& o) noexcept
    : fd_(o.fd_),
      addr_(o.addr_),
      addr_len_(o.addr_len_),
      watchdog_interval_us_(o.watchdog_interval_us_) {
    o.fd_ = -1;
}

Notifier::~Notifier() {
    if (fd_ >= 0) close(fd_);
}

bool Notifier::send(std::string_view state) const {
    if (fd_ < 0) return false;
    const ssize_t n = sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                             reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
    return n == static_cast<ssize_t>(state.size());
}

}  // namespace ringmail
