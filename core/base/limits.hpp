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

// --- Engine ----------------------------------------------------------------------------------
inline constexpr uint32_t ring_entries_default = 4096;
inline constexpr uint32_t recv_buffer_bytes_default = 16384;
inline constexpr uint32_t recv_buffer_count_default = 2048;  // per core; power of two
inline constexpr uint32_t channel_capacity_default = 4096;   // per core pair; power of two
inline constexpr uint32_t session_output_bytes = 4096;       // replies buffered per session

// --- Delivery --------------------------------------------------------------------------------
inline constexpr size_t job_rcpts_max = 128;           // recipients in one cross-core job
inline constexpr size_t outcome_text_max_bytes = 300;  // remote reply kept per outcome

// --- Spool -----------------------------------------------------------------------------------
inline constexpr uint64_t segment_bytes_default = 64ull << 20;
inline constexpr uint32_t staging_chunk_bytes = 16384;
inline constexpr uint64_t staging_memory_max_bytes_default = 1ull << 30;  // per core
inline constexpr uint32_t commit_batch_messages_max = 4096;

static_assert(command_line_max_bytes >= 512, "RFC 5321 §4.5.3.1.4");
static_assert(path_max_bytes >= 256, "RFC 5321 §4.5.3.1.3");
static_assert(recipients_max_default >= rfc_recipients_min, "RFC 5321 §4.5.3.1.8");
static_assert(recv_buffer_bytes_default >= command_line_max_bytes);
static_assert((recv_buffer_count_default & (recv_buffer_count_default - 1)) == 0);
static_assert((channel_capacity_default & (channel_capacity_default - 1)) == 0);
static_assert(session_output_bytes >= 2 * command_line_max_bytes,
              "a session must fit a multi-line EHLO reply and one more reply");
static_assert(segment_bytes_default >= 16 * staging_chunk_bytes);
static_assert(staging_memory_max_bytes_default >= message_size_max_bytes_default,
              "one message of the largest size must fit the staging memory");

}  // namespace ringmail::limits
