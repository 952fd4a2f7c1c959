// delivery.hpp — one core's part of outbound delivery.
//
// Origin side (the core whose spool holds a message): a sched::MessageTable of the messages it
// holds, the domain of each recipient, and the retry and lifetime decisions. When a message
// is due, its due recipients are grouped by domain, each domain is resolved (this core's DNS
// cache), and the recipients go as jobs to the core that owns the destination (a hash of its
// MX host set) — over the core-to-core channel, or directly when that is this core. Every
// outcome comes back here, becomes a status record in this core's log, and decides the
// recipient's next step (done, retry at T, or bounce with a DSN).
//
// Destination side (the core that owns a destination): one DestinationQueue per MX host set,
// whose jobs are carried out by outbound connections (net/outbound.*) — reused for the next
// job to the same destination, at most --max-connections-per-destination at once.
//
// All on the engine's thread; nothing here blocks but the opening of a spool segment for
// reading (once per segment).
//
// One class, one file per job: delivery.cpp (start, the tick, stop), dispatch.cpp (messages
// in, due recipients to jobs), outcome.cpp (outcomes, expiry, the delivery log), bounce.cpp
// (DSNs), segment_gc.cpp (segment deletion and compaction), destination.cpp (the destination
// side); delivery_parts.hpp holds the helper types they share.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/base/config.hpp"
#include "core/queue/scheduler.hpp"
#include "core/runtime/reactor.hpp"
#include "dns/resolver.hpp"
#ifdef RINGMAIL_SIM
#include "dns/sim_resolver.hpp"
#endif
#include "net/smtp/smtp_client.hpp"
#include "spool/io/commit.hpp"
#include "spool/io/queue_entry.hpp"
#include "spool/io/spool_reader.hpp"
#include "spool/lifecycle.hpp"
#include "spool/record.hpp"
#include "tls/tls_session.hpp"

namespace ringmail {

class Engine;
class OutboundConnection;
struct CoreMsg;

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

// --outbound-tls: STARTTLS to destinations (RFC 3207; Postfix smtp_tls_security_level).
enum class OutboundTls : uint8_t {
    none,     // never
    may,      // when offered; a failed handshake retries in clear and is remembered
    encrypt,  // never in clear: no STARTTLS or a failed handshake defers (4.7.5)
};

// How long a destination whose TLS handshake failed is served in clear under `may`.
inline constexpr uint64_t tls_broken_remember_ms = 3'600'000;

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
    void add_recovered_segments(uint16_t dir, const std::vector<uint64_t>& seqs);
    void add_recovered(const RecoveredQueueEntry& e);
    // The committer made a new segment in this core's own directory.
    void segment_created(uint64_t seq);
    // A compaction's copy of a queued message is durable in this core's current segment.
    void copy_committed(const QueueEntry& e, const CommitWaiter& w);

    // A message was committed on this core (its recipients' addresses are views valid during
    // the call only).
    void message_committed(const QueueEntry& e, std::span<const spool::RcptField> rcpts,
                           uint64_t arrival_ms);

    // From the engine.
    void handle_job(const JobMsg& j);
    // An outcome from another core (its text valid during the call only).
    void handle_outcome(sched::MessageRef ref, uint64_t message_id, uint16_t rcpt, sched::Outcome o,
                        std::string_view text, std::string_view remote, std::string_view tls);
    void on_tick();                   // timers: due messages, expiry, DNS, connection timeouts
    void flush();                     // end of a loop iteration
    void stop();                      // graceful stop: connections QUIT, nothing new starts
    [[nodiscard]] bool idle() const;  // no outbound connection open
    [[nodiscard]] size_t queued() const { return table_.size(); }
    // Messages with recipients in an attempt (at most --active-queue-max).
    [[nodiscard]] size_t active() const { return active_; }

    // For outbound connections.
    [[nodiscard]] Engine& engine() { return engine_; }
    [[nodiscard]] SpoolReader& reader() { return reader_; }
    // tls: "TLSv1.3/TLS_AES_128_GCM_SHA256" when the transaction ran inside TLS, else "".
    void report(const JobMsg& job, uint16_t rcpt_index, sched::Outcome o, std::string_view text,
                std::string_view remote, std::string_view tls = {});
    [[nodiscard]] OutboundTls tls_policy() const { return tls_policy_; }
    // This core's client TLS context; null under --outbound-tls=none.
    [[nodiscard]] const tls::TlsContext* tls_client() const { return tls_client_.get(); }
    // The last TLS session with a destination host (its name, or its address for a literal),
    // offered for resumption by the next connection to it (RFC 5077, RFC 8446 §2.2), as
    // Postfix's smtp_tls_session_cache does. At most kTlsSessionsMax per core.
    [[nodiscard]] const tls::TlsResumption* tls_session(const std::string& host) const {
        auto it = tls_sessions_.find(host);
        return it != tls_sessions_.end() && !it->second.empty() ? &it->second : nullptr;
    }
    void keep_tls_session(const std::string& host, tls::TlsResumption r);
    void connection_closed(OutboundConnection* c);

    struct Stats {
        uint64_t delivered = 0, deferred = 0, bounced = 0, expired = 0;
        uint64_t connections = 0;  // outbound connections opened
        uint64_t transactions = 0;
        uint64_t segments_deleted = 0;
        uint64_t compacted = 0;  // messages copied forward
    };
    [[nodiscard]] const Stats& stats() const { return stats_; }
    Stats& stats_mut() { return stats_; }

    // A destination on its owning core: the MX host set of one or more domains.
    struct Destination {
        uint64_t hash = 0;
        dns::ResolutionPtr resolution;  // the hosts, in the order to try
        sched::BasicDestinationQueue<JobMsg> queue;
        std::vector<OutboundConnection*> idle;  // connected, waiting for the next job
        std::string last_error;                 // why the last connection failed
        std::string last_status = "4.4.1";      // its RFC 3463 code (4.7.5: TLS required)
        uint64_t tls_broken_until_ms = 0;       // `may`: handshake failed, clear until then
        uint16_t port = 25;
        explicit Destination(const sched::DestinationLimits& l) : queue(l) {}
        // Nothing waits for it, no connection points at it, it is not resting after a
        // failure: it may be forgotten (made again from DNS when mail comes for it). A
        // remembered TLS failure is lost with it: the next connection tries TLS again.
        [[nodiscard]] bool evictable(uint64_t now_ms) const {
            return queue.ready() == 0 && queue.connections() == 0 &&
                   queue.backoff_until_ms() <= now_ms;
        }
    };
    struct Dispatch;  // one domain group of a due message, while its DNS answer is awaited
    // A job waiting on this core for its destination's DNS answer.
    struct Waiting;

    [[nodiscard]] const sched::DestinationLimits& destination_limits() const { return limits_; }
    // Every host failed; status: the RFC 3463 code the deferrals carry.
    void destination_failed(Destination& d, std::string_view why,
                            std::string_view status = "4.4.1");
    void job_ready(Destination& d);  // work arrived, or a connection became free
    void queue_job(Destination& d, const JobMsg& j);

  private:
    static constexpr size_t kTlsSessionsMax = 4096;

    uint32_t intern_domain(std::string_view d);
    void release_domain(uint32_t id);
    void dispatch_due();
    void dispatch(sched::MessageRef m);
    static void on_resolved(void* ctx, const dns::ResolutionPtr& r);
    void resolved(Dispatch* d);
    static void on_dest_resolved(void* ctx, const dns::ResolutionPtr& r);
    void send_job(uint32_t owner, const JobMsg& j);
    void apply(sched::MessageRef m, uint32_t rcpt, sched::Outcome o, std::string_view text,
               std::string_view remote, std::string_view tls = {});
    void finish_message(sched::MessageRef m);
    void start_connections(Destination& d);
    // The parts of on_tick, in its order.
    void expire(uint64_t now);             // outcome.cpp: past the queue lifetime
    void retry_bounces(uint64_t now);      // bounce.cpp: DSN reads and stores to try again
    void tick_connections(uint64_t now);   // destination.cpp: connection timeouts
    void tick_destinations(uint64_t now);  // destination.cpp: rested ones, the idle bound
    void arm_dns_poll();
    static void on_dns_readable(void* self, int res, uint32_t flags);
    [[nodiscard]] uint64_t random();

    Engine& engine_;
    uint32_t core_;
    const Config& config_;
    sched::MessageTable table_;
#ifdef RINGMAIL_SIM
    dns::SimResolver resolver_;  // answered by the simulated world (tests/sim/)
#else
    dns::Resolver resolver_;
#endif
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

    sched::DestinationTable<Destination> destinations_;  // at most --max-destinations idle
    std::vector<std::unique_ptr<OutboundConnection>> conns_;
    std::vector<OutboundConnection*> conns_free_;
    uint32_t conns_open_ = 0;

    sched::DestinationLimits limits_;
    smtp::ClientSettings client_settings_;  // every outbound session refers to it
    OutboundTls tls_policy_ = OutboundTls::may;
    std::unique_ptr<tls::TlsContext> tls_client_;  // one per core (wolfSSL CTX)
    // After tls_client_: freed before it (and the library reference it holds).
    std::unordered_map<std::string, tls::TlsResumption> tls_sessions_;
    IoOp dns_op_{&Delivery::on_dns_readable, this};
    bool dns_armed_ = false;
    Stats stats_;
};

}  // namespace ringmail
