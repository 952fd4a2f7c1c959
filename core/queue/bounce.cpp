// bounce.cpp — bounces (part of Delivery, see delivery.hpp): one RFC 3464 DSN per message and
// round of attempts, built from the original read back from the spool and stored like any
// message; the bounced recipients' statuses are written only once their DSN is durable.
#include <strings.h>

#include <algorithm>
#include <cstring>

#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "core/queue/delivery.hpp"
#include "core/queue/delivery_parts.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "net/smtp/smtp_dsn.hpp"
#include "spool/status.hpp"

namespace ringmail {

// --- bounces: one DSN per message and round of attempts ------------------------------------

void Delivery::start_dsn(sched::MessageRef m) {
    Held& h = held_[m.index];
    h.dsn_busy = true;
    auto* r = new DsnRead{};
    r->ref = m;
    r->owner = this;
    r->read.at = h.at;
    r->read.user = r;
    r->read.done = [](SpoolReader::Read* rd, int err) {
        auto* dr = static_cast<DsnRead*>(rd->user);
        dr->owner->dsn_read(dr, err);
    };
    reader_.read(&r->read);
}

void Delivery::write_bounce_statuses(const Held& h, const std::vector<Bounce>& bounces) {
    for (const Bounce& b : bounces) {
        spool::Status st;
        st.message_id = h.id;
        st.rcpt = static_cast<uint16_t>(b.rcpt);
        st.state = b.expired ? spool::StatusState::expired : spool::StatusState::bounced;
        st.attempts = b.attempts;
        st.at_unix_us = b.at_unix_us;
        st.remote = b.remote;
        st.reply = b.text;
        engine_.committer().append_status(st);
    }
}

namespace {

using sys::realtime_us;  // the simulator's clock in sim builds

// "550 5.1.1 ..." or "5.1.2 ..." → "5.1.1" / "5.1.2"; a failure without one gets a default.
std::string_view status_of(std::string_view text, bool expired) {
    if (expired) return "4.4.7";
    for (size_t i = 0; i + 5 <= text.size(); i++) {
        if ((text[i] == '4' || text[i] == '5') && text[i + 1] == '.' &&
            (i == 0 || text[i - 1] == ' ')) {
            size_t e = text.find(' ', i);
            return text.substr(i, (e == std::string_view::npos ? text.size() : e) - i);
        }
    }
    return "5.0.0";
}

std::string_view orcpt_of(std::string_view params) {
    for (size_t i = 0; i + 6 <= params.size(); i++) {
        if (strncasecmp(params.data() + i, "ORCPT=", 6) == 0 && (i == 0 || params[i - 1] == ' ')) {
            size_t e = params.find(' ', i);
            return params.substr(i + 6, (e == std::string_view::npos ? params.size() : e) - i - 6);
        }
    }
    return {};
}

}  // namespace

void Delivery::dsn_read(DsnRead* r, int err) {
    std::unique_ptr<DsnRead> keep(r);
    if (!table_.valid(r->ref)) return;
    Held& h = held_[r->ref.index];
    h.dsn_busy = false;
    std::optional<spool::MessageView> m;
    if (!err) {
        auto rec = spool::decode_record(std::string_view(r->read.buf.data(), r->read.buf.size()),
                                        r->read.salt, nullptr);
        if (rec) m = spool::decode_message(rec->payload);
        if (!m || m->id != h.id) err = EBADMSG;
    }
    char qid[16];
    smtp::format_queue_id(h.id, qid);
    if (err) {
        // No DSN without the original: its bounces stay unrecorded (deferred in the spool)
        // and the read is tried again later, never given up in silence.
        LOG_ERROR(
            "bounce of %.16s: cannot read the original (%s): its DSN waits; %zu recipient(s) "
            "stay deferred; retrying in %llu s",
            qid, strerror(err), h.bounces.size(),
            static_cast<unsigned long long>(kDsnReadRetryMs / 1000));
        dsn_read_retry_.push_back({r->ref, engine_.now_ms() + kDsnReadRetryMs});
        return;
    }
    if (!smtp::should_bounce(m->mail_from)) {
        LOG_INFO("bounce of %.16s: the sender is <>: no DSN (RFC 5321 §6.1)", qid);
        write_bounce_statuses(h, h.bounces);
        h.bounces.clear();
        maybe_finish(r->ref);
        return;
    }
    std::vector<smtp::DsnRecipient> rcpts;
    for (const Bounce& b : h.bounces) {
        smtp::DsnRecipient d;
        d.address = m->rcpts[b.rcpt].address;
        d.orcpt = orcpt_of(m->rcpts[b.rcpt].params);
        d.action = smtp::DsnAction::failed;
        d.status = status_of(b.text, b.expired);
        std::string_view host = b.remote;
        d.remote_mta = host.substr(0, host.find('['));
        // Diagnostic-Code carries a remote SMTP reply (RFC 3464 §2.3.6); our own reasons
        // (DNS, expiry) are told by the Status and the human-readable part.
        bool smtp_reply = b.text.size() >= 4 && isdigit(static_cast<unsigned char>(b.text[0])) &&
                          isdigit(static_cast<unsigned char>(b.text[1])) &&
                          isdigit(static_cast<unsigned char>(b.text[2])) && b.text[3] == ' ';
        d.diagnostic = smtp_reply ? std::string_view(b.text) : std::string_view();
        d.last_attempt_unix_s = b.at_unix_us / 1000000;
        rcpts.push_back(d);
    }
    auto w = std::make_unique<DsnWaiter>();
    w->owner = this;
    w->id = engine_.committer().next_id();
    w->ref = r->ref;
    w->message_id = h.id;
    smtp::DsnInput in;
    in.reporting_mta = config_.hostname;
    in.sender = m->mail_from;
    in.queue_id = h.id;
    in.dsn_id = w->id;
    in.arrival_unix_s = m->arrival_unix_us / 1000000;
    in.now_unix_s = realtime_us() / 1000000;
    in.recipients = rcpts;
    in.original_text = m->body;
    smtp::Dsn dsn = smtp::build_dsn(in);
    w->text = std::move(dsn.text);
    w->sender = std::string(m->mail_from);
    w->params = dsn.eight_bit ? "BODY=8BITMIME" : "";
    char did[16];
    smtp::format_queue_id(in.dsn_id, did);
    LOG_INFO("bounce of %.16s: DSN %.16s to <%s> for %zu recipient(s)", qid, did, w->sender.c_str(),
             rcpts.size());
    // The bounces of this round wait with their DSN: their statuses are written once it is
    // durable (dsn_committed); the message is held until then.
    w->bounces = std::move(h.bounces);
    h.bounces.clear();
    h.dsn_busy = true;
    w->tries = 0;
    stage_dsn(std::move(w));
}

void Delivery::stage_dsn(std::unique_ptr<DsnWaiter> w) {
    w->rcpt = spool::RcptField{w->sender, ""};
    w->rcpt_view = std::span<const spool::RcptField>(&w->rcpt, 1);
    w->rcpts = 1;
    spool::EnvelopeFields env{config_.hostname, "", "LOCAL", "", w->params, w->rcpt_view};
    Committer& c = engine_.committer();
    if (!w->builder.begin(c.pool(), w->id, realtime_us(), env) || !w->builder.append(w->text)) {
        w->builder.reset();
        dsn_retry_.push_back(std::move(w));  // staging memory is short: the next tick
        return;
    }
    c.submit(w.get());
    dsn_waiters_.push_back(std::move(w));
}

void Delivery::dsn_committed(DsnWaiter* w, bool ok) {
    auto it = std::find_if(dsn_waiters_.begin(), dsn_waiters_.end(),
                           [&](const auto& p) { return p.get() == w; });
    RM_ASSERT(it != dsn_waiters_.end());
    std::unique_ptr<DsnWaiter> keep = std::move(*it);
    dsn_waiters_.erase(it);
    if (!ok) {
        // Never dropped: its recipients stay deferred in the spool (a restart bounces them
        // again) and it is stored again, under the same id, until the spool takes it.
        keep->tries++;
        if (keep->tries <= 3 || keep->tries % 100 == 0) {
            char did[16], qid[16];
            smtp::format_queue_id(keep->id, did);
            smtp::format_queue_id(keep->message_id, qid);
            LOG_ERROR(
                "bounce of %.16s: DSN %.16s to <%s> could not be stored (try %u): its %zu "
                "recipient(s) stay deferred until it is; retrying",
                qid, did, keep->sender.c_str(), keep->tries, keep->bounces.size());
        }
        dsn_retry_.push_back(std::move(keep));
        return;
    }
    // The DSN is durable (the listener has queued it for delivery like any message): now the
    // bounces it reports may be recorded, in the next batch.
    if (!table_.valid(keep->ref) || table_.id(keep->ref) != keep->message_id) return;
    Held& h = held_[keep->ref.index];
    write_bounce_statuses(h, keep->bounces);
    h.dsn_busy = false;
    maybe_finish(keep->ref);
}

void Delivery::retry_bounces(uint64_t now) {
    if (!dsn_read_retry_.empty()) {
        size_t kept = 0;
        for (size_t i = 0; i < dsn_read_retry_.size(); i++) {
            auto [m, at] = dsn_read_retry_[i];
            if (at > now) {
                dsn_read_retry_[kept++] = dsn_read_retry_[i];
                continue;
            }
            if (!table_.valid(m)) continue;
            Held& h = held_[m.index];
            if (!h.dsn_busy && h.inflight == 0 && !h.bounces.empty()) start_dsn(m);
        }
        dsn_read_retry_.resize(kept);
    }
    if (!dsn_retry_.empty()) {
        auto retry = std::move(dsn_retry_);
        dsn_retry_.clear();
        for (auto& w : retry)
            stage_dsn(std::move(w));
    }
}

}  // namespace ringmail
