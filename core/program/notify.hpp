// notify.hpp — the service manager's notify protocol (systemd's sd_notify(3), spoken in the
// few lines it takes instead of linking libsystemd): READY=1 once the spool is recovered and
// the listeners are open, STOPPING=1 when a graceful stop begins, WATCHDOG=1 while every
// engine keeps ticking.
//
// The protocol: $NOTIFY_SOCKET names a Unix datagram socket (a path, or "@name" in the
// abstract namespace); each state is one datagram of "KEY=value" lines. $WATCHDOG_USEC asks
// for a WATCHDOG=1 at least that often (we send at half of it); $WATCHDOG_PID, when set, names
// the process it is meant for. Without $NOTIFY_SOCKET every call does nothing. Sending is best
// effort: a manager that went away never stops the relay.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <string_view>

namespace ringmail {

class Notifier {
  public:
    // Reads the environment once (the variables are left in place for nobody: the relay starts
    // no children).
    static Notifier from_environment();
    Notifier() = default;
    Notifier(const Notifier&) = delete;
    Notifier& operator=(const Notifier&) = delete;
    Notifier(Notifier&& o) noexcept;
    Notifier& operator=(Notifier&&) = delete;
    ~Notifier();

    [[nodiscard]] bool enabled() const { return fd_ >= 0; }
    // How often to send WATCHDOG=1 (half the manager's WATCHDOG_USEC); 0 when not asked.
    [[nodiscard]] uint64_t watchdog_interval_us() const { return watchdog_interval_us_; }
    // One datagram of "KEY=value\n..." lines. False when it could not be sent (or disabled).
    bool send(std::string_view state) const;

  private:
    int fd_ = -1;
    sockaddr_un addr_{};
    socklen_t addr_len_ = 0;
    uint64_t watchdog_interval_us_ = 0;
};

}  // namespace ringmail
