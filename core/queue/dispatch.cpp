// dispatch.cpp — the queue manager proper (part of Delivery, see delivery.hpp): messages come
// in (committed on this core, or recovered at start) with their recipients' domains interned;
// due recipients are grouped by domain, each domain is resolved, and the recipients go as jobs
// to the core that owns their destination.
#include <algorithm>
#include <cstring>

#include "core/engine/engine.hpp"
#include "core/queue/delivery.hpp"
#include "core/queue/delivery_parts.hpp"
#include "core/runtime/sim_hooks.hpp"

namespace ringmail {
namespace {

using sys::realtime_us;  // the simulator's clock in sim builds

std::string_view domain_of(std::string_view address) {
    size_t at = address.rfind('@');
    return at == std::string_view::npos ? std::string_view() : address.substr(at + 1);
}

}  // namespace

// --- domains of queued recipients, interned per core --------------------------------------

uint32_t Delivery::intern_domain(std::string_view d) {
    std::string key(d);
    for (char& c : key)
        c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    auto it = domain_ids_.find(key);
    if (it != domain_ids_.end()) {
        domain_refs_[it->second]++;
        return it->second;
    }
    uint32_t id;
    if (!domain_free_.empty()) {
        id = domain_free_.back();
        domain_free_.pop_back();
        domain_names_[id] = key;
        domain_refs_[id] = 1;
    } else {
        id = static_cast<uint32_t>(domain_names_.size());
        domain_names_.push_back(key);
        domain_refs_.push_back(1);
    }
    domain_ids_.emplace(std::move(key), id);
    return id;
}

void Delivery::release_domain(uint32_t id) {
    RM_ASSERT(domain_refs_[id] > 0);
    if (--domain_refs_[id] > 0) return;
    domain_ids_.erase(domain_names_[id]);
    domain_names_[id].clear();
    domain_free_.push_back(id);
}

// --- the origin side ---------------------------------------------------------------------

void Delivery::message_committed(const QueueEntry& e, std::span<const spool::RcptField> rcpts,
                                 uint64_t arrival_ms) {
    sched::MessageRef m =
        table_.add(e.id, arrival_ms, static_cast<uint32_t>(rcpts.size()), engine_.now_ms());
    if (held_.size() <= m.index) held_.resize(m.index + 1);
    Held& h = held_[m.index];
    h.at = RecordLocation{e.dir, e.segment_seq, e.offset, e.record_bytes};
    h.id = e.id;
    h.generation = m.generation;
    h.segdir = 0;
    h.slot = segdirs_[0]->tracker.message_added(e.segment_seq, e.id);
    h.tracked = true;
    h.arrival_unix_us = realtime_us();
    h.inflight = 0;
    h.bounces.clear();
    h.dsn_busy = false;
    h.domains.clear();
    h.addrs.clear();
    h.addr_end.clear();
    for (const auto& r : rcpts) {
        h.domains.push_back(intern_domain(domain_of(r.address)));
        h.addrs.append(r.address);
        h.addr_end.push_back(static_cast<uint32_t>(h.addrs.size()));
    }
}

void Delivery::add_recovered(const RecoveredQueueEntry& r) {
    uint64_t now = engine_.now_ms();
    int64_t real = realtime_us();
    auto to_mono = [&](int64_t unix_us) -> uint64_t {
        int64_t ago_ms = (real - unix_us) / 1000;
        return ago_ms >= static_cast<int64_t>(now) ? 0 : now - static_cast<uint64_t>(ago_ms);
    };
    uint64_t arrival = to_mono(r.arrival_unix_us);
    sched::MessageRef m =
        table_.add(r.entry.id, arrival, static_cast<uint32_t>(r.rcpts.size()), now);
    if (held_.size() <= m.index) held_.resize(m.index + 1);
    Held& h = held_[m.index];
    h.at = RecordLocation{r.entry.dir, r.entry.segment_seq, r.entry.offset, r.entry.record_bytes};
    h.id = r.entry.id;
    h.generation = m.generation;
    h.segdir = segdir_for(r.entry.dir);
    h.tracked = segdirs_[h.segdir]->tracker.has_segment(r.entry.segment_seq);
    if (h.tracked) h.slot = segdirs_[h.segdir]->tracker.message_added(r.entry.segment_seq, h.id);
    h.arrival_unix_us = r.arrival_unix_us;
    h.inflight = 0;
    h.bounces.clear();
    h.dsn_busy = false;
    h.domains.clear();
    h.addrs.clear();
    h.addr_end.clear();
    for (uint32_t i = 0; i < r.rcpts.size(); i++) {
        const RecoveredRcpt& rr = r.rcpts[i];
        h.domains.push_back(intern_domain(domain_of(rr.address)));
        h.addrs.append(rr.address);
        h.addr_end.push_back(static_cast<uint32_t>(h.addrs.size()));
        auto st = static_cast<sched::RcptState>(rr.state);
        uint64_t next = rr.next_attempt_unix_us ? to_mono(rr.next_attempt_unix_us) : now;
        if (st != sched::RcptState::pending || rr.attempts > 0)
            table_.restore(m, i, st, rr.attempts, std::max(next, now));
    }
    if (table_.final(m)) finish_message(m);
}

void Delivery::dispatch_due() {
    if (stopping_ || !resolver_ok_) return;
    // Bounded, like Postfix's active queue: at most --active-queue-max messages in an attempt;
    // the rest stay due in the table and are taken as attempts end.
    if (active_ >= config_.active_queue_max) return;
    // Back-pressure: another core's channel is full and the outbox has reached its bound; the
    // due messages wait in the queue (in order) until it drains.
    if (engine_.outbox_backlogged()) return;
    due_.clear();
    table_.take_due(engine_.now_ms(), due_, config_.active_queue_max - active_);
    for (sched::MessageRef m : due_)
        dispatch(m);
}

void Delivery::dispatch(sched::MessageRef m) {
    if (!table_.valid(m)) return;
    rcpts_.clear();
    table_.due_rcpts(m, engine_.now_ms(), rcpts_);
    if (rcpts_.empty()) return;
    Held& h = held_[m.index];
    if (h.inflight == 0) active_++;
    h.inflight += static_cast<uint32_t>(rcpts_.size());
    std::sort(rcpts_.begin(), rcpts_.end(),
              [&](uint32_t a, uint32_t b) { return h.domains[a] < h.domains[b]; });
    std::unique_ptr<Dispatch> d;
    if (!dispatch_free_.empty()) {
        d = std::move(dispatch_free_.back());
        dispatch_free_.pop_back();
    } else {
        d = std::make_unique<Dispatch>();
    }
    d->ref = m;
    d->owner = this;
    d->groups.clear();
    for (size_t i = 0; i < rcpts_.size();) {
        uint32_t dom = h.domains[rcpts_[i]];
        d->groups.push_back(Dispatch::Group{d.get(), dom, {}, nullptr});
        while (i < rcpts_.size() && h.domains[rcpts_[i]] == dom)
            d->groups.back().rcpts.push_back(rcpts_[i++]);
    }
    // One more than the lookups: answers from the cache arrive during the loop below, and
    // the dispatch must not complete before every lookup has been asked.
    d->pending = static_cast<uint32_t>(d->groups.size()) + 1;
    Dispatch* raw = d.release();
    for (Dispatch::Group& g : raw->groups) {
        if (!config_.smarthost.empty()) {
            auto sh = dns::parse_smarthost(config_.smarthost);
            RM_ASSERT(sh);
            resolver_.resolve_smarthost(*sh, engine_.now_ms(), &Delivery::on_resolved, &g);
        } else {
            resolver_.resolve_destination(domain_names_[g.domain], engine_.now_ms(),
                                          &Delivery::on_resolved, &g);
        }
    }
    if (--raw->pending == 0) resolved(raw);
}

void Delivery::on_resolved(void* ctx, const dns::ResolutionPtr& r) {
    auto* g = static_cast<Dispatch::Group*>(ctx);
    g->result = r;
    Dispatch* d = g->parent;
    if (--d->pending == 0) d->owner->resolved(d);
}

void Delivery::resolved(Dispatch* d) {
    std::unique_ptr<Dispatch> keep(d);
    sched::MessageRef m = d->ref;
    if (table_.valid(m)) {
        for (Dispatch::Group& g : d->groups) {
            const dns::Resolution& r = *g.result;
            if (r.outcome == dns::Outcome::ok) continue;
            std::string text = std::string(r.status) + " " + r.text;
            auto o = r.outcome == dns::Outcome::bounce ? sched::Outcome::bounced
                                                       : sched::Outcome::deferred;
            for (uint32_t rc : g.rcpts)
                apply(m, rc, o, text, "");
        }
        // Groups with the same destination go together, in one job per transaction's worth.
        const Held& h = held_[m.index];
        size_t per = std::min<size_t>(limits_.rcpts_per_transaction, limits::job_rcpts_max);
        for (size_t a = 0; a < d->groups.size(); a++) {
            Dispatch::Group& first = d->groups[a];
            if (!first.result || first.result->outcome != dns::Outcome::ok) continue;
            uint64_t hash = first.result->destination_hash;
            JobMsg j{};
            j.ref = m;
            j.message_id = h.id;
            j.dest_hash = hash;
            j.at = h.at;
            j.origin = static_cast<uint16_t>(core_);
            std::string_view dom = domain_names_[first.domain];
            j.domain_len = static_cast<uint8_t>(std::min<size_t>(dom.size(), sizeof j.domain));
            if (j.domain_len) memcpy(j.domain, dom.data(), j.domain_len);
            uint32_t owner = static_cast<uint32_t>(hash % engine_.cores());
            j.rcpt_count = 0;
            for (size_t b = a; b < d->groups.size(); b++) {
                Dispatch::Group& g = d->groups[b];
                if (!g.result || g.result->outcome != dns::Outcome::ok ||
                    g.result->destination_hash != hash)
                    continue;
                for (uint32_t rc : g.rcpts) {
                    j.rcpts[j.rcpt_count++] = static_cast<uint16_t>(rc);
                    if (j.rcpt_count == per) {
                        send_job(owner, j);
                        j.rcpt_count = 0;
                    }
                }
                g.result = nullptr;  // taken
            }
            if (j.rcpt_count > 0) send_job(owner, j);
        }
    }
    for (auto& g : d->groups)
        g.result = nullptr;
    dispatch_free_.push_back(std::move(keep));
}

void Delivery::send_job(uint32_t owner, const JobMsg& j) {
    if (owner == core_) {
        handle_job(j);
        return;
    }
    engine_.send_job(owner, j);
}

}  // namespace ringmail
