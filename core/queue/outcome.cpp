// outcome.cpp — outcome bookkeeping (part of Delivery, see delivery.hpp): every recipient's
// outcome, from this core's connections or back from another core, becomes the table's
// decision, a status record and one `delivery` log line; expiry; a message whose recipients
// are all final is released.
#include <algorithm>

#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "core/queue/delivery.hpp"
#include "core/queue/delivery_parts.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "spool/status.hpp"

namespace ringmail {
namespace {

using sys::realtime_us;  // the simulator's clock in sim builds

const char* outcome_name(sched::RcptState s, bool expired) {
    if (expired) return "expired";
    switch (s) {
        case sched::RcptState::delivered:
            return "delivered";
        case sched::RcptState::bounced:
            return "bounced";
        default:
            return "deferred";
    }
}

}  // namespace

void Delivery::report(const JobMsg& job, uint16_t rcpt, sched::Outcome o, std::string_view text,
                      std::string_view remote, std::string_view tls) {
    if (job.origin == core_) {
        if (table_.valid(job.ref) && table_.id(job.ref) == job.message_id)
            apply(job.ref, rcpt, o, text, remote, tls);
        return;
    }
    OutcomeMsg m{};
    m.ref = job.ref;
    m.message_id = job.message_id;
    m.rcpt = rcpt;
    m.outcome = o;
    m.text_len = static_cast<uint16_t>(std::min(text.size(), sizeof m.text));
    text.copy(m.text, m.text_len);  // (string_view::copy: no memcpy from an empty view)
    m.remote_len = static_cast<uint8_t>(std::min(remote.size(), sizeof m.remote));
    remote.copy(m.remote, m.remote_len);
    m.tls_len = static_cast<uint8_t>(std::min(tls.size(), sizeof m.tls));
    tls.copy(m.tls, m.tls_len);
    engine_.send_outcome(job.origin, m);
}

void Delivery::handle_outcome(sched::MessageRef ref, uint64_t message_id, uint16_t rcpt,
                              sched::Outcome o, std::string_view text, std::string_view remote,
                              std::string_view tls) {
    if (!table_.valid(ref) || table_.id(ref) != message_id) return;
    apply(ref, rcpt, o, text, remote, tls);
}

// One recipient's outcome: the table decides, the spool records it, the log says it.
void Delivery::apply(sched::MessageRef m, uint32_t rcpt, sched::Outcome o, std::string_view text,
                     std::string_view remote, std::string_view tls) {
    Held& h = held_[m.index];
    uint64_t now = engine_.now_ms();
    sched::Decision d = table_.outcome(m, rcpt, o, now, random());
    if (h.inflight > 0 && --h.inflight == 0) active_--;
    spool::Status st;
    st.message_id = h.id;
    st.rcpt = static_cast<uint16_t>(rcpt);
    st.attempts = static_cast<uint16_t>(table_.attempts(m, rcpt));
    st.at_unix_us = realtime_us();
    st.remote = remote;
    st.reply = text;
    switch (d.state) {
        case sched::RcptState::delivered:
            st.state = spool::StatusState::delivered;
            stats_.delivered++;
            break;
        case sched::RcptState::bounced:
            st.state = d.expired ? spool::StatusState::expired : spool::StatusState::bounced;
            (d.expired ? stats_.expired : stats_.bounced)++;
            break;
        case sched::RcptState::pending:
            st.state = spool::StatusState::deferred;
            st.next_attempt_unix_us =
                st.at_unix_us + static_cast<int64_t>(d.next_attempt_ms - now) * 1000;
            stats_.deferred++;
            break;
    }
    if (d.state == sched::RcptState::bounced) {
        // Its status goes with its DSN (write_bounce_statuses).
        h.bounces.push_back(Bounce{rcpt, st.attempts, d.expired, st.at_unix_us, std::string(text),
                                   std::string(remote)});
    } else {
        engine_.committer().append_status(st);
    }
    log_outcome(h, rcpt, outcome_name(d.state, d.expired), st.attempts, st.at_unix_us, remote, text,
                tls);
    maybe_finish(m);
}

void Delivery::log_outcome(const Held& h, uint32_t rcpt, const char* status, uint32_t attempts,
                           int64_t at_unix_us, std::string_view remote, std::string_view text,
                           std::string_view tls) {
    char qid[16];
    smtp::format_queue_id(h.id, qid);
    std::string_view to = address_of(h, rcpt);
    LOG_INFO(
        "delivery id=%.16s rcpt=%u to=<%.*s> domain=%s relay=%.*s status=%s attempts=%u "
        "delay=%.1fs reply=\"%.*s\" tls=%.*s",
        qid, rcpt, static_cast<int>(to.size()), to.data(), domain_names_[h.domains[rcpt]].c_str(),
        static_cast<int>(remote.size()), remote.data(), status, attempts,
        static_cast<double>(at_unix_us - h.arrival_unix_us) / 1e6, static_cast<int>(text.size()),
        text.data(), tls.empty() ? 4 : static_cast<int>(tls.size()),
        tls.empty() ? "none" : tls.data());
}

void Delivery::expire(uint64_t now) {
    expired_.clear();
    table_.expire(now, expired_);
    for (auto& [m, rcpt] : expired_) {
        Held& h = held_[m.index];
        int64_t at = realtime_us();
        h.bounces.push_back(Bounce{rcpt, static_cast<uint16_t>(table_.attempts(m, rcpt)), true, at,
                                   "4.4.7 message expired in the queue", ""});
        stats_.expired++;
        log_outcome(h, rcpt, "expired", table_.attempts(m, rcpt), at, "",
                    "4.4.7 message expired in the queue", "");
        maybe_finish(m);
    }
}

void Delivery::maybe_finish(sched::MessageRef m) {
    Held& h = held_[m.index];
    if (h.inflight > 0 || h.dsn_busy) return;
    if (!h.bounces.empty()) {
        start_dsn(m);
        return;
    }
    if (table_.final(m)) finish_message(m);
}

void Delivery::finish_message(sched::MessageRef m) {
    Held& h = held_[m.index];
    if (h.tracked) {
        // Its segment may go once the statuses that made it final are durable: they ride in
        // the next batch to start (after those in flight, answered in order).
        const Committer& c = engine_.committer();
        finals_.push_back(
            FinalPending{h.segdir, h.slot, h.id, c.stats().commits + c.batches_inflight() + 1u});
        h.tracked = false;
    }
    for (uint32_t dom : h.domains)
        release_domain(dom);
    h.domains.clear();
    table_.remove(m);
}

}  // namespace ringmail
