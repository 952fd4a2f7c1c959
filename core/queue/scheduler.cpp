// scheduler.cpp — see scheduler.hpp.
#include "core/queue/scheduler.hpp"

#include <charconv>

#include "core/base/log.hpp"

namespace ringmail::sched {

bool parse_duration_ms(std::string_view text, uint64_t* out) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || p == text.data()) return false;
    std::string_view unit(p, static_cast<size_t>(text.data() + text.size() - p));
    uint64_t mul;
    if (unit.empty() || unit == "s") {
        mul = 1000;
    } else if (unit == "ms") {
        mul = 1;
    } else if (unit == "m") {
        mul = 60'000;
    } else if (unit == "h") {
        mul = 3'600'000;
    } else if (unit == "d") {
        mul = 86'400'000;
    } else {
        return false;
    }
    if (v > UINT64_MAX / mul) return false;
    *out = v * mul;
    return true;
}

bool parse_retry_schedule(std::string_view text, RetryPolicy* out) {
    size_t colon = text.find(':');
    if (colon == std::string_view::npos) return false;
    uint64_t first, max;
    if (!parse_duration_ms(text.substr(0, colon), &first) ||
        !parse_duration_ms(text.substr(colon + 1), &max) || first == 0 || max < first)
        return false;
    out->first_ms = first;
    out->max_ms = max;
    return true;
}

uint64_t retry_delay_ms(const RetryPolicy& p, uint32_t attempt, uint64_t random) {
    RM_ASSERT(attempt >= 1);
    uint64_t d = p.first_ms;
    for (uint32_t i = 1; i < attempt && d < p.max_ms; i++)
        d *= 2;
    if (d > p.max_ms) d = p.max_ms;
    // ± jitter_percent, uniformly from `random`.
    uint64_t span = d * p.jitter_percent / 100;
    if (span == 0) return d;
    uint64_t offset = random % (2 * span + 1);
    return d - span + offset;
}

// --- MessageTable --------------------------------------------------------------------------

MessageRef MessageTable::add(uint64_t id, uint64_t arrival_ms, uint32_t rcpt_count,
                             uint64_t now_ms) {
    RM_ASSERT(rcpt_count > 0 && rcpt_count <= UINT16_MAX);
    uint32_t index;
    if (!free_.empty()) {
        index = free_.back();
        free_.pop_back();
    } else {
        index = static_cast<uint32_t>(slots_.size());
        slots_.emplace_back();
    }
    Slot& s = slots_[index];
    RM_ASSERT(!s.live);
    s.id = id;
    s.arrival_ms = arrival_ms;
    s.generation++;
    s.pending = rcpt_count;
    s.live = true;
    s.scheduled_ms = UINT64_MAX;
    s.rcpts.assign(rcpt_count, Rcpt{RcptState::pending, false, 0, now_ms});
    live_++;
    schedule(index, now_ms);
    deadlines_.push(Due{deadline_ms(s), index, s.generation});
    return {index, s.generation};
}

void MessageTable::restore(MessageRef m, uint32_t rcpt, RcptState st, uint32_t attempts,
                           uint64_t next_attempt_ms) {
    RM_ASSERT(valid(m));
    Slot& s = slots_[m.index];
    RM_ASSERT(rcpt < s.rcpts.size());
    Rcpt& r = s.rcpts[rcpt];
    r.attempts = static_cast<uint16_t>(std::min<uint32_t>(attempts, UINT16_MAX));
    if (st != RcptState::pending) {
        if (r.state == RcptState::pending) settle(s, r, st);
        return;
    }
    r.next_attempt_ms = next_attempt_ms;
    schedule(m.index, next_attempt_ms);
}

void MessageTable::schedule(uint32_t index, uint64_t at_ms) {
    Slot& s = slots_[index];
    if (at_ms >= s.scheduled_ms) return;  // an earlier entry already covers it
    s.scheduled_ms = at_ms;
    due_.push(Due{at_ms, index, s.generation});
}

void MessageTable::settle(Slot& s, Rcpt& r, RcptState st) {
    RM_ASSERT(r.state == RcptState::pending && st != RcptState::pending && s.pending > 0);
    r.state = st;
    r.inflight = false;
    s.pending--;
}

void MessageTable::take_due(uint64_t now_ms, std::vector<MessageRef>& out, size_t max) {
    size_t taken = 0;
    while (taken < max && !due_.empty() && due_.top().at_ms <= now_ms) {
        Due d = due_.top();
        due_.pop();
        Slot& s = slots_[d.index];
        if (!s.live || s.generation != d.generation || s.scheduled_ms != d.at_ms) continue;
        s.scheduled_ms = UINT64_MAX;
        if (s.pending == 0) continue;
        out.push_back({d.index, d.generation});
        taken++;
    }
}

void MessageTable::due_rcpts(MessageRef m, uint64_t now_ms, std::vector<uint32_t>& out) {
    RM_ASSERT(valid(m));
    Slot& s = slots_[m.index];
    uint64_t later = UINT64_MAX;
    for (uint32_t i = 0; i < s.rcpts.size(); i++) {
        Rcpt& r = s.rcpts[i];
        if (r.state != RcptState::pending || r.inflight) continue;
        if (r.next_attempt_ms <= now_ms) {
            r.inflight = true;
            out.push_back(i);
        } else if (r.next_attempt_ms < later) {
            later = r.next_attempt_ms;
        }
    }
    if (later != UINT64_MAX) schedule(m.index, later);  // the others, when their time comes
}

uint64_t MessageTable::next_due_ms() const {
    return due_.empty() ? UINT64_MAX : due_.top().at_ms;
}

Decision MessageTable::outcome(MessageRef m, uint32_t rcpt, Outcome o, uint64_t now_ms,
                               uint64_t random) {
    RM_ASSERT(valid(m));
    Slot& s = slots_[m.index];
    RM_ASSERT(rcpt < s.rcpts.size());
    Rcpt& r = s.rcpts[rcpt];
    if (r.state != RcptState::pending) return {r.state};  // already final (the watchdog won)
    r.inflight = false;
    r.attempts++;
    if (o == Outcome::delivered) {
        settle(s, r, RcptState::delivered);
        return {RcptState::delivered};
    }
    if (o == Outcome::bounced) {
        settle(s, r, RcptState::bounced);
        return {RcptState::bounced};
    }
    uint64_t deadline = deadline_ms(s);
    if (now_ms >= deadline) {  // the last try failed too
        settle(s, r, RcptState::bounced);
        return {RcptState::bounced, true};
    }
    // Never past the lifetime: the last retry is at the deadline itself.
    uint64_t next = std::min(now_ms + retry_delay_ms(policy_, r.attempts, random), deadline);
    r.next_attempt_ms = next;
    schedule(m.index, next);
    return {RcptState::pending, false, next};
}

void MessageTable::expire(uint64_t now_ms, std::vector<std::pair<MessageRef, uint32_t>>& out) {
    while (!deadlines_.empty() && deadlines_.top().at_ms <= now_ms) {
        Due d = deadlines_.top();
        deadlines_.pop();
        Slot& s = slots_[d.index];
        if (!s.live || s.generation != d.generation || s.pending == 0) continue;
        bool waiting = false;
        for (uint32_t i = 0; i < s.rcpts.size(); i++) {
            Rcpt& r = s.rcpts[i];
            if (r.state != RcptState::pending) continue;
            if (r.inflight) {  // its attempt decides (a deferral now bounces it)
                waiting = true;
                continue;
            }
            settle(s, r, RcptState::bounced);
            out.push_back({{d.index, d.generation}, i});
        }
        // Look again in a minute in case an attempt never reports back.
        if (waiting) deadlines_.push(Due{now_ms + 60'000, d.index, d.generation});
    }
}

bool MessageTable::valid(MessageRef m) const {
    return m.index < slots_.size() && slots_[m.index].live &&
           slots_[m.index].generation == m.generation;
}

uint64_t MessageTable::id(MessageRef m) const {
    RM_ASSERT(valid(m));
    return slots_[m.index].id;
}

RcptState MessageTable::rcpt_state(MessageRef m, uint32_t rcpt) const {
    RM_ASSERT(valid(m) && rcpt < slots_[m.index].rcpts.size());
    return slots_[m.index].rcpts[rcpt].state;
}

uint32_t MessageTable::attempts(MessageRef m, uint32_t rcpt) const {
    RM_ASSERT(valid(m) && rcpt < slots_[m.index].rcpts.size());
    return slots_[m.index].rcpts[rcpt].attempts;
}

uint64_t MessageTable::next_attempt_ms(MessageRef m, uint32_t rcpt) const {
    RM_ASSERT(valid(m) && rcpt < slots_[m.index].rcpts.size());
    return slots_[m.index].rcpts[rcpt].next_attempt_ms;
}

uint32_t MessageTable::pending(MessageRef m) const {
    RM_ASSERT(valid(m));
    return slots_[m.index].pending;
}

void MessageTable::remove(MessageRef m) {
    RM_ASSERT(valid(m));
    Slot& s = slots_[m.index];
    RM_ASSERT(s.pending == 0);
    s.live = false;
    s.rcpts.clear();
    free_.push_back(m.index);
    live_--;
}

}  // namespace ringmail::sched
