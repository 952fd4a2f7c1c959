// limits.hpp — every limit of ringmail, named with its unit, defined once.
//
// The flags (core/program/config.cpp) take their defaults from here; the relations between limits
// that must hold are checked at compile time below. RFC 5321 §4.5.3 gives the protocol minima.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringmail::limits {

// --- SMTP protocol (RFC 5321 §4.5.3.1) -------------------------------------------------------
inline constexpr size_t command_line_max_bytes = 512;  // including CRLF
// An overlong command line is discarded to its end and answered 500; one that runs this long
// without ending is not a command at all (a client streaming garbage): 500 and close, instead
// of reading on until the command timeout.
inline constexpr size_t command_line_abandon_bytes = 4096;
inline constexpr size_t text_line_max_bytes = 1000;  // including CRLF (not enforced on relay)
inline constexpr size_t local_part_max_bytes = 64;
inline constexpr size_t domain_max_bytes = 255;
inline constexpr size_t path_max_bytes = 256;         // including the angle brackets
inline constexpr size_t mail_params_max_bytes = 256;  // ESMTP parameters of one MAIL/RCPT
inline constexpr uint32_t rfc_recipients_min = 100;   // §4.5.3.1.8: must accept at least
inline constexpr size_t domain_label_max_bytes = 63;  // RFC 1035 §2.3.4

// --- Defaults of tunables (each has a flag) --------------------------------------------------
inline constexpr uint32_t recipients_max_default = 1000;
inline constexpr uint64_t message_size_max_bytes_default = 25ull << 20;
inline constexpr uint32_t connections_max_default = 20000;
inline constexpr uint32_t connections_per_ip_max_default = 200;
inline constexpr uint32_t junk_commands_max_default = 20;        // errors+unknown before 421
inline constexpr uint32_t timeout_command_ms_default = 300'000;  // §4.5.3.2.7 server timeout
inline constexpr uint32_t timeout_data_ms_default = 180'000;     // §4.5.3.2.6 data block
inline constexpr uint32_t greet_delay_ms_default = 1000;         // untrusted clients only
inline constexpr uint32_t commit_window_us_default = 0;          // extra wait to grow a batch
inline constexpr uint32_t commit_depth_default = 2;              // group commits in flight per core
inline constexpr uint32_t commit_depth_max = 8;

// --- Ranges of tunables (checked at start; a value outside is refused with exit code 2) ------
// A message's recipients are counted in 16 bits by the scheduler and the queue.
inline constexpr uint32_t recipients_max_max = 65535;
// A message record's length is kept in 32 bits; 1 GiB also keeps one message inside the
// default staging memory.
inline constexpr uint64_t message_size_max_bytes_min = 1024;
inline constexpr uint64_t message_size_max_bytes_max = 1ull << 30;
// Queue ids carry the core in their low byte.
inline constexpr uint32_t threads_max = 256;
// Client-side waits and delays (greeting delay, commands, data, connect, idle reuse).
inline constexpr uint32_t timeout_ms_min = 10;
inline constexpr uint32_t timeout_ms_max = 86'400'000;   // 24 h
inline constexpr uint32_t greet_delay_ms_max = 600'000;  // 10 min
inline constexpr uint32_t commit_window_us_max = 1'000'000;
// Durations given as text (--retry-schedule, --max-queue-lifetime, --compact-after): longer
// would overflow the microsecond clocks they are added to.
inline constexpr uint64_t duration_max_ms = 3650ull * 86'400'000;  // 10 years
inline constexpr uint32_t received_headers_max_max = 1000;

// --- Engine ----------------------------------------------------------------------------------
inline constexpr uint32_t ring_entries_default = 4096;
inline constexpr uint32_t recv_buffer_bytes_default = 16384;
inline constexpr uint32_t recv_buffer_count_default = 2048;  // per core; power of two
inline constexpr uint32_t channel_capacity_default = 4096;   // per core pair; power of two
inline constexpr uint32_t session_output_bytes = 4096;       // replies buffered per session
// A group commit's writes and fdatasync are one linked chain, which must fit one submission:
// the longest (spool/io/commit.cpp) needs well under this.
inline constexpr uint32_t ring_entries_min = 128;
// The completion queue is 4x the submission queue and the kernel allows at most 65536 CQEs.
inline constexpr uint32_t ring_entries_max = 16384;
inline constexpr uint32_t recv_buffer_bytes_max = 1u << 20;
inline constexpr uint32_t recv_buffer_count_min = 16;
inline constexpr uint32_t recv_buffer_count_max = 32768;  // a provided-buffer ring's limit
inline constexpr uint64_t recv_buffer_memory_max_bytes = 1ull << 30;  // bytes × count per thread
inline constexpr uint32_t channel_capacity_min = 16;
inline constexpr uint32_t channel_capacity_max = 1u << 20;
// threads × (threads − 1) channels of capacity entries each: the channels' memory in all.
inline constexpr uint64_t channel_memory_max_bytes = 8ull << 30;
// The text of cross-core jobs and outcomes travels in a per-core arena of fixed slots, not in
// the channel entries (core/runtime/text_arena.hpp): 2 MiB per core. A full arena is
// back-pressure: no new due work until the receivers hand slots back.
inline constexpr uint32_t channel_text_slots = 4096;
inline constexpr uint32_t channel_text_slot_bytes = 512;

// --- Delivery --------------------------------------------------------------------------------
inline constexpr size_t job_rcpts_max = 128;           // recipients in one cross-core job
inline constexpr size_t outcome_text_max_bytes = 300;  // remote reply kept per outcome
// Messages of one core in an attempt at once (Postfix's qmgr_message_active_limit): the rest
// stay due in the queue and are taken as attempts end.
inline constexpr uint32_t active_queue_max_default = 20000;
// Destinations (MX host sets) one core remembers; idle ones past this are dropped, least
// recently used first.
inline constexpr uint32_t destinations_max_default = 10000;

// --- Spool -----------------------------------------------------------------------------------
inline constexpr uint64_t segment_bytes_default = 64ull << 20;
// The floor of --segment-size, and of a segment shrunk to fit a nearly full disk: where not
// even this fits, the disk is full (452 4.3.1).
inline constexpr uint64_t segment_bytes_min = 1ull << 20;
// Recovery reads a segment whole into memory.
inline constexpr uint64_t segment_bytes_max = 4ull << 30;
inline constexpr uint32_t staging_chunk_bytes = 16384;
inline constexpr uint64_t staging_memory_max_bytes_default = 1ull << 30;  // per core
inline constexpr uint32_t commit_batch_messages_max = 4096;
// A batch takes no more messages past this many bytes (its first message may be larger), so
// that its chain of writes stays short.
inline constexpr uint64_t commit_batch_bytes_max = 256ull << 20;

static_assert(command_line_max_bytes >= 512, "RFC 5321 §4.5.3.1.4");
static_assert(path_max_bytes >= 256, "RFC 5321 §4.5.3.1.3");
static_assert(recipients_max_default >= rfc_recipients_min, "RFC 5321 §4.5.3.1.8");
static_assert(recv_buffer_bytes_default >= command_line_max_bytes);
static_assert((recv_buffer_count_default & (recv_buffer_count_default - 1)) == 0);
static_assert((channel_capacity_default & (channel_capacity_default - 1)) == 0);
static_assert(session_output_bytes >= 2 * command_line_max_bytes,
              "a session must fit a multi-line EHLO reply and one more reply");
static_assert(segment_bytes_default >= 16 * staging_chunk_bytes);
static_assert(segment_bytes_min <= segment_bytes_default &&
              segment_bytes_default <= segment_bytes_max);
static_assert(recipients_max_default <= recipients_max_max);
static_assert(message_size_max_bytes_default <= message_size_max_bytes_max);
static_assert(ring_entries_min <= ring_entries_default && ring_entries_default <= ring_entries_max);
static_assert(uint64_t{recv_buffer_bytes_default} * recv_buffer_count_default <=
              recv_buffer_memory_max_bytes);
static_assert(staging_memory_max_bytes_default >= message_size_max_bytes_default,
              "one message of the largest size must fit the staging memory");

}  // namespace ringmail::limits
