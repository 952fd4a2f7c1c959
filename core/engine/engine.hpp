// engine.hpp — one core of ringmail: its reactor, listeners, connections, spool committer,
// queue, timers, and its ends of the core-to-core channels.
//
// Runs entirely on its own thread. What it shares with other cores is read-only (Shared) or
// a bounded SPSC channel. Per-client-address connection counts and AUTH failure counts are
// owned by one core per address (a hash of the address), asked over the channels, so their
// limits are exact without a lock.
#pragma once

#include <atomic>
#include <barrier>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "core/base/config.hpp"
#include "core/base/histogram.hpp"
#include "core/engine/metrics.hpp"
#include "core/queue/delivery.hpp"
#include "core/runtime/channel.hpp"
#include "core/runtime/reactor.hpp"
#include "core/runtime/text_arena.hpp"
#include "net/smtp/relay_policy.hpp"
#include "net/smtp/smtp_server.hpp"
#include "spool/io/commit.hpp"
#include "spool/io/queue_entry.hpp"
#include "tls/auth_throttle.hpp"
#include "tls/auth_worker.hpp"
#include "tls/tls_session.hpp"

namespace ringmail {

class Connection;
class Destinations;
class SocketStream;

struct IpHash {
    size_t operator()(const smtp::IpAddress& a) const noexcept {
        uint64_t h = 1469598103934665603ull;  // FNV-1a
        for (uint8_t b : a.bytes)
            h = (h ^ b) * 1099511628211ull;
        return static_cast<size_t>(h);
    }
};

// A per-address connection permit, asked of the core that owns the address.
struct PermitMsg {
    uint32_t slot;
    uint32_t generation;
    smtp::IpAddress ip;
};

// An AUTH attempt of a client address, accounted by the core that owns the address
// (tls::AuthThrottle): auth_admit asks before the credentials are checked and reserves the
// attempt, auth_admitted answers (refused, or the penalty a failure will get), auth_end settles
// it one way. One round trip per attempt.
struct AuthMsg {
    uint32_t slot;
    uint32_t generation;
    smtp::IpAddress ip;
    tls::AuthAdmission admission;  // auth_admitted
    tls::AuthEnd end;              // auth_end
};
static_assert(sizeof(AuthMsg) <= 56, "fits CoreMsg's 64 bytes");

// A job as it crosses cores (JobMsg, core/queue/delivery.hpp, is its whole form): the fixed
// fields, and the handle of a slot of the sender's TextArena holding the recipient indexes
// (rcpt_count × uint16_t) then the domain (domain_len bytes). The origin is the sender.
struct JobWire {
    sched::MessageRef ref;
    uint64_t message_id;
    uint64_t dest_hash;
    uint64_t segment_seq;  // RecordLocation, packed
    uint64_t offset;
    uint32_t record_bytes;
    uint32_t text;  // TextArena handle
    uint16_t dir;
    uint16_t rcpt_count;
    uint8_t domain_len;
};

// An outcome as it crosses back (OutcomeMsg is its whole form): the reply text, the remote
// host and the TLS description lie back to back in a slot of the sender's TextArena.
struct OutcomeWire {
    sched::MessageRef ref;
    uint64_t message_id;
    uint32_t text;  // TextArena handle
    uint16_t rcpt;
    uint16_t text_len;
    sched::Outcome outcome;
    uint8_t remote_len;
    uint8_t tls_len;
};

// Slots of a core's TextArena, handed back to it by the core that read them: up to kMax to a
// message, the rest of an iteration's at its end.
struct TextReturn {
    static constexpr uint32_t kMax = 13;
    uint32_t count;
    uint32_t handles[kMax];
};

// A message between cores. Trivially copyable; travels on SpscRing. Small, because every
// channel entry is allocated up front (--channel-capacity per pair of cores) and every permit
// pays for the largest kind: text travels in the sender's TextArena, not here.
struct CoreMsg {
    enum class Kind : uint8_t {
        ip_acquire,
        ip_grant,
        ip_deny,
        ip_release,
        auth_admit,
        auth_admitted,
        auth_end,
        job,
        outcome,
        text_return,
    };
    CoreMsg() : permit() {}
    Kind kind = Kind::ip_acquire;
    uint16_t from = 0;
    union {
        PermitMsg permit;
        AuthMsg auth;
        JobWire job;          // recipients for a destination this core owns
        OutcomeWire outcome;  // a recipient's outcome, back to the message's core
        TextReturn text_return;
    };
};
static_assert(std::is_trivially_copyable_v<CoreMsg>);
static_assert(sizeof(CoreMsg) <= 64, "one cache line per channel entry");
// What a TextArena slot must hold.
inline constexpr size_t kJobTextBytes =
    limits::job_rcpts_max * sizeof(uint16_t) + sizeof(JobMsg::domain);
inline constexpr size_t kOutcomeTextBytes =
    sizeof(OutcomeMsg::text) + sizeof(OutcomeMsg::remote) + sizeof(OutcomeMsg::tls);
static_assert(kJobTextBytes <= limits::channel_text_slot_bytes);
static_assert(kOutcomeTextBytes <= limits::channel_text_slot_bytes);

// What every core reads and nobody changes after start (ring_fds and text_arenas are filled
// before the start barrier).
struct Shared {
    const Config* config = nullptr;
    smtp::ServerSettings settings;
    smtp::RelayPolicy policy;
    std::unique_ptr<ChannelMesh<CoreMsg>> mesh;
    std::vector<int> ring_fds;
    // Per core, the arena its cross-core messages' text travels in (published with ring_fds;
    // null on one core or without delivery). Only its core allocates and frees.
    std::vector<const TextArena*> text_arenas;
    std::unique_ptr<std::barrier<>> start_barrier;
    std::atomic<int> failed{0};
    const tls::TlsContext* tls_server = nullptr;  // --tls-cert; null: no TLS
    const tls::AuthUsers* auth_users = nullptr;   // --auth-users; null: no AUTH
    // One per core, written by that core at each tick; read by the metrics endpoint.
    std::unique_ptr<CoreMetrics[]> metrics;
};

struct EngineStart {
    std::vector<int> listen_fds;
    std::vector<ListenerKind> listen_kinds;  // parallel to listen_fds; missing: plain
    int stop_fd = -1;                        // eventfd the main thread writes to ask for a stop
    uint64_t first_segment_seq = 0;
    uint64_t first_id_counter = 0;
    Queue* queue = nullptr;                                 // filled by recovery
    std::vector<RecoveredQueueEntry>* recovered = nullptr;  // what delivery takes up again
    // Segments present at start, per spool directory this core looks after (ascending).
    std::vector<RecoveredDir> segments;
};

class Engine {
  public:
    Engine(uint32_t core, Shared& shared, EngineStart start);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // The thread body. Returns 0 after a graceful stop.
    int run();
    // Ticks of this engine's timer so far (every 100 ms while it runs): the main thread's
    // service watchdog reads it to tell a wedged core from a busy one.
    [[nodiscard]] uint64_t ticks() const { return ticks_.load(std::memory_order_relaxed); }

    // For connections.
    [[nodiscard]] Reactor& reactor() { return reactor_; }
    [[nodiscard]] Committer& committer() { return *committer_; }
    [[nodiscard]] const Shared& shared() const { return shared_; }
    [[nodiscard]] const Config& config() const { return *shared_.config; }
    [[nodiscard]] uint64_t now_ms() const { return now_us_ / 1000; }
    [[nodiscard]] int64_t unix_time_s() const;
    [[nodiscard]] bool stopping() const { return stopping_; }
    void connection_released(Connection* c);  // the slot is free again
    void release_permit(const smtp::IpAddress& ip);
    // c's receive ended with ENOBUFS: it is re-armed once a buffer has come back to the ring.
    // listed: c is in the list already (its slot's last client starved and was not resumed).
    void recv_starved(SocketStream* s, bool listed);
    [[nodiscard]] uint32_t cores() const { return ncores_; }
    void send_job(uint32_t core, const JobMsg& j);
    void send_outcome(uint32_t core, const OutcomeMsg& o);
    // Messages waiting in the outbox for full channels reach --channel-capacity, or some wait
    // for a slot of this core's TextArena: delivery takes no new due work until they drain
    // (what is already in an attempt still reports).
    [[nodiscard]] bool outbox_backlogged() const {
        return outbox_count_ >= config().channel_capacity || !text_wait_.empty();
    }
    [[nodiscard]] Delivery* delivery() { return delivery_.get(); }
    [[nodiscard]] Destinations* destinations() { return destinations_.get(); }
    // AUTH for connections: checks run on this core's AuthWorker thread; the result comes back
    // as Connection::auth_checked(). False: the worker is full (answer 454).
    [[nodiscard]] bool auth_submit(const Connection& c, std::string_view user,
                                   std::string_view password);
    // AUTH failure accounting per client address (tls::AuthThrottle), kept by the core that
    // owns the address, whichever core SO_REUSEPORT gave the connection. Before a check:
    // auth_admit() reserves the attempt; true when this core owns the address (`out` holds
    // the answer), false when the owner was asked (its answer comes as
    // Connection::auth_admitted()). After: auth_end() settles an admitted attempt.
    [[nodiscard]] bool auth_admit(const Connection& c, tls::AuthAdmission& out);
    void auth_end(const smtp::IpAddress& ip, tls::AuthEnd end);

    struct Stats {
        uint64_t accepted = 0;
        uint64_t refused_busy = 0;
        uint64_t refused_per_ip = 0;
        uint64_t channel_full = 0;
        LatencyHistogram eod_to_reply;  // end of data → the commit's outcome (250 or 4xx)
        uint64_t text_full = 0;         // a job or outcome waited for a TextArena slot
    };
    [[nodiscard]] const Stats& stats() const { return stats_; }
    Stats& stats_mut() { return stats_; }
    // For the simulator's baseline checks once every client has gone.
    [[nodiscard]] size_t open_connections() const { return open_.size(); }
    [[nodiscard]] size_t addresses_with_permits() const { return per_ip_.size(); }
    [[nodiscard]] const CommitStats& commit_stats() const { return committer_->stats(); }

  private:
    void arm_accept(size_t i);
    void arm_tick();
    void arm_stop();
    void on_accept_result(size_t i, int res, uint32_t flags);
    void refuse_busy(int fd);
    void request_permit(Connection* c);
    bool permit_local(const smtp::IpAddress& ip);
    void on_auth_admitted(const CoreMsg& m);
    void drain_channels();
    void handle(const CoreMsg& m);
    void send_to(uint32_t core, const CoreMsg& m);
    void flush_outbox();
    // Cross-core text (TextArena): false when no slot is free.
    [[nodiscard]] bool try_send_job(uint32_t core, const JobMsg& j);
    [[nodiscard]] bool try_send_outcome(uint32_t core, const OutcomeMsg& o);
    void retry_text_wait();
    [[nodiscard]] JobMsg job_from(const CoreMsg& m) const;
    void outcome_from(const CoreMsg& m);
    void give_back(uint32_t core, uint32_t handle);
    void send_text_return(uint32_t core, bool wake);
    void flush_text_returns();
    void on_tick();
    void publish_metrics();
    void resume_starved();
    // Stopping, and nothing is left to finish: the loop ends (and the tick is not re-armed).
    [[nodiscard]] bool finished() const;
    void begin_stop();
    void update_clock();
    [[nodiscard]] uint32_t owner_of(const smtp::IpAddress& ip) const;

    struct AcceptOp {
        IoOp op;
        Engine* engine;
        size_t index;
    };
    static void on_accept(void* self, int res, uint32_t flags);
    static void on_tick_op(void* self, int res, uint32_t flags);
    static void on_stop_op(void* self, int res, uint32_t flags);
    static void on_auth_op(void* self, int res, uint32_t flags);
    void arm_auth();

    uint32_t core_;
    uint32_t ncores_;
    Shared& shared_;
    EngineStart start_;
    Reactor reactor_;
    std::unique_ptr<Committer> committer_;
    std::unique_ptr<Delivery> delivery_;          // the queue manager (core/queue/)
    std::unique_ptr<Destinations> destinations_;  // the destination side (net/outbound/)
    static void on_committed(void* self, const QueueEntry& e, const CommitWaiter& w);
    static void on_segment(void* self, uint64_t seq);

    std::vector<std::unique_ptr<AcceptOp>> accept_ops_;
    std::vector<std::unique_ptr<Connection>> slots_;
    std::vector<Connection*> free_;
    std::vector<Connection*> open_;       // every connection not free
    std::vector<SocketStream*> starved_;  // receives waiting for a buffer (inbound, outbound)
    uint64_t starved_published_ = 0;      // Reactor::buffers_published() at the last ENOBUFS
    uint32_t connections_max_ = 0;
    uint32_t generation_ = 0;

    std::unordered_map<smtp::IpAddress, uint32_t, IpHash> per_ip_;
    std::vector<std::vector<CoreMsg>> outbox_;  // per target core, when its channel was full
    size_t outbox_count_ = 0;                   // in all of outbox_
    std::vector<bool> wake_;                    // per target core, pushed this iteration
    std::unique_ptr<TextArena> text_;           // this core's cross-core text
    // Jobs and outcomes waiting for a slot of text_, in order (counted in outbox_count_ too);
    // bounded by the active queue, as the outbox is.
    struct TextWaiting {
        uint32_t core;
        bool is_job;
        JobMsg job;
        OutcomeMsg outcome;
    };
    std::vector<TextWaiting> text_wait_;
    std::vector<TextReturn> returns_;  // per source core, its handles to give back

    IoOp tick_op_{&Engine::on_tick_op, this};
    __kernel_timespec tick_ts_{0, 100'000'000};
    std::atomic<uint64_t> ticks_{0};  // written by this core only
    IoOp stop_op_{&Engine::on_stop_op, this};
    uint64_t stop_buf_ = 0;
    bool stopping_ = false;
    bool listeners_closed_ = false;
    uint64_t stop_deadline_ms_ = 0;
    uint64_t now_us_ = 0;
    uint64_t started_us_ = 0;  // sys::precise_us() when run() began: busy = lifetime - waiting
    Stats stats_;

    std::unique_ptr<tls::AuthWorker> auth_worker_;
    tls::AuthThrottle auth_throttle_;  // the addresses this core owns
    IoOp auth_op_{&Engine::on_auth_op, this};
};

}  // namespace ringmail
