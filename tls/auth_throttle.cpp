// auth_throttle.cpp — see auth_throttle.hpp.
#include "tls/auth_throttle.hpp"

#include <algorithm>

namespace ringmail::tls {

size_t AuthThrottle::Hash::operator()(const Address& a) const noexcept {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (const uint8_t b : a)
        h = (h ^ b) * 1099511628211ull;
    return static_cast<size_t>(h);
}

bool AuthThrottle::blocked(const Address& a, uint64_t now_ms) {
    const auto it = entries_.find(a);
    if (it == entries_.end()) return false;
    if (expired(it->second, now_ms)) {
        entries_.erase(it);
        return false;
    }
    return it->second.failures >= settings_.failures_max;
}

AuthPenalty AuthThrottle::failed(const Address& a, uint64_t now_ms) {
    auto it = entries_.find(a);
    if (it != entries_.end() && expired(it->second, now_ms)) it->second = Entry{};
    if (it == entries_.end()) {
        if (entries_.size() >= settings_.tracked_max) make_room(now_ms);
        it = entries_.emplace(a, Entry{}).first;
    }
    Entry& e = it->second;
    e.failures++;
    e.last_failure_ms = now_ms;
    if (e.failures >= settings_.failures_max) return {0, true};
    const uint32_t shift = std::min<uint32_t>(e.failures - 1, 20);
    const uint64_t delay = uint64_t{settings_.delay_ms} << shift;
    return {static_cast<uint32_t>(std::min<uint64_t>(delay, settings_.delay_max_ms)), false};
}

// Runs only when the table is full: a linear pass is fine at that rate, and keeps the steady
// state free of any expiry structure.
void AuthThrottle::make_room(uint64_t now_ms) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (expired(it->second, now_ms)) {
            it = entries_.erase(it);
            continue;
        }
        if (oldest == entries_.end() || it->second.last_failure_ms < oldest->second.last_failure_ms)
            oldest = it;
        ++it;
    }
    if (entries_.size() >= settings_.tracked_max && oldest != entries_.end())
        entries_.erase(oldest);
}

}  // namespace ringmail::tls
