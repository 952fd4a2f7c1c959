// queue_entry.hpp — where a core's messages live, as recovery and the group commit hand them
// to the queue manager (core/queue/). Here, below both, so that the commit and recovery need
// nothing of the queue manager's: they hand entries on through the engine's callbacks.
//
// The message text stays in its spool segment, never in memory; the queue manager
// (core/queue/delivery.*) holds what it needs of each queued message until it is final.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ringmail {

struct QueueEntry {
    uint64_t id = 0;
    uint64_t segment_seq = 0;
    uint64_t offset = 0;
    uint32_t record_bytes = 0;
    uint16_t dir = 0;  // spool core directory that holds the segment
    uint16_t rcpts = 0;
};

// A message found by recovery, with what delivery needs to take it up again: its recipients'
// addresses (their domains route them; the address names them in the delivery log) and, per
// recipient, the state its status records left it in.
struct RecoveredRcpt {
    std::string address;
    uint8_t state = 0;  // 0 pending, 1 delivered, 2 bounced (sched::RcptState)
    uint16_t attempts = 0;
    int64_t next_attempt_unix_us = 0;
};
struct RecoveredQueueEntry {
    QueueEntry entry;
    int64_t arrival_unix_us = 0;
    std::vector<RecoveredRcpt> rcpts;
};

// How many messages a core has made durable (recovered at start, then committed). Nothing per
// message is kept here: delivery takes each message from the committer's listener (and from
// recovery's RecoveredQueueEntry list, dropped once handed over), so a list here only grew,
// 32 bytes per accepted message, for the life of the process.
class Queue {
  public:
    void add(const QueueEntry& e) {
        count_++;
        last_ = e;
    }
    [[nodiscard]] size_t size() const { return count_; }
    // The last message added (for tests and logs).
    [[nodiscard]] const QueueEntry& last() const { return last_; }

  private:
    size_t count_ = 0;
    QueueEntry last_;
};

}  // namespace ringmail
