// auth_throttle.hpp — growing delays, then a refusal, for repeated AUTH failures from one
// client address (smtp.md: "failures 535 5.7.8 with growing delay").
//
// Pure bookkeeping on a caller-supplied clock (tests use a fake one). Each reactor owns one
// and keeps in it the addresses it owns (Engine: a hash of the address picks the core), so
// every connection of an address meets the same entry whichever core SO_REUSEPORT gave it.
// An attempt is reserved before the credentials are checked: admit() refuses the address, or
// admits it with the penalty a failure will carry, so a connection on another core needs one
// round trip per attempt and none after the check; finish() then settles the reservation
// (a one-way message). Addresses are 16-byte IPv6 (IPv4-mapped) forms.
//
// Guarantees:
//   - The n-th failure within the window is delayed delay_ms·2^(n-1) (capped at
//     delay_max_ms); the failures_max-th ends the connection with 421, and the address is
//     refused at once until window_ms pass without a failure. Other addresses are unaffected.
//   - Attempts still being checked count as failures until they are settled, so checks that
//     run at the same time on many connections cannot together exceed failures_max (a
//     guesser gains nothing by running them in parallel).
//   - Bounded memory: at most tracked_max addresses; expired entries are dropped first, and
//     when every entry is live the least recently failed one is evicted. An address whose
//     attempts all succeeded leaves no entry behind.
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

// The answer to admit().
struct AuthAdmission {
    bool refused = false;    // the address used up its failures: 421 at once, no check
    AuthPenalty on_failure;  // admitted: what a failed check gets
};

// How an admitted attempt ended.
enum class AuthEnd : uint8_t {
    succeeded,  // the reservation is returned
    failed,     // it becomes a failure
    abandoned,  // no answer reached the client (it hung up, or the checker was full): returned
};

class AuthThrottle {
  public:
    using Address = std::array<uint8_t, 16>;

    explicit AuthThrottle(const AuthThrottleSettings& settings) : settings_(settings) {}

    // Before a check: refused, or admitted and reserved until finish().
    [[nodiscard]] AuthAdmission admit(const Address& a, uint64_t now_ms);
    // Settles an attempt admit() let through.
    void finish(const Address& a, AuthEnd end, uint64_t now_ms);
    [[nodiscard]] size_t tracked() const { return entries_.size(); }

  private:
    struct Entry {
        uint32_t failures = 0;
        uint32_t checking = 0;  // admitted, not yet finished
        uint64_t last_failure_ms = 0;
    };
    struct Hash {
        size_t operator()(const Address& a) const noexcept;
    };

    [[nodiscard]] bool quiet(const Entry& e, uint64_t now_ms) const {
        return now_ms - e.last_failure_ms >= settings_.window_ms;
    }
    [[nodiscard]] bool expired(const Entry& e, uint64_t now_ms) const {
        return e.checking == 0 && (e.failures == 0 || quiet(e, now_ms));
    }
    void forget_old_failures(Entry& e, uint64_t now_ms) const {
        if (e.failures > 0 && quiet(e, now_ms)) e.failures = 0;
    }
    [[nodiscard]] AuthPenalty penalty(uint32_t failures) const;
    std::unordered_map<Address, Entry, Hash>::iterator find_or_add(const Address& a,
                                                                   uint64_t now_ms);
    void make_room(uint64_t now_ms);

    AuthThrottleSettings settings_;
    std::unordered_map<Address, Entry, Hash> entries_;
};

}  // namespace ringmail::tls
