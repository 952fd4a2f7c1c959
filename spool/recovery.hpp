// recovery.hpp — scanning a core's segments at start, and the spool's directory layout.
//
// Layout: <spool-dir>/core-<N>/<segment_seq as 16 hex>.seg, and <spool-dir>/quarantine/ for
// records that failed their checksum (kept for the operator, never delivered).
//
// Recovery reads every segment of a core directory in sequence order, verifies every record,
// and reports each valid message. A torn tail (a record cut short, or garbage up to the
// zeroed preallocated end) is dropped. A record that fails its checksum in the middle is
// copied to quarantine and the scan resynchronises on the next record that verifies (magic,
// length and salted crc), so its neighbours are kept. Runs at start, before the reactors:
// plain blocking reads are fine here.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "spool/record.hpp"

namespace ringmail::spool {

std::string core_dir_path(const std::string& spool_dir, uint32_t core);
std::string segment_file_name(uint64_t segment_seq);  // "000000000000002a.seg"

struct RecoveredMessage {
    const MessageView* message;  // valid during the callback only
    uint64_t segment_seq;
    uint64_t offset;  // of the record header in its segment
    uint64_t record_bytes;
};

// A segment recovery kept in its directory, and when its header says it was made (0: it has no
// header, the crash came right after it was created). Delivery ages segments from it, so that a
// segment's age for compaction survives restarts.
struct SegmentSeen {
    uint64_t seq = 0;
    int64_t created_unix_us = 0;
};

struct RecoveryStats {
    uint64_t segments = 0;
    uint64_t messages = 0;
    uint64_t bytes = 0;
    uint64_t torn_tails = 0;   // segments whose tail was dropped
    uint64_t quarantined = 0;  // records (or unparseable spans) moved to quarantine
    uint64_t max_segment_seq = 0;
    uint64_t max_message_id = 0;
    uint64_t statuses = 0;
    double elapsed_s = 0;
    std::vector<SegmentSeen> kept;  // ascending seq; quarantined segments are not kept
};

// Scan one core directory. `quarantine_dir` may be empty (read-only scan, as the spool
// reader tool does). Returns false only on an I/O error (message in *error).
bool recover_dir(const std::string& core_dir, const std::string& quarantine_dir,
                 const std::function<void(const RecoveredMessage&)>& on_message,
                 RecoveryStats& stats, std::string* error);

// The same, also reporting every status record (spool/status.hpp) in log order, interleaved
// with the messages as they appear in the log. A status record that does not parse is
// quarantined like any bad record.
struct Status;
bool recover_dir(const std::string& core_dir, const std::string& quarantine_dir,
                 const std::function<void(const RecoveredMessage&)>& on_message,
                 const std::function<void(const Status&, uint64_t segment_seq)>& on_status,
                 RecoveryStats& stats, std::string* error);

}  // namespace ringmail::spool
