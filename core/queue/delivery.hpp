// delivery.hpp — one core's queue manager: the origin side of outbound delivery.
//
// The core whose spool holds a message keeps a sched::MessageTable of the messages it holds,
// the domain of each recipient, and the retry and lifetime decisions. When a message is due,
// its due recipients are grouped by domain, each domain is resolved (this core's DNS cache),
// and the recipients go as jobs to the core that owns the destination (a hash of its MX host
// set) — over the core-to-core channel, or to this core's destination side
// (net/outbound/destinations.hpp, through a JobSink) when that is this core. Every outcome
// comes back here (an OutcomeSink), becomes a status record in this core's log, and decides
// the recipient's next step (done, retry at T, or bounce with a DSN). Nothing here includes
// net/outbound/: the engine wires the two sides together.
//
// All on the engine's thread; nothing here blocks but the opening of a spool segment for
// reading (once per segment).
//
// One class, one file per job: delivery.cpp (start, the tick, stop), dispatch.cpp (messages
// in, due recipients to jobs), outcome.cpp (outcomes, expiry, the delivery log), bounce.cpp
// (DSNs), segment_gc.cpp (segment deletion and compaction); delivery_parts.hpp holds the
// helper types they share, job.hpp what crosses to the destination side and back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/base/config.hpp"
#include "core/queue/job.hpp"
#include "core/queue/scheduler.hpp"
#include "core/runtime/reactor.hpp"
#include "dns/node_resolver.hpp"
#include "dns/resolver.hpp"
#include "spool/io/commit.hpp"
#include "spool/io/queue_entry.hpp"
#include "spool/io/spool_reader.hpp"
#include "spool/lifecycle.hpp"
#include "spool/record.hpp"

namespace ringmail {

class Engine;
struct CoreMsg;

class Delivery {
  public:
    Delivery(Engine& engine, uint32_t core);
    ~Delivery();
    Delivery(const Delivery&) = delete;
    Delivery& operator=(const Delivery&) = delete;

    // On the engine thread before the loop: the resolver, and the messages recovered from the
    // spool with their recipients' states.
    [[nodiscard]] bool init(std::string* error);
    // The segments present at start in a spool directory this core looks after (its own, and
    // those of cores that no longer run), ascending; then the messages recovered from them.
    void add_recovered_segments(uint16_t dir, const std::vector<spool::SegmentSeen>& segments);
    void add_recovered(const RecoveredQueueEntry& e);
    // The committer made a new segment in this core's own directory.
    void segment_created(uint64_t seq);
    // A compaction's copy of a queued message is durable in this core's current segment.
    void copy_committed(const QueueEntry& e, const CommitWaiter& w);

    // A message was committed on this core (its recipients' addresses are views valid during
    // the call only).
    void message_committed(const QueueEntry& e, std::span<const spool::RcptField> rcpts,
                           uint64_t arrival_ms);

    // From the engine. Jobs for destinations this core owns go to `local` (the destination
    // side, net/outbound/destinations.hpp), the others to their core through the engine.
    void set_local_jobs(JobSink local) { local_jobs_ = local; }
    // An outcome from another core (its text valid during the call only).
    void handle_outcome(sched::MessageRef ref, uint64_t message_id, uint16_t rcpt, sched::Outcome o,
                        std::string_view text, std::string_view remote, std::string_view tls);
    void on_tick();  // timers: due messages, expiry, DNS, DSN retries, segments
    void flush();    // end of a loop iteration
    void stop();     // graceful stop: nothing new starts
    [[nodiscard]] size_t queued() const { return table_.size(); }
    // Messages with recipients in an attempt (at most --active-queue-max).
    [[nodiscard]] size_t active() const { return active_; }

    // For the destination side (net/outbound/): this core's resolver and spool reader, and
    // where each recipient's outcome goes (recorded here, or sent back to its core).
    [[nodiscard]] dns::NodeResolver& resolver() { return resolver_; }
    [[nodiscard]] SpoolReader& reader() { return reader_; }
    [[nodiscard]] OutcomeSink outcome_sink() { return OutcomeSink{this, &Delivery::on_report}; }
    void report(const JobMsg& job, uint16_t rcpt_index, sched::Outcome o, std::string_view text,
                std::string_view remote, std::string_view tls = {});

    struct Stats {
        uint64_t delivered = 0, deferred = 0, bounced = 0, expired = 0;
        uint64_t segments_deleted = 0;
        uint64_t compacted = 0;  // messages copied forward
    };
    [[nodiscard]] const Stats& stats() const { return stats_; }
    Stats& stats_mut() { return stats_; }

    struct Dispatch;  // one domain group of a due message, while its DNS answer is awaited

  private:
    uint32_t intern_domain(std::string_view d);
    void release_domain(uint32_t id);
    void dispatch_due();
    void dispatch(sched::MessageRef m);
    static void on_resolved(void* ctx, const dns::ResolutionPtr& r);
    void resolved(Dispatch* d);
    static void on_report(void* self, const JobMsg& job, uint16_t rcpt, sched::Outcome o,
                          std::string_view text, std::string_view remote, std::string_view tls) {
        static_cast<Delivery*>(self)->report(job, rcpt, o, text, remote, tls);
    }
    void send_job(uint32_t owner, const JobMsg& j);
    void apply(sched::MessageRef m, uint32_t rcpt, sched::Outcome o, std::string_view text,
               std::string_view remote, std::string_view tls = {});
    void finish_message(sched::MessageRef m);
    // The parts of on_tick, in its order.
    void expire(uint64_t now);         // outcome.cpp: past the queue lifetime
    void retry_bounces(uint64_t now);  // bounce.cpp: DSN reads and stores to try again
    void arm_dns_poll();
    static void on_dns_readable(void* self, int res, uint32_t flags);
    [[nodiscard]] uint64_t random();

    Engine& engine_;
    uint32_t core_;
    const Config& config_;
    sched::MessageTable table_;
    dns::NodeResolver resolver_;  // in the simulator, answered by its world (tests/sim/)
    SpoolReader reader_;
    bool resolver_ok_ = false;
    bool stopping_ = false;
    uint64_t rng_;

    // Per message slot (parallel to the table's slots).
    // A recipient that failed for good, waiting for its DSN. Its status record is written only
    // once the DSN is durable (Postfix's order: the bounce message exists before the recipient
    // is marked done), so a crash can repeat a DSN but never leave a recorded bounce without
    // one; until then the spool still says the recipient is deferred.
    struct Bounce {
        uint32_t rcpt;
        uint16_t attempts;
        bool expired;
        int64_t at_unix_us;
        std::string text;    // the remote reply or our reason, "550 5.1.1 ..." / "5.1.2 ..."
        std::string remote;  // "mx.example.net[192.0.2.1]" or ""
    };
    struct Held {
        RecordLocation at;
        uint16_t segdir = 0;      // index into segdirs_
        uint32_t generation = 0;  // of its table slot
        bool tracked = false;     // counted live in its segment
        spool::SegmentSlot slot{};
        uint64_t id = 0;
        int64_t arrival_unix_us = 0;
        std::vector<uint32_t> domains;  // per recipient, an interned domain
        // Every recipient's address, end to end in one string (one allocation per message,
        // whose capacity the slot keeps): rcpt i is [addr_end[i-1], addr_end[i]).
        std::string addrs;
        std::vector<uint32_t> addr_end;
        uint32_t inflight = 0;  // recipients in an attempt
        std::vector<Bounce> bounces;
        // Its DSN is being built or stored: no other round starts, and the message stays
        // (with the bounces of this round) until the DSN is durable.
        bool dsn_busy = false;
    };
    [[nodiscard]] static std::string_view address_of(const Held& h, uint32_t rcpt) {
        uint32_t from = rcpt == 0 ? 0 : h.addr_end[rcpt - 1];
        return std::string_view(h.addrs).substr(from, h.addr_end[rcpt] - from);
    }
    // One `delivery` log line: every outcome, whatever decided it, has the same fields.
    void log_outcome(const Held& h, uint32_t rcpt, const char* status, uint32_t attempts,
                     int64_t at_unix_us, std::string_view remote, std::string_view text,
                     std::string_view tls);
    struct DsnRead;
    class DsnWaiter;
    void maybe_finish(sched::MessageRef m);
    void start_dsn(sched::MessageRef m);
    void dsn_read(DsnRead* r, int err);
    void write_bounce_statuses(const Held& h, const std::vector<Bounce>& bounces);
    void stage_dsn(std::unique_ptr<DsnWaiter> w);
    void dsn_committed(DsnWaiter* w, bool ok);
    std::vector<std::unique_ptr<DsnWaiter>> dsn_waiters_;
    // Staging memory was short, or the commit failed: staged again at the next tick, with the
    // same queue id, for as long as it takes (a DSN is never dropped).
    std::vector<std::unique_ptr<DsnWaiter>> dsn_retry_;
    // Messages whose original could not be read to build their DSN: read again then.
    static constexpr uint64_t kDsnReadRetryMs = 10'000;
    std::vector<std::pair<sched::MessageRef, uint64_t>> dsn_read_retry_;

    // Segment lifecycle (spool/lifecycle.hpp): a segment whose messages are all final, and all
    // of whose older siblings are gone, is deleted.
    struct SegDir {
        uint16_t dir;
        spool::SegmentTracker tracker;
        uint32_t unlinks = 0;  // in flight: the next run starts after them (rule D4)
    };
    struct FinalPending {  // final in memory; counted once its statuses are durable (rule D3)
        uint16_t segdir;
        spool::SegmentSlot slot;
        uint64_t id;
        uint64_t after_commits;
    };
    struct Unlink {
        IoOp op;
        Delivery* owner;
        uint16_t segdir;
        uint64_t seq;
        std::string path;
    };
    uint16_t segdir_for(uint16_t dir);
    class CopyWaiter;
    void compact();
    void copy_read(CopyWaiter* w, int err);
    // Every recipient's state that is not its first, as a status record (rule C1).
    void restate_statuses(sched::MessageRef ref, uint64_t id, size_t rcpts);
    void copy_finished(CopyWaiter* w);
    std::vector<std::unique_ptr<CopyWaiter>> copies_;  // compaction copies in flight (rule C2)
    std::vector<spool::LiveMessage> live_;
    uint64_t next_compaction_ms_ = 0;
    void collect_segments();
    static void on_unlinked(void* self, int res, uint32_t flags);
    std::vector<std::unique_ptr<SegDir>> segdirs_;  // [0]: this core's own directory
    std::vector<FinalPending> finals_;
    uint32_t unlinks_inflight_ = 0;  // the id the DSN text names as its own, for its record
    std::vector<Held> held_;
    std::unordered_map<std::string, uint32_t> domain_ids_;
    std::vector<std::string> domain_names_;
    std::vector<uint32_t> domain_refs_;
    std::vector<uint32_t> domain_free_;

    std::vector<sched::MessageRef> due_;
    size_t active_ = 0;  // messages with h.inflight > 0
    std::vector<uint32_t> rcpts_;
    std::vector<std::pair<sched::MessageRef, uint32_t>> expired_;
    std::vector<std::unique_ptr<Dispatch>> dispatch_free_;

    JobSink local_jobs_;
    IoOp dns_op_{&Delivery::on_dns_readable, this};
    bool dns_armed_ = false;
    Stats stats_;
};

}  // namespace ringmail
