// queue.hpp — the messages a core holds, indexed by where their record lives.
//
// Filled by recovery at start and by every commit after; the outbound scheduler (next step)
// takes its work from here. Entries are small and fixed-size: the message text stays in the
// spool segment, never in memory.
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
// domains and, per recipient, the state its status records left it in.
struct RecoveredRcpt {
    std::string domain;
    uint8_t state = 0;  // 0 pending, 1 delivered, 2 bounced (sched::RcptState)
    uint16_t attempts = 0;
    int64_t next_attempt_unix_us = 0;
};
struct RecoveredQueueEntry {
    QueueEntry entry;
    int64_t arrival_unix_us = 0;
    std::vector<RecoveredRcpt> rcpts;
};

class Queue {
  public:
    void reserve(size_t n) { entries_.reserve(n); }
    void add(const QueueEntry& e) { entries_.push_back(e); }
    [[nodiscard]] size_t size() const { return entries_.size(); }
    [[nodiscard]] const std::vector<QueueEntry>& entries() const { return entries_; }

  private:
    std::vector<QueueEntry> entries_;
};

}  // namespace ringmail
