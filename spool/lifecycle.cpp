// lifecycle.cpp — see lifecycle.hpp for the rules this code implements.
#include "spool/lifecycle.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

namespace ringmail::spool {
namespace {

// Marks a slot whose message is final or moved. Real ids hold a realtime counter and the core
// number, so they never reach it.
constexpr uint64_t dead_id = UINT64_MAX;
constexpr size_t spare_vectors_max = 4;

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "ringmail: spool lifecycle invariant broken: %s\n", what);
    std::abort();
}

void check(bool ok, const char* what) {
    if (!ok) die(what);
}

RcptFate fate_of(StatusState s) {
    switch (s) {
        case StatusState::delivered:
            return RcptFate::delivered;
        case StatusState::bounced:
            return RcptFate::bounced;
        case StatusState::expired:
            return RcptFate::expired;
        case StatusState::deferred:
            break;
    }
    return RcptFate::pending;
}

}  // namespace

bool is_final_state(StatusState s) {
    return fate_of(s) != RcptFate::pending;
}

// ---- SegmentTracker ---------------------------------------------------------------------------

SegmentTracker::SegmentTracker(int64_t compact_after_ms) : compact_after_ms_(compact_after_ms) {
    check(compact_after_ms >= 0, "negative compact_after_ms");
}

const SegmentTracker::Segment* SegmentTracker::find(uint64_t seq) const {
    const auto it = std::lower_bound(segments_.begin(), segments_.end(), seq,
                                     [](const Segment& s, uint64_t v) { return s.seq < v; });
    return it != segments_.end() && it->seq == seq ? &*it : nullptr;
}

SegmentTracker::Segment* SegmentTracker::find(uint64_t seq) {
    return const_cast<Segment*>(std::as_const(*this).find(seq));
}

SegmentTracker::Segment& SegmentTracker::slot_segment(SegmentSlot slot, uint64_t id) {
    Segment* s = find(slot.segment_seq);
    check(s != nullptr, "slot of an unknown segment");
    check(slot.index < s->ids.size(), "slot index out of range");
    check(s->ids[slot.index] == id, "slot does not hold this message (already final or moved?)");
    check(s->live > 0, "live count underflow");
    return *s;
}

void SegmentTracker::add_segment(uint64_t seq, int64_t created_ms) {
    check(segments_.empty() || seq > segments_.back().seq, "segments added out of order");
    Segment s;
    s.seq = seq;
    s.created_ms = created_ms;
    if (!spare_.empty()) {
        s.ids = std::move(spare_.back());
        spare_.pop_back();
    }
    segments_.push_back(std::move(s));
}

SegmentSlot SegmentTracker::message_added(uint64_t seq, uint64_t id) {
    check(id != dead_id, "message id collides with the dead marker");
    Segment* s = find(seq);
    check(s != nullptr, "message added to an unknown segment");
    check(!s->deleting, "message added to a segment being deleted");
    check(s->ids.size() < UINT32_MAX, "segment slot index overflow");
    s->ids.push_back(id);
    ++s->live;
    return SegmentSlot{seq, static_cast<uint32_t>(s->ids.size() - 1)};
}

void SegmentTracker::message_final(SegmentSlot slot, uint64_t id) {
    Segment& s = slot_segment(slot, id);
    s.ids[slot.index] = dead_id;
    --s.live;
}

std::optional<SegmentSlot> SegmentTracker::message_moved(SegmentSlot from, uint64_t new_seq,
                                                         uint64_t id) {
    check(new_seq > from.segment_seq, "a message moves forward only");
    const Segment* old = find(from.segment_seq);
    check(old != nullptr && from.index < old->ids.size(), "move from an unknown slot");
    if (old->ids[from.index] == dead_id) return std::nullopt;  // rule C3: final meanwhile
    message_final(from, id);
    return message_added(new_seq, id);
}

std::vector<uint64_t> SegmentTracker::deletable(uint64_t current_seq) const {
    std::vector<uint64_t> out;
    for (const Segment& s : segments_) {
        if (s.seq >= current_seq || s.live > 0) break;  // rule D1: nothing past a blocker
        if (!s.deleting) out.push_back(s.seq);
    }
    return out;
}

void SegmentTracker::delete_started(uint64_t seq) {
    Segment* s = find(seq);
    check(s != nullptr && !s->deleting, "delete of an unknown segment or twice");
    check(s->live == 0, "delete of a segment with live messages");
    for (const Segment& older : segments_) {
        if (older.seq == seq) break;
        check(older.deleting, "delete out of order: an older segment is still kept");
    }
    s->deleting = true;
}

void SegmentTracker::segment_deleted(uint64_t seq) {
    check(!segments_.empty() && segments_.front().seq == seq, "deleted segment is not the oldest");
    Segment& s = segments_.front();
    check(s.deleting && s.live == 0, "segment deleted without delete_started");
    if (spare_.size() < spare_vectors_max) {
        s.ids.clear();
        spare_.push_back(std::move(s.ids));
    }
    segments_.pop_front();
}

std::optional<uint64_t> SegmentTracker::compaction_candidate(int64_t now_ms,
                                                             uint64_t current_seq) const {
    for (const Segment& s : segments_) {
        if (s.seq >= current_seq) return std::nullopt;
        if (s.live == 0) continue;  // deletable: deletion, not compaction, frees it
        if (now_ms - s.created_ms < compact_after_ms_) return std::nullopt;
        return s.seq;
    }
    return std::nullopt;
}

void SegmentTracker::live_messages(uint64_t seq, std::vector<LiveMessage>& out) const {
    const Segment* s = find(seq);
    check(s != nullptr, "live_messages of an unknown segment");
    for (uint32_t i = 0; i < s->ids.size(); ++i) {
        if (s->ids[i] != dead_id) out.push_back(LiveMessage{SegmentSlot{seq, i}, s->ids[i]});
    }
}

uint32_t SegmentTracker::live_count(uint64_t seq) const {
    const Segment* s = find(seq);
    return s == nullptr ? 0 : s->live;
}

// ---- MessageFold ------------------------------------------------------------------------------

uint32_t FoldedMessage::pending_count() const {
    uint32_t n = 0;
    for (const RcptState& r : rcpts)
        n += r.fate == RcptFate::pending ? 1 : 0;
    return n;
}

uint64_t FoldedMessage::pin_seq() const {
    for (const RcptState& r : rcpts) {
        const bool has_state = r.fate != RcptFate::pending || r.deferred;
        if (has_state && !r.stated_since_copy) return first_copy_seq;  // rule F4
    }
    return latest.segment_seq;
}

void MessageFold::message(uint64_t id, const CopyLocation& at, uint32_t rcpt_count) {
    auto [it, fresh] = by_id_.try_emplace(id);
    FoldedMessage& m = it->second;
    if (fresh) {
        m.id = id;
        m.first_copy_seq = at.segment_seq;
    }
    // Rule F1: the later copy is the one to use; states carry over, but must be stated again
    // after it before the older copy's segment may go (rule F4).
    m.latest = at;
    ++m.copies;
    m.rcpts.resize(rcpt_count);
    for (RcptState& r : m.rcpts)
        r.stated_since_copy = false;
}

StatusEffect MessageFold::status(const Status& s) {
    const auto it = by_id_.find(s.message_id);
    if (it == by_id_.end() || s.rcpt >= it->second.rcpts.size()) {
        ++ignored_;  // rule F2
        return StatusEffect::ignored;
    }
    RcptState& r = it->second.rcpts[s.rcpt];
    if (r.fate != RcptFate::pending) {
        // Rule F3: final stays final; a final re-statement still affirms it after a copy.
        if (is_final_state(s.state)) r.stated_since_copy = true;
        return StatusEffect::unchanged;
    }
    r.fate = fate_of(s.state);
    r.deferred = s.state == StatusState::deferred;
    r.attempts = s.attempts;
    r.at_unix_us = s.at_unix_us;
    r.next_attempt_unix_us = r.deferred ? s.next_attempt_unix_us : 0;
    r.stated_since_copy = true;
    return StatusEffect::changed;
}

const FoldedMessage* MessageFold::find(uint64_t id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &it->second;
}

std::vector<const FoldedMessage*> MessageFold::in_log_order() const {
    std::vector<const FoldedMessage*> out;
    out.reserve(by_id_.size());
    for (const auto& [id, m] : by_id_)
        out.push_back(&m);
    std::sort(out.begin(), out.end(), [](const FoldedMessage* a, const FoldedMessage* b) {
        if (a->latest.segment_seq != b->latest.segment_seq)
            return a->latest.segment_seq < b->latest.segment_seq;
        return a->latest.offset < b->latest.offset;
    });
    return out;
}

}  // namespace ringmail::spool
