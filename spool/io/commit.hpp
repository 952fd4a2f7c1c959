// commit.hpp — group commit of one core's messages into its spool segments.
//
// Sessions stage each message in a spool::MessageBuilder (the one copy of its text). When a
// message is complete the session hands it here and waits. At the end of each loop iteration,
// if fewer than --commit-depth commits are in flight, every message waiting is sealed and
// written with one writev at the segment's end, linked to one fdatasync; when that completes,
// and every earlier batch has been answered, every session of the batch learns its result and
// only then answers 250. Whatever arrives while the commits are in flight forms the next
// batch, so the batch grows with the load and the fsync rate stays bounded; a second batch may
// sync while the first does (the disk overlaps their flushes), but answers keep batch order,
// and a batch that fails fails every batch written after it (recovery reads a segment in
// order and stops at a hole).
//
// Segments are created ahead of need through the ring (openat, fallocate, zero fill, header
// write, fsync of file and directory), so running out of disk space is found before any 250: a
// message that cannot be placed gets 452 4.3.1 and the next message tries again. A disk with
// less room than --segment-size gets smaller segments (segment_bytes_after_enospc); only when
// not even limits::segment_bytes_min fits is the disk full. A write or
// fdatasync error fences the segment for good (no retry-then-succeed on the same file, the lesson
// of "fsyncgate") and the batch gets 451 4.3.0.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/base/commit_result.hpp"
#include "core/base/config.hpp"
#include "core/base/histogram.hpp"
#include "core/runtime/reactor.hpp"
#include "spool/io/queue_entry.hpp"
#include "spool/record.hpp"

namespace ringmail::spool {
struct Status;
}

namespace ringmail {

// A message waiting for its commit: owns the staged record.
class CommitWaiter {
  public:
    spool::MessageBuilder builder;
    uint16_t rcpts = 0;  // for the queue entry
    // The recipients of the staged message (views valid until commit_finished), for delivery.
    std::span<const spool::RcptField> rcpt_view;
    bool sealed = false;   // set by the committer
    bool is_copy = false;  // a compaction's forward copy of a queued message, not a new one
    virtual void commit_finished(smtp::CommitResult r) = 0;

  protected:
    ~CommitWaiter() = default;
};

// The size of segment to try after fallocate of failed_bytes ran out of space, with
// free_bytes free on the file system shared by `cores` cores: half of what failed, and no more
// than half of each core's share of what is free, so that this core's next segment and the
// other cores' (which may be asking at the same instant) find room too; never below
// limits::segment_bytes_min. 0 when failed_bytes was already that floor: the disk is full.
[[nodiscard]] uint64_t segment_bytes_after_enospc(uint64_t failed_bytes, uint64_t free_bytes,
                                                  uint32_t cores = 1);

struct CommitStats {
    uint64_t commits = 0;   // fdatasyncs of message batches
    uint64_t messages = 0;  // messages made durable
    uint64_t bytes = 0;
    uint64_t failed = 0;              // messages answered 451/452
    uint64_t segments = 0;            // segments created
    uint64_t statuses = 0;            // status records appended
    LatencyHistogram commit_latency;  // batch submitted → written and fdatasynced
};

class Committer {
  public:
    Committer(Reactor& reactor, const Config& config, uint32_t core, Queue& queue);
    ~Committer();
    Committer(const Committer&) = delete;
    Committer& operator=(const Committer&) = delete;

    // At start, on the reactor thread before the loop: blocking calls are fine here.
    [[nodiscard]] bool open(uint64_t first_segment_seq, uint64_t first_id_counter,
                            std::string* error);

    [[nodiscard]] uint64_t next_id() { return (id_counter_++ << 8) | core_; }
    [[nodiscard]] spool::ChunkPool& pool() { return pool_; }

    void submit(CommitWaiter* w);  // the message is complete; w waits for commit_finished
    // A recipient's outcome: written with the next batch (nobody waits for it; a status lost
    // in a crash means a repeated attempt, never a lost message).
    void append_status(const spool::Status& s);
    void flush(uint64_t now_us);  // end of a loop iteration: start a commit if one can run
    [[nodiscard]] bool idle() const {
        return pending_.empty() && statuses_.empty() && statuses_retry_.empty() && inflight_ == 0;
    }
    // Idle, no segment preparation and no close in flight: nothing of ours is left in the ring
    // (an openat completing after the ring is gone would leak its fd, and so would a close that
    // had not run yet).
    [[nodiscard]] bool quiescent() const {
        return idle() && closes_inflight_ == 0 &&
               (prep_ == Prep::none || prep_ == Prep::ready || prep_ == Prep::failed);
    }
    // No segment preparation in flight: the next segment is ready, or its preparation failed.
    [[nodiscard]] bool segment_settled() const {
        return prep_ == Prep::ready || prep_ == Prep::failed;
    }
    [[nodiscard]] const CommitStats& stats() const { return stats_; }
    // For tests: the batch that starts serial-th (1, 2, ...) fails as if its fdatasync had
    // returned EIO, whatever the disk said.
    void inject_batch_failure(uint64_t serial) { fail_serial_ = serial; }
    // Batches written and not yet answered (at most --commit-depth).
    [[nodiscard]] uint32_t batches_inflight() const { return inflight_; }
    void shutdown();  // blocking close at exit
    // Told of every message made durable, before its waiter hears of it.
    using Listener = void (*)(void* ctx, const QueueEntry& e, const CommitWaiter& w);
    // Told of every segment made (in increasing sequence), before any record lands in it.
    using SegmentListener = void (*)(void* ctx, uint64_t seq);
    void set_segment_listener(SegmentListener fn, void* ctx) {
        segment_listener_ = fn;
        segment_listener_ctx_ = ctx;
    }
    // The lowest sequence a segment made from now on can have.
    // The segment being appended to; before the first one, the first this run makes (every
    // older segment was found at start).
    // A segment that a batch in flight writes to counts as current until the batch is done.
    [[nodiscard]] uint64_t current_segment_seq() const {
        if (inflight_ > 0) return batches_[head_].seg_seq;
        return current_.fd >= 0 ? current_.seq : first_seq_;
    }
    void set_listener(Listener fn, void* ctx) {
        listener_ = fn;
        listener_ctx_ = ctx;
    }

  private:
    struct Segment {
        int fd = -1;
        uint64_t seq = 0;
        uint64_t size = 0;    // preallocated bytes
        uint64_t start = 0;   // where the first record goes (after the segment header)
        uint64_t offset = 0;  // end of the written records
        bool fenced = false;
    };
    enum class Prep : uint8_t { none, opening, allocating, zeroing, finishing, ready, failed };
    // One group commit: its messages and statuses, written at `offset` of one segment with
    // writev(s) linked to an fdatasync. Up to depth_ are in flight, answered in order.
    struct Batch {
        Committer* owner = nullptr;
        IoOp op;
        std::vector<CommitWaiter*> waiters;
        std::vector<iovec> iov;
        std::vector<char> statuses;
        uint64_t serial = 0;  // 1, 2, ... in the order batches start
        uint64_t seg_seq = 0;
        uint64_t offset = 0;  // where its first record lands
        int fd = -1;
        uint32_t ops_left = 0;
        uint64_t bytes_expected = 0;  // by its writes
        uint64_t bytes_written = 0;   // as their completions say
        uint64_t started_us = 0;      // sys::precise_us() at submission
        bool ok = true;
        bool active = false;
    };
    static constexpr uint32_t kDepthMax = limits::commit_depth_max;
    // A segment's fd kept open after rotation until the batches writing to it are done.
    struct Retired {
        int fd;
        uint64_t last_serial;
    };

    void start_batch();
    void drain_batches();
    void finish_batch(Batch& b);
    void close_segment_fd(int fd);
    void fail_pending(smtp::CommitResult r);
    void fail_head(smtp::CommitResult r);
    void seal_pending();
    [[nodiscard]] bool shrink_next();
    bool rotate();
    void prepare_next();
    void prep_step(int res);
    void zero_next_chunk();
    static void on_batch_op(void* self, int res, uint32_t);
    static void on_prep_op(void* self, int res, uint32_t);
    static void on_close_op(void* self, int res, uint32_t);
    [[nodiscard]] std::string segment_path(uint64_t seq) const;

    Reactor& reactor_;
    const Config& config_;
    uint32_t core_;
    Queue& queue_;
    spool::ChunkPool pool_;
    uint64_t salt_ = 0;
    uint64_t id_counter_ = 0;
    uint64_t next_seq_ = 0;
    uint64_t first_seq_ = 0;
    int dir_fd_ = -1;
    std::string dir_;

    Segment current_;
    Segment next_;
    Prep prep_ = Prep::none;
    int prep_errno_ = 0;
    uint32_t prep_ops_left_ = 0;
    int prep_zero_failed_ = 0;
    uint64_t prep_zero_off_ = 0;
    bool starved_ = false;  // a batch waits for the next segment
    uint64_t prep_retry_after_us_ = 0;
    std::string prep_path_;
    char header_buf_[128];

    std::vector<CommitWaiter*> pending_;
    std::vector<CommitWaiter*> failing_;  // fail_pending's list while it answers them
    std::vector<char> statuses_;          // encoded status records for the next batch
    std::vector<char> statuses_retry_;    // those of failed batches, to go first
    std::array<Batch, kDepthMax> batches_;
    uint32_t depth_ = 1;
    uint32_t head_ = 0;  // oldest batch in flight
    uint32_t inflight_ = 0;
    uint64_t serial_started_ = 0;
    uint64_t serial_finished_ = 0;
    uint64_t fail_through_serial_ = 0;
    uint64_t fail_serial_ =
        0;  // inject_batch_failure  // batches up to this serial fail (see finish_batch)
    std::vector<Retired> retired_;
    // Segment closes submitted and not completed: a stop waits for them, or the fd outlived
    // the engine (simulator seeds 104819 and 135).
    uint32_t closes_inflight_ = 0;
    uint64_t now_us_ = 0;
    uint64_t window_start_us_ = 0;

    IoOp prep_op_{&Committer::on_prep_op, this};
    IoOp close_op_{&Committer::on_close_op, this};
    CommitStats stats_;
    Listener listener_ = nullptr;
    SegmentListener segment_listener_ = nullptr;
    void* segment_listener_ctx_ = nullptr;
    void* listener_ctx_ = nullptr;
};

}  // namespace ringmail
