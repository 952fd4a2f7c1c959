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

AuthAdmission AuthThrottle::admit(const Address& a, uint64_t now_ms) {
    Entry& e = find_or_add(a, now_ms)->second;
    // Attempts being checked count already: had they all failed, this one would come next.
    const uint32_t counted = e.failures + e.checking;
    if (counted >= settings_.failures_max) return {true, {}};
    e.checking++;
    return {false, penalty(counted + 1)};
}

void AuthThrottle::finish(const Address& a, AuthEnd end, uint64_t now_ms) {
    auto it = entries_.find(a);
    if (it == entries_.end()) {
        // Evicted while its check ran (the table was full of live entries): a failure still
        // counts, a returned reservation has nothing to return to.
        if (end != AuthEnd::failed) return;
        it = find_or_add(a, now_ms);
    }
    Entry& e = it->second;
    if (e.checking > 0) e.checking--;
    if (end == AuthEnd::failed) {
        forget_old_failures(e, now_ms);
        e.failures++;
        e.last_failure_ms = now_ms;
    }
    if (expired(e, now_ms)) entries_.erase(it);
}

AuthPenalty AuthThrottle::penalty(uint32_t failures) const {
    if (failures >= settings_.failures_max) return {0, true};
    const uint32_t shift = std::min<uint32_t>(failures - 1, 20);
    const uint64_t delay = uint64_t{settings_.delay_ms} << shift;
    return {static_cast<uint32_t>(std::min<uint64_t>(delay, settings_.delay_max_ms)), false};
}

std::unordered_map<AuthThrottle::Address, AuthThrottle::Entry, AuthThrottle::Hash>::iterator
AuthThrottle::find_or_add(const Address& a, uint64_t now_ms) {
    auto it = entries_.find(a);
    if (it != entries_.end()) {
        forget_old_failures(it->second, now_ms);
        return it;
    }
    if (entries_.size() >= settings_.tracked_max) make_room(now_ms);
    return entries_.emplace(a, Entry{}).first;
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
