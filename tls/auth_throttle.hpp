// auth_throttle.hpp — growing delays, then a refusal, for repeated AUTH failures from one
// client address (smtp.md: "failures 535 5.7.8 with growing delay").
//
// Pure bookkeeping on a caller-supplied clock (tests use a fake one). Each reactor owns one
// and consults it for the clients it serves: the connection driver asks blocked() before it
// hands credentials to the AuthWorker, and failed() when a check fails, then holds the 535
// back for the delay returned. Addresses are 16-byte IPv6 (IPv4-mapped) forms.
//
// Guarantees:
//   - The n-th failure within the window is delayed delay_ms·2^(n-1) (capped at
//     delay_max_ms); the failures_max-th ends the connection with 421, and the address is
//     refused at once until window_ms pass without a failure. Other addresses are unaffected.
//   - Bounded memory: at most tracked_max addresses; expired entries are dropped first, and
//     when every entry is live the least recently failed one is evicted.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <unordered_map>

namespace ringmail::tls {

struct AuthThrottleSettings {
    uint32_t failures_max = 5;       // this many failures in the window: 421 and refusal
    uint32_t delay_ms = 1000;        // before the 535 of the first failure; doubles after
    uint32_t delay_max_ms = 30'000;  // no single delay longer than this
    uint64_t window_ms = 600'000;    // a failure is forgotten this long after the last one
    size_t tracked_max = 16384;      // addresses remembered
};

struct AuthPenalty {
    uint32_t delay_ms = 0;    // hold the 535 back this long
    bool disconnect = false;  // answer 421 and close instead
};

class AuthThrottle {
  public:
    using Address = std::array<uint8_t, 16>;

    explicit AuthThrottle(const AuthThrottleSettings& settings) : settings_(settings) {}

    // True when the address has used up its failures within the window: refuse at once.
    [[nodiscard]] bool blocked(const Address& a, uint64_t now_ms);
    // A failed check from the address: what to do with the reply.
    [[nodiscard]] AuthPenalty failed(const Address& a, uint64_t now_ms);
    [[nodiscard]] size_t tracked() const { return entries_.size(); }

  private:
    struct Entry {
        uint32_t failures = 0;
        uint64_t last_failure_ms = 0;
    };
    struct Hash {
        size_t operator()(const Address& a) const noexcept;
    };

    [[nodiscard]] bool expired(const Entry& e, uint64_t now_ms) const {
        return now_ms - e.last_failure_ms >= settings_.window_ms;
    }
    void make_room(uint64_t now_ms);

    AuthThrottleSettings settings_;
    std::unordered_map<Address, Entry, Hash> entries_;
};

}  // namespace ringmail::tls
