// status.hpp — status records: one recipient's delivery outcome, appended to the log of the
// core that owns the message.
//
// Payload: u64 message_id | u16 rcpt | u8 state | u8 0 | u16 attempts | u16 0 |
//          i64 at_unix_us | i64 next_attempt_unix_us | str16 remote | str16 reply
// A status record always follows its message in log order (same or later segment), and a
// later record for the same recipient supersedes an earlier one. Recovery applies them in log
// order to rebuild each recipient's state; a status for a message no longer in the spool is
// ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "spool/record.hpp"

namespace ringmail::spool {

enum class StatusState : uint8_t {
    delivered = 1,
    deferred = 2,  // retry at next_attempt_unix_us
    bounced = 3,   // a DSN was (or will be) generated
    expired = 4,   // bounced because its lifetime ran out
};

struct Status {
    uint64_t message_id = 0;
    uint16_t rcpt = 0;
    StatusState state = StatusState::deferred;
    uint16_t attempts = 0;
    int64_t at_unix_us = 0;
    int64_t next_attempt_unix_us = 0;
    std::string_view remote;  // "mx.example.net[192.0.2.1]"
    std::string_view reply;   // the remote reply or our own reason, one line
};

inline constexpr size_t status_fixed_bytes = 8 + 2 + 1 + 1 + 2 + 2 + 8 + 8 + 2 + 2;
inline constexpr size_t status_text_max_bytes = 512;  // each of remote and reply
inline constexpr size_t status_record_max_bytes =
    record_header_bytes + status_fixed_bytes + 2 * status_text_max_bytes;

// Encodes a whole status record (header included) with the segment salt; texts longer than
// status_text_max_bytes are cut. Returns its length.
size_t encode_status(const Status& s, uint64_t salt, std::span<char> out);
// Parses a status payload (from decode_record); nullopt when malformed.
std::optional<Status> decode_status(std::string_view payload);

}  // namespace ringmail::spool
