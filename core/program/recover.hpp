// recover.hpp — what the daemon does with the spool before its reactors start: every core
// directory is scanned (spool/recovery.hpp), status records are applied, and each core gets
// its queue, the messages delivery must take up again, and the sequence its next segment
// takes. Called by core/program/ringmail_main.cpp and by the simulator (tests/sim/), which restarts
// the engine on a crashed spool exactly as the daemon does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/config.hpp"
#include "spool/io/queue_entry.hpp"

namespace ringmail {

// mkdir -p.
[[nodiscard]] bool make_dirs(const std::string& path);
// Core directories present in the spool (core-N), whatever --threads was when they were made.
[[nodiscard]] std::vector<uint32_t> core_dirs(const std::string& spool);
// Segment sequence numbers in a core directory, ascending.
[[nodiscard]] std::vector<uint64_t> segment_seqs(const std::string& dir);

struct Recovered {
    std::vector<Queue> queues;
    std::vector<std::vector<RecoveredQueueEntry>> pending;  // per core: messages not yet final
    std::vector<uint64_t> next_segment_seq;                 // per core directory we write to
    uint64_t max_id = 0;
};

// Scans the spool of cfg.spool_dir for cfg.threads cores; false (logged) on an I/O error.
[[nodiscard]] bool recover(const Config& cfg, Recovered& out);

}  // namespace ringmail
