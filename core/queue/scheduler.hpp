// scheduler.hpp — the outbound scheduler's decisions, as pure code on a caller-given clock.
//
// Two halves, each owned by one core and never shared:
//
//  * MessageTable (on the core whose spool holds the message): every queued message and the
//    state of each recipient (pending, delivered, bounced), its attempts, and when it may be
//    tried again. It answers "what is due now", takes each attempt's outcome, and applies the
//    lifetime limit: a recipient still pending at arrival + lifetime is bounced (4.4.7), and no
//    retry is ever scheduled past that point, so nothing can sit in the queue forever.
//
//  * DestinationQueue (on the core that owns a destination: the MX host set of one or more
//    domains): jobs ready for that destination, and how many connections it may open now.
//    It groups recipients of one message that share the destination into one transaction, caps
//    recipients per transaction, caps concurrent connections, and backs the whole destination
//    off when every host failed.
//
// The engine (core/engine/engine.cpp) carries jobs and outcomes between the two over the
// core-to-core channels, and writes each outcome as a status record in the spool. Nothing here does
// I/O, reads a clock or allocates per operation in the steady state (tables reserve their
// capacity).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ringmail::sched {

// --retry-schedule FIRST:MAX — exponential from FIRST, doubling per attempt, capped at MAX,
// each delay spread by ±jitter so that retries of many messages do not arrive together.
struct RetryPolicy {
    uint64_t first_ms = 5 * 60 * 1000;
    uint64_t max_ms = 60 * 60 * 1000;
    uint32_t jitter_percent = 10;
    uint64_t lifetime_ms = 5ull * 24 * 60 * 60 * 1000;  // --max-queue-lifetime
};

// "300", "90s", "5m", "1h", "5d" → milliseconds; false on anything else.
[[nodiscard]] bool parse_duration_ms(std::string_view text, uint64_t* out);
// "5m:1h" → first and max.
[[nodiscard]] bool parse_retry_schedule(std::string_view text, RetryPolicy* out);

// Delay before attempt number `attempt` + 1, after `attempt` failures (attempt ≥ 1).
// `random` is any 64-bit random value (the caller's PRNG; tests pass fixed ones).
[[nodiscard]] uint64_t retry_delay_ms(const RetryPolicy& p, uint32_t attempt, uint64_t random);

enum class RcptState : uint8_t { pending, delivered, bounced };

enum class Outcome : uint8_t { delivered, deferred, bounced };

struct MessageRef {
    uint32_t index;       // slot in the table
    uint32_t generation;  // of that slot: a stale reference is ignored
};

// What the table says about one recipient after an outcome.
struct Decision {
    RcptState state;
    bool expired = false;          // bounced because its lifetime ran out (report 4.4.7)
    uint64_t next_attempt_ms = 0;  // when deferred: the retry time
};

class MessageTable {
  public:
    explicit MessageTable(const RetryPolicy& policy) : policy_(policy) {}

    // A message enters the queue (new, or recovered at start). rcpt_count ≤ 65535.
    MessageRef add(uint64_t id, uint64_t arrival_ms, uint32_t rcpt_count, uint64_t now_ms);
    // Restore a recipient's state from the spool's status records (at start only).
    void restore(MessageRef m, uint32_t rcpt, RcptState s, uint32_t attempts,
                 uint64_t next_attempt_ms);

    // Messages with at least one pending recipient due at now_ms, each reported once per call,
    // at most `max` of them (the others stay due, earliest first, for a later call). Appends to
    // `out`; the caller then asks due_rcpts() for each.
    void take_due(uint64_t now_ms, std::vector<MessageRef>& out, size_t max = SIZE_MAX);
    // The recipients of m to attempt now (pending, due, not already in an attempt); they are
    // marked in flight until their outcome() comes. Appends rcpt indexes to `out`.
    void due_rcpts(MessageRef m, uint64_t now_ms, std::vector<uint32_t>& out);
    // The earliest time something becomes due (UINT64_MAX if nothing is pending).
    [[nodiscard]] uint64_t next_due_ms() const;

    // An attempt for one recipient ended. Returns what became of it. `random` feeds jitter.
    Decision outcome(MessageRef m, uint32_t rcpt, Outcome o, uint64_t now_ms, uint64_t random);
    // The watchdog: bounce (expired) every pending recipient whose lifetime has run out;
    // appends (message, rcpt) pairs to `out`. Called from the engine's tick.
    void expire(uint64_t now_ms, std::vector<std::pair<MessageRef, uint32_t>>& out);

    [[nodiscard]] bool valid(MessageRef m) const;
    [[nodiscard]] uint64_t id(MessageRef m) const;
    [[nodiscard]] RcptState rcpt_state(MessageRef m, uint32_t rcpt) const;
    [[nodiscard]] uint32_t attempts(MessageRef m, uint32_t rcpt) const;
    [[nodiscard]] uint64_t next_attempt_ms(MessageRef m, uint32_t rcpt) const;
    [[nodiscard]] uint32_t pending(MessageRef m) const;  // recipients not final
    [[nodiscard]] bool final(MessageRef m) const { return pending(m) == 0; }
    // Drop a final message (its spool record may go once every message of its segment is
    // final). Its slot is reused.
    void remove(MessageRef m);
    [[nodiscard]] size_t size() const { return live_; }

  private:
    struct Rcpt {
        RcptState state = RcptState::pending;
        bool inflight = false;
        uint16_t attempts = 0;
        uint64_t next_attempt_ms = 0;
    };
    struct Slot {
        uint64_t id = 0;
        uint64_t arrival_ms = 0;
        uint64_t scheduled_ms = UINT64_MAX;  // the due_ entry that counts (older ones are stale)
        uint32_t generation = 0;
        uint32_t pending = 0;
        bool live = false;
        std::vector<Rcpt> rcpts;  // keeps its capacity when the slot is reused
    };
    struct Due {
        uint64_t at_ms;
        uint32_t index;
        uint32_t generation;
        bool operator>(const Due& o) const { return at_ms > o.at_ms; }
    };
    void schedule(uint32_t index, uint64_t at_ms);
    [[nodiscard]] uint64_t deadline_ms(const Slot& s) const {
        return s.arrival_ms + policy_.lifetime_ms;
    }
    void settle(Slot& s, Rcpt& r, RcptState st);

    RetryPolicy policy_;
    std::vector<Slot> slots_;
    std::vector<uint32_t> free_;
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;        // next attempts
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> deadlines_;  // the watchdog
    size_t live_ = 0;
};

// One destination on its owning core.
struct DestinationLimits {
    uint32_t connections_max = 20;           // --max-connections-per-destination
    uint32_t messages_per_connection = 100;  // --max-messages-per-connection
    uint32_t rcpts_per_transaction = 100;    // --max-recipients-per-transaction
};

// A job: the recipients of one message that go to this destination.
struct Job {
    uint64_t message_id;
    uint16_t origin_core;
    MessageRef ref;            // in the origin core's MessageTable
    uint32_t first_rcpt_slot;  // into the origin's job recipient list (opaque here)
    uint32_t rcpt_count;
};

// Jobs of one destination; J is the job type (the engine's carries the recipient list).
template <typename J>
class BasicDestinationQueue {
  public:
    explicit BasicDestinationQueue(const DestinationLimits& l) : limits_(l) {}

    void push(const J& j) { ready_.push_back(j); }
    // Ahead of every waiting job: the rest of a job whose transaction the server cut short.
    void push_front(const J& j) {
        if (head_ > 0)
            ready_[--head_] = j;
        else
            ready_.insert(ready_.begin(), j);
    }
    [[nodiscard]] size_t ready() const { return ready_.size() - head_; }
    // Whether one more connection should be opened now: work waits that the connections on
    // their way will not take, we are under the limit, and the destination is not resting.
    [[nodiscard]] bool wants_connection(uint64_t now_ms) const {
        return ready() > starting_ && connections_ < limits_.connections_max &&
               now_ms >= backoff_until_ms_;
    }
    void connection_opened() {
        connections_++;
        starting_++;
    }
    void connection_ready() { starting_--; }  // connected and greeted: it takes jobs now
    void connection_closed(bool was_ready) {
        connections_--;
        if (!was_ready) starting_--;
    }
    [[nodiscard]] uint32_t connections() const { return connections_; }
    // Next job for a connection that has sent `sent` messages; false: close the connection.
    [[nodiscard]] bool next(uint32_t sent, J* out) {
        if (sent >= limits_.messages_per_connection || ready() == 0) return false;
        *out = ready_[head_++];
        if (head_ == ready_.size()) {
            ready_.clear();  // keeps a little capacity: the next job needs no allocation
            head_ = 0;
            // An idle destination keeps no more than that, whatever its busiest hour took.
            if (ready_.capacity() > kIdleJobsKept) {
                ready_.shrink_to_fit();
                ready_.reserve(kIdleJobsKept);
            }
        } else if (head_ > 1024 && head_ * 2 > ready_.size()) {
            ready_.erase(ready_.begin(), ready_.begin() + static_cast<long>(head_));
            head_ = 0;
        }
        return true;
    }
    // Every host of the destination failed: no new connection until then.
    void back_off(uint64_t until_ms) { backoff_until_ms_ = until_ms; }
    [[nodiscard]] uint64_t backoff_until_ms() const { return backoff_until_ms_; }
    // Jobs still waiting (to hand back as deferred when the destination backs off).
    void drain(std::vector<J>& out) {
        out.insert(out.end(), ready_.begin() + static_cast<long>(head_), ready_.end());
        ready_.clear();
        ready_.shrink_to_fit();
        head_ = 0;
    }
    [[nodiscard]] const DestinationLimits& limits() const { return limits_; }

  private:
    static constexpr size_t kIdleJobsKept = 4;
    DestinationLimits limits_;
    std::vector<J> ready_;
    size_t head_ = 0;
    uint32_t connections_ = 0;
    uint32_t starting_ = 0;  // opened, not yet taking jobs
    uint64_t backoff_until_ms_ = 0;
};

using DestinationQueue = BasicDestinationQueue<Job>;

// The destinations one core serves, keyed by the hash of their MX host set, bounded: past `max`
// entries the least recently used destination that is idle — D::evictable(now): no job
// waiting, no connection, not resting after a failure — is dropped, and made again from DNS
// when mail comes for it. A destination in use is never dropped (its connections point at it);
// how many can be in use is bounded by the active-queue and connection limits, and the table
// comes back under `max` (trim) as they fall idle.
template <typename D>
class DestinationTable {
  public:
    explicit DestinationTable(size_t max) : max_(max == 0 ? 1 : max) {}

    // The destination, made the most recently used; null when unknown.
    [[nodiscard]] D* find(uint64_t hash) {
        auto it = map_.find(hash);
        if (it == map_.end()) return nullptr;
        lru_.splice(lru_.begin(), lru_, it->second.lru);
        return it->second.d.get();
    }
    // The destination for hash; when unknown, made by make() (a std::unique_ptr<D>) after
    // idle ones past the bound are dropped.
    template <typename Make>
    D& get_or_add(uint64_t hash, uint64_t now_ms, Make&& make) {
        if (D* d = find(hash)) return *d;
        if (map_.size() >= max_) evict(now_ms, map_.size() + 1 - max_, kScanPerAdd);
        lru_.push_front(hash);
        auto it = map_.emplace(hash, Entry{make(), lru_.begin()}).first;
        return *it->second.d;
    }
    // Back under the bound if destinations in use kept it over (a timer calls this).
    void trim(uint64_t now_ms) {
        if (map_.size() > max_) evict(now_ms, map_.size() - max_, map_.size());
    }
    template <typename F>
    void for_each(F&& f) {
        for (auto& [hash, e] : map_)
            f(*e.d);
    }
    [[nodiscard]] size_t size() const { return map_.size(); }
    [[nodiscard]] size_t max() const { return max_; }

  private:
    // Bounded work per insertion: a destination found in use is moved to the front, so the
    // next look starts past it.
    static constexpr size_t kScanPerAdd = 64;
    struct Entry {
        std::unique_ptr<D> d;
        std::list<uint64_t>::iterator lru;
    };
    void evict(uint64_t now_ms, size_t n, size_t scan) {
        for (; n > 0 && scan > 0 && !lru_.empty(); scan--) {
            auto last = std::prev(lru_.end());
            auto it = map_.find(*last);
            if (it->second.d->evictable(now_ms)) {
                map_.erase(it);
                lru_.erase(last);
                n--;
            } else {
                lru_.splice(lru_.begin(), lru_, last);
            }
        }
    }
    size_t max_;
    std::unordered_map<uint64_t, Entry> map_;
    std::list<uint64_t> lru_;  // most recently used first
};

}  // namespace ringmail::sched
