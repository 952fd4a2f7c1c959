// job.hpp — what the queue manager hands the destination side (a job: the recipients of one
// message for one destination) and what comes back (one recipient's outcome). Shared by
// core/queue/ and net/outbound/; includes nothing of either.
#pragma once

#include <cstdint>

#include "core/base/limits.hpp"
#include "core/queue/scheduler.hpp"
#include "spool/io/spool_reader.hpp"

namespace ringmail {

// The recipients of one message that go to one destination (one transaction at most).
// (Across cores its recipients and domain travel apart: core/engine/engine.hpp, JobWire.)
struct JobMsg {
    sched::MessageRef ref;  // in the origin's MessageTable
    uint64_t message_id;
    uint64_t dest_hash;
    RecordLocation at;
    uint16_t origin;
    uint16_t rcpt_count;
    uint16_t rcpts[limits::job_rcpts_max];  // recipient indexes in the message record
    uint8_t domain_len;
    char domain[255];
};

// One recipient's outcome, back to the origin. (Across cores its text travels apart, in the
// sender's TextArena: core/engine/engine.hpp, OutcomeWire.)
struct OutcomeMsg {
    sched::MessageRef ref;
    uint64_t message_id;
    uint16_t rcpt;
    sched::Outcome outcome;
    uint16_t text_len;
    uint8_t remote_len;
    uint8_t tls_len;
    char text[limits::outcome_text_max_bytes];  // "550 5.1.1 <x@y>: unknown user"
    char remote[96];                            // "mx.example.net[192.0.2.1]"
    char tls[64];                               // "TLSv1.3/TLS_AES_128_GCM_SHA256" or ""
    // The recipient's address is not carried: the origin keeps every recipient's address, so
    // that outcomes decided without a remote reply (DNS, a dead destination, expiry, a loop)
    // name their recipient in the log too.
};

// Where the destination side sends each recipient's outcome: the queue manager, which records
// it or sends it back to the message's core. tls: "TLSv1.3/TLS_AES_128_GCM_SHA256" or "".
struct OutcomeSink {
    void* ctx = nullptr;
    void (*fn)(void* ctx, const JobMsg& job, uint16_t rcpt, sched::Outcome o, std::string_view text,
               std::string_view remote, std::string_view tls) = nullptr;
};

// Where the queue manager hands a job for a destination this core owns.
struct JobSink {
    void* ctx = nullptr;
    void (*fn)(void* ctx, const JobMsg& job) = nullptr;
};

}  // namespace ringmail
