// tool_sink_session.hpp — the SMTP server session of `ringmail-bench sink` (sans-I/O).
//
// Who uses it: the sink's connection driver (bench/tool_sink.cpp) and its unit tests. It is not
// the daemon's smtp::ServerSession on purpose: a sink must answer as scripted (fail a fraction
// of RCPTs or messages, delay or drop the data reply, withhold EHLO keywords) and count, and the
// daemon's hot path must not carry any of that.
//
// Guarantees:
//  - replies come out in command order (RFC 2920), each with an enhanced status code;
//  - DATA ends only at CRLF.CRLF; the content is dot-unstuffed (RFC 5321 §4.5.2) before it is
//    counted and verified; BDAT (RFC 3030) chunks are taken as sent;
//  - scripted failures are a pure function of --seed and what the client sent (the recipient
//    address, the message's bench seq), so two runs with the same seed and the same messages
//    fail the same ones;
//  - every counter is updated before the reply that reports the event is written, so a client
//    that has read a reply finds it counted;
//  - feed() never grows memory: output goes to a fixed buffer and feed() stops consuming when
//    the buffer cannot hold another reply (the driver feeds the rest after output_sent()).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "bench/tool_message.hpp"

namespace ringmail::bench {

// A counter written by one thread and read by the reporter: no lock prefix on the hot path.
struct Counter {
    std::atomic<uint64_t> v{0};
    void add(uint64_t n = 1) {
        v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    [[nodiscard]] uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

struct SinkCounters {
    Counter sessions, refused_sessions, messages, recipients, bytes;
    Counter rcpt_temp_fail, rcpt_perm_fail, data_temp_fail, data_perm_fail, no_valid_rcpt;
    Counter dropped, verified, corrupt, missing_header, duplicates;
};

// The bench seqs seen so far, shared by the sink's threads: an atomic bitmap below the expected
// count (one fetch_or per message), a locked hash set above it.
class SeqSet {
  public:
    explicit SeqSet(uint64_t expect);
    // True the first time seq is seen.
    [[nodiscard]] bool insert(uint64_t seq);
    // Every seq seen so far, ascending (a snapshot: other threads may insert meanwhile).
    [[nodiscard]] std::vector<uint64_t> members();

  private:
    uint64_t bits_;
    std::unique_ptr<std::atomic<uint64_t>[]> words_;
    std::mutex mu_;
    std::unordered_set<uint64_t> overflow_;
};

struct SinkOptions {
    std::string hostname = "sink.ringmail-bench";
    double rcpt_temp_fail = 0, rcpt_perm_fail = 0;
    double data_temp_fail = 0, data_perm_fail = 0;
    double drop_fraction = 0;
    uint64_t seed = 1;
    uint32_t data_delay_ms = 0;
    bool pipelining = true, chunking = true, size = true;
    bool verify = false;
    uint64_t size_max_bytes = 1ull << 30;
};

class SinkSession {
  public:
    SinkSession(const SinkOptions& opt, SinkCounters& counters, SeqSet* seen);
    SinkSession(const SinkSession&) = delete;
    SinkSession& operator=(const SinkSession&) = delete;

    // A new connection: the 220 greeting, or 421 (beyond --max-sessions) and close.
    void start(bool refuse);
    // Consumes received bytes; returns how many (less than in.size() only when the output
    // buffer is nearly full or the session is closing). now_ms is for --data-delay-ms.
    [[nodiscard]] size_t feed(std::string_view in, uint64_t now_ms);

    // Bytes the driver may send now: replies behind a delayed data reply are held with it.
    [[nodiscard]] std::string_view output() const;
    void output_sent(size_t n);
    // When held output becomes sendable (0: nothing held); release_held() at or after it.
    [[nodiscard]] uint64_t held_until_ms() const { return ngates_ ? gates_[0].until_ms : 0; }
    void release_held(uint64_t now_ms);

    // Close once output() is empty; abort_now: close without sending it (--drop-fraction).
    [[nodiscard]] bool wants_close() const { return close_; }
    [[nodiscard]] bool abort_now() const { return abort_; }

  private:
    enum class Phase : uint8_t { command, data, bdat };
    enum class DataState : uint8_t { line_start, mid_line, cr, dot, dot_cr };
    static constexpr size_t kOutBytes = 16384;
    static constexpr size_t kReplyMaxBytes = 512;
    static constexpr size_t kLineMaxBytes = 1024;
    static constexpr size_t kGates = 8;

    void put(std::string_view s);
    [[nodiscard]] size_t feed_command(std::string_view in, uint64_t now_ms);
    [[nodiscard]] size_t feed_data(std::string_view in, uint64_t now_ms);
    [[nodiscard]] size_t feed_bdat(std::string_view in, uint64_t now_ms);
    void execute(std::string_view line, uint64_t now_ms);
    void do_ehlo(std::string_view args, bool esmtp);
    void do_rcpt(std::string_view args);
    void do_bdat(std::string_view args, uint64_t now_ms);
    void content(std::string_view s);
    void end_message(uint64_t now_ms);
    void reset_transaction();
    [[nodiscard]] double draw(uint64_t salt, uint64_t key) const;

    const SinkOptions& opt_;
    SinkCounters& counters_;
    SeqSet* seen_;
    BodyVerifier verifier_;

    Phase phase_ = Phase::command;
    DataState data_state_ = DataState::line_start;
    bool greeted_ = false;
    bool mail_ = false;
    bool close_ = false;
    bool abort_ = false;
    bool bdat_started_ = false;
    bool bdat_last_ = false;
    bool bdat_failed_ = false;
    uint32_t rcpts_ok_ = 0;
    uint64_t msg_bytes_ = 0;
    uint64_t chunk_left_ = 0;
    uint64_t rcpt_hash_ = 0;  // of the accepted recipients: the key when there is no seq

    char line_[kLineMaxBytes];
    size_t line_len_ = 0;
    bool line_overflow_ = false;

    char out_[kOutBytes];
    size_t out_len_ = 0;
    struct Gate {
        size_t start;  // output from this offset on is held until until_ms
        uint64_t until_ms;
    };
    Gate gates_[kGates];
    size_t ngates_ = 0;
};

}  // namespace ringmail::bench
