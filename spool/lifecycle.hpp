// lifecycle.hpp — when a spool segment may be deleted or should be compacted, and how recovery
// folds message copies and status records into each recipient's state.
//
// Callers: the engine keeps one SegmentTracker per core directory (pure bookkeeping, no I/O; it
// decides, the engine unlinks and copies through its ring). Recovery and the ringmail-spool tool
// feed recover_dir()'s callbacks into a MessageFold.
//
// The rules, and why each keeps delivery at-least-once without ever losing a pending recipient:
//
// D1 Status records for a message follow it in the log (same or a later segment), so a status
//    can live in a newer segment than its message. Segments are deleted strictly oldest-first:
//    deleting S while an older segment O is still present could drop a "delivered" in S for a
//    message of O, which would then be sent again after a restart.
// D2 A segment is deletable when it holds no live message (every message in it is final or has
//    been moved forward) and every older segment is deleted or being deleted. The current
//    segment (and anything newer, e.g. one prepared in advance) is never deletable.
// D3 message_final and message_moved are called only once the record that justifies them (the
//    final status; the forward copy with its re-stated statuses) is durable, i.e. its
//    fdatasync completed. Otherwise a crash could leave neither the old nor the new evidence.
// D4 Unlinks are issued in order (one at a time or IOSQE_IO_LINK). If a crash still persists a
//    newer unlink and not an older one, the older segment's messages lose their final statuses:
//    they are delivered again (a duplicate), never lost.
//
// C1 Compaction keeps long-lived messages from pinning old segments: when the oldest segment
//    that still holds live messages is older than compact_after_ms, each live message is
//    re-written forward into the current segment — a new message record with the same id,
//    envelope and text, followed at once by one status record per recipient that has a state
//    (deferred with its attempts and next attempt, or final) — and then message_moved() marks
//    the old copy dead. A long-lived message is so rewritten at most once per compact_after_ms.
// C2 One compaction at a time: the engine asks for a candidate again only after the previous
//    copies are durable (moved messages are then no longer live in the old segment).
// C3 A message may become final while its forward copy is in flight. Its status is appended
//    after the copy (one core, one log, appended in order), so the log reads: copy, re-stated
//    states, final status. The tracker accepts message_final on the old slot first; the later
//    message_moved of that dead slot then registers nothing.
//
// F1 (fold) A message record of an id that was seen before is another copy of the same message
//    (compaction, or a batch rewritten after a crash): the LAST copy in log order is the one
//    to use. The recipients' states carry over from copy to copy; a copy never resets them.
// F2 A status applies only if a copy of its id precedes it in the log. A status for an id never
//    seen (its message's segment was deleted) is ignored, and so is a stale status that
//    precedes a message with a reused id. Compaction re-states every state after the copy, so a
//    status whose preceding copy was deleted is never needed.
// F3 Per (id, rcpt): the later status replaces the earlier while the recipient is pending;
//    a final state (delivered, bounced, expired) is final — later statuses never revert it, so
//    a re-stated or late deferral cannot cause a second delivery or a second bounce.
// F4 (rebuild after recovery) A message with a pending recipient is live in its latest copy's
//    segment when every recipient with a state was stated after that copy; otherwise (a crash
//    tore the re-stated statuses after a forward copy) it is live in its FIRST copy's segment,
//    which keeps every status it depends on from being deleted until compaction re-states them.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

#include "spool/status.hpp"

namespace ringmail::spool {

inline constexpr int64_t compact_after_ms_default = 3'600'000;  // 1 h

// Where a message is registered in a tracker: its segment and its index there. The engine keeps
// it with the queued message so that final and moved are O(1).
struct SegmentSlot {
    uint64_t segment_seq = 0;
    uint32_t index = 0;
};

struct LiveMessage {
    SegmentSlot slot;
    uint64_t id = 0;
};

// One core directory's segments, oldest first: a live count per segment and its live ids (for
// compaction). Memory: 8 bytes per message registered in a present segment; the id vectors of
// deleted segments are reused, so the steady state does not allocate per message.
class SegmentTracker {
  public:
    explicit SegmentTracker(int64_t compact_after_ms = compact_after_ms_default);

    // Segments are added in increasing sequence (gaps allowed); created_ms on the clock of
    // compaction_candidate's now_ms.
    void add_segment(uint64_t seq, int64_t created_ms);
    [[nodiscard]] SegmentSlot message_added(uint64_t seq, uint64_t id);
    // Rule D3: after the final status is durable. `id` is checked against the slot.
    void message_final(SegmentSlot slot, uint64_t id);
    // Rule D3/C3: after the forward copy and its statuses are durable. nullopt when the message
    // became final meanwhile (nothing registered).
    [[nodiscard]] std::optional<SegmentSlot> message_moved(SegmentSlot from, uint64_t new_seq,
                                                           uint64_t id);

    // Rules D1/D2: the oldest-first run of segments older than current_seq with no live message,
    // not yet being deleted.
    [[nodiscard]] std::vector<uint64_t> deletable(uint64_t current_seq) const;
    void delete_started(uint64_t seq);   // the unlink is submitted (seq must be deletable)
    void segment_deleted(uint64_t seq);  // the unlink completed (seq must be the oldest)

    // Rule C1: the oldest segment holding live messages, if older than current_seq and created
    // at least compact_after_ms before now_ms.
    [[nodiscard]] std::optional<uint64_t> compaction_candidate(int64_t now_ms,
                                                               uint64_t current_seq) const;
    // The live messages of `seq`, appended to `out` in the order they were added.
    void live_messages(uint64_t seq, std::vector<LiveMessage>& out) const;

    [[nodiscard]] uint32_t live_count(uint64_t seq) const;
    [[nodiscard]] size_t segment_count() const { return segments_.size(); }
    [[nodiscard]] bool has_segment(uint64_t seq) const { return find(seq) != nullptr; }

  private:
    struct Segment {
        uint64_t seq = 0;
        int64_t created_ms = 0;
        uint32_t live = 0;
        bool deleting = false;
        std::vector<uint64_t> ids;  // by slot index; dead_id once final or moved
    };
    [[nodiscard]] const Segment* find(uint64_t seq) const;
    [[nodiscard]] Segment* find(uint64_t seq);
    [[nodiscard]] Segment& slot_segment(SegmentSlot slot, uint64_t id);

    int64_t compact_after_ms_;
    std::deque<Segment> segments_;              // ascending seq
    std::vector<std::vector<uint64_t>> spare_;  // id vectors of deleted segments, for reuse
};

// ---- Recovery fold ----------------------------------------------------------------------------

enum class RcptFate : uint8_t { pending, delivered, bounced, expired };

struct RcptState {
    RcptFate fate = RcptFate::pending;
    bool deferred = false;  // pending after at least one attempt
    uint16_t attempts = 0;
    int64_t at_unix_us = 0;            // of the status that set this state
    int64_t next_attempt_unix_us = 0;  // pending: not before (0: at once)
    bool stated_since_copy = false;    // rule F4: a status after the latest copy affirms it
};

struct CopyLocation {
    uint64_t segment_seq = 0;
    uint64_t offset = 0;
    uint64_t record_bytes = 0;
};

struct FoldedMessage {
    uint64_t id = 0;
    CopyLocation latest;          // rule F1: the copy to use
    uint64_t first_copy_seq = 0;  // segment of the first copy seen
    uint32_t copies = 0;
    std::vector<RcptState> rcpts;  // as many as the latest copy has

    [[nodiscard]] uint32_t pending_count() const;
    [[nodiscard]] bool is_final() const { return pending_count() == 0; }
    // Rule F4: the segment where a message with a pending recipient is live after a restart.
    [[nodiscard]] uint64_t pin_seq() const;
};

enum class StatusEffect : uint8_t {
    changed,    // it set the recipient's state
    unchanged,  // the recipient was already final (rule F3)
    ignored,    // no preceding copy of its id, or no such recipient (rule F2)
};

// Fed with one core directory's records in log order (recover_dir's callbacks).
class MessageFold {
  public:
    void message(uint64_t id, const CopyLocation& at, uint32_t rcpt_count);
    StatusEffect status(const Status& s);

    [[nodiscard]] const FoldedMessage* find(uint64_t id) const;
    // Every message, ordered by the location of its latest copy (log order).
    [[nodiscard]] std::vector<const FoldedMessage*> in_log_order() const;
    [[nodiscard]] size_t size() const { return by_id_.size(); }
    [[nodiscard]] uint64_t ignored_statuses() const { return ignored_; }

  private:
    std::unordered_map<uint64_t, FoldedMessage> by_id_;
    uint64_t ignored_ = 0;
};

[[nodiscard]] bool is_final_state(StatusState s);

}  // namespace ringmail::spool
