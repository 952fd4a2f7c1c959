// connection.cpp — see connection.hpp.
#include "net/inbound/connection.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <new>

#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "core/runtime/sim_hooks.hpp"

namespace ringmail {
namespace {

using sys::realtime_us;  // the simulator's clock in sim builds

void format_ip(const smtp::IpAddress& ip, char* out, size_t n) {
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(ip.bytes.data(), kMapped, 12) == 0)
        inet_ntop(AF_INET, &ip.bytes[12], out, static_cast<socklen_t>(n));
    else
        inet_ntop(AF_INET6, ip.bytes.data(), out, static_cast<socklen_t>(n));
}

}  // namespace

Connection::Connection(Engine& engine, uint32_t slot)
    : engine_(engine), session_(engine.shared().settings, *this), slot_(slot) {}

void Connection::open(int fd, const smtp::IpAddress& ip, uint32_t generation, ListenerKind kind) {
    RM_ASSERT(state_ == State::free && inflight_ == 0 && npending_ == 0 && tls_ == nullptr);
    RM_ASSERT(!auth_admitting_ && !auth_reserved_);  // on_close ended the last client's AUTH
    fd_ = fd;
    kind_ = kind;
    clear_out_ = 0;
    auth_in_flight_ = false;
    auth_hold_until_ms_ = 0;
    ip_ = ip;
    generation_ = generation;
    state_ = State::awaiting_permit;
    recv_armed_ = send_inflight_ = close_submitted_ = holds_permit_ = false;
    in_message_ = committing_ = shutdown_requested_ = false;
    // starved_ stays: set, the slot is still in the engine's list of starved receives.
    format_ip(ip, addr_text_, sizeof addr_text_);
    client_.addr_text = addr_text_;
    client_.addr = ip;
    client_.relay_allowed = engine_.shared().policy.network_trusted(ip);
    client_.submission = kind != ListenerKind::plain;
    session_.reset(client_);  // the slot's session still holds the last connection's state
}

void Connection::permit(bool granted) {
    RM_ASSERT(state_ == State::awaiting_permit);
    if (granted) holds_permit_ = true;
    if (engine_.stopping()) {
        begin_close();
        return;
    }
    if (!granted && kind_ == ListenerKind::smtps) {
        begin_close();  // a TLS client cannot read a reply in clear
        return;
    }
    if (!granted) {
        state_ = State::active;
        char line[160];
        snprintf(line, sizeof line, "421 4.7.0 Error: too many connections from %s", addr_text_);
        session_.refuse(line);
        flush_output();
        return;
    }
    if (kind_ == ListenerKind::smtps) {  // RFC 8314 §3.3: the handshake comes first
        state_ = State::active;
        if (!start_tls()) {
            begin_close();
            return;
        }
        set_deadline();
        arm_recv();
        return;
    }
    // Clients outside the relay networks wait for the greeting; one that talks first is a
    // spam engine that does not speak SMTP (smtp.md, "Talking before the greeting"). Not on
    // submission ports: their clients are mail programs of our own users.
    uint32_t delay =
        client_.relay_allowed || kind_ != ListenerKind::plain ? 0 : engine_.config().greet_delay_ms;
    if (delay) {
        state_ = State::greeting_delay;
        deadline_ms_ = engine_.now_ms() + delay;
        arm_recv();
        return;
    }
    start_session();
}

void Connection::start_session() {
    state_ = State::active;
    session_.start(client_);
    set_deadline();
    if (!recv_armed_) arm_recv();
    flush_output();
}

void Connection::set_deadline() {
    const Config& c = engine_.config();
    deadline_ms_ =
        engine_.now_ms() + (session_.in_data() ? c.timeout_data_ms : c.timeout_command_ms);
}

void Connection::tick(uint64_t now_ms) {
    if (auth_hold_until_ms_ != 0 && now_ms >= auth_hold_until_ms_ && state_ == State::active) {
        auth_hold_until_ms_ = 0;
        session_.auth_result(smtp::AuthOutcome::failed);
        pump();
    }
    if (now_ms < deadline_ms_) return;
    switch (state_) {
        case State::greeting_delay:
            start_session();
            return;
        case State::active:
            if (committing_) return;  // the disk, not the client, is slow: wait for it
            // No reply can reach a client mid-handshake (we cannot encrypt it yet).
            if (session_.wants_close() || tls_handshaking()) {
                // Our last reply cannot be delivered (the peer stopped reading): give up on it.
                begin_close();
                return;
            }
            session_.timeout();
            set_deadline();
            pump();
            return;
        default:
            return;
    }
}

void Connection::shutdown() {
    switch (state_) {
        case State::awaiting_permit:
        case State::greeting_delay:
            begin_close();
            return;
        case State::active:
            if (committing_) {
                shutdown_requested_ = true;  // after its 250 (or 451)
                return;
            }
            if (session_.wants_close()) return;
            if (tls_handshaking()) {
                begin_close();
                return;
            }
            session_.shutdown();
            set_deadline();
            pump();
            return;
        default:
            return;
    }
}

// --- reading -----------------------------------------------------------------------------

void Connection::arm_recv() {
    RM_ASSERT(!recv_armed_ && fd_ >= 0);
    Reactor& r = engine_.reactor();
    io_uring_sqe* s = r.sqe(recv_op_);
    io_uring_prep_recv_multishot(s, fd_, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = r.buffer_group();
    recv_armed_ = true;
    inflight_++;
}

void Connection::resume_recv() {
    starved_ = false;
    if ((state_ == State::active || state_ == State::greeting_delay) && !recv_armed_ &&
        npending_ < kPendingStop && !session_.wants_close())
        arm_recv();
}

void Connection::on_recv(void* self, int res, uint32_t flags) {
    auto* c = static_cast<Connection*>(self);
    Reactor& r = c->engine_.reactor();
    bool more = flags & IORING_CQE_F_MORE;
    if (!more) {
        c->recv_armed_ = false;
        c->inflight_--;
    }
    if (res > 0) {
        RM_ASSERT(flags & IORING_CQE_F_BUFFER);
        auto bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        if (c->state_ == State::closing || c->session_.wants_close()) {
            r.recycle(bid);
            c->maybe_release();
            return;
        }
        if (c->state_ == State::greeting_delay) {
            r.recycle(bid);
            c->state_ = State::active;
            c->session_.pregreet_violation();
            c->flush_output();
            return;
        }
        if (c->npending_ == kPendingMax) {  // a client that never waits for our replies
            r.recycle(bid);
            c->session_.peer_closed();
            c->begin_close();
            return;
        }
        c->pending_[c->npending_++] = Pending{bid, 0, static_cast<uint32_t>(res)};
        c->pump();
        return;
    }
    if (c->state_ == State::closing) {
        c->maybe_release();
        return;
    }
    if (res == -ENOBUFS) {  // every receive buffer of this core is in use: retry once one is back
        if (!more) {
            c->engine_.recv_starved(c, c->starved_);
            c->starved_ = true;
        }
        return;
    }
    if (res == -ECANCELED) {  // we paused reading while a backlog drains (pump re-arms)
        c->pump();
        return;
    }
    // 0: the peer closed its side; < 0: the connection broke.
    c->session_.peer_closed();
    c->begin_close();
}

void Connection::pump() {
    if (state_ != State::active) return;
    Reactor& r = engine_.reactor();
    feed_session();
    if (state_ != State::active) return;
    if (session_.wants_auth_check() && !auth_admitting_) {
        start_auth_check();
        // Answered at once: the next commands may run.
        if (!auth_in_flight_ && !auth_admitting_) feed_session();
        if (state_ != State::active) return;
    }
    if (session_.wants_close()) drop_pending();
    set_deadline();
    flush_output();
    if (state_ != State::active) return;
    if (npending_ >= kPendingStop && recv_armed_) {
        // The session is not keeping up (commit or output pending): stop reading until the
        // backlog drains, so one client cannot hold many receive buffers.
        io_uring_sqe* s = r.sqe();
        io_uring_prep_cancel64(s, recv_op_.user_data(), 0);
        io_uring_sqe_set_data64(s, kTagIgnore);
    } else if (npending_ == 0 && !recv_armed_ && !starved_ && !session_.wants_close()) {
        arm_recv();
    }
}

void Connection::feed_session() {
    if (tls_) {
        feed_tls();
        return;
    }
    feed_plain();
    if (session_.wants_starttls()) begin_starttls();
}

void Connection::feed_plain() {
    Reactor& r = engine_.reactor();
    while (npending_ > 0 && !session_.waiting_commit() && !session_.wants_close() &&
           !session_.wants_starttls()) {
        Pending& p = pending_[0];
        std::string_view in(r.buffer(p.bid) + p.off, p.len - p.off);
        size_t n = session_.feed(in);
        RM_ASSERT(n <= in.size());
        p.off += static_cast<uint32_t>(n);
        if (p.off == p.len) {
            pop_pending();
            continue;
        }
        if (n == 0) break;  // output full: continue after the send completes
    }
}

void Connection::pop_pending() {
    RM_ASSERT(npending_ > 0);
    engine_.reactor().recycle(pending_[0].bid);
    memmove(&pending_[0], &pending_[1], (npending_ - 1) * sizeof(Pending));
    npending_--;
}

// --- TLS ---------------------------------------------------------------------------------

bool Connection::start_tls() {
    const tls::TlsContext* ctx = engine_.shared().tls_server;
    RM_ASSERT(ctx != nullptr && tls_ == nullptr);
    tls_.reset(new (std::nothrow) TlsLink(*ctx));
    if (tls_ != nullptr && tls_->session.ok()) return true;
    LOG_WARN("cannot start TLS for %s: out of memory", addr_text_);
    tls_.reset();
    return false;
}

// RFC 3207 §4.2: whatever we received so far came before our 220, in clear, after STARTTLS;
// it is dropped, never run inside the TLS session (CVE-2011-0411). The 220 itself (and any
// earlier reply still queued) goes out in clear, then the handshake's records.
void Connection::begin_starttls() {
    drop_pending();
    clear_out_ = static_cast<uint32_t>(session_.output().size());
    if (!start_tls()) {
        session_.peer_closed();
        begin_close();
    }
}

// Runs the handshake, then moves plaintext into the session, until the session waits or the
// TLS session needs ciphertext we do not have.
void Connection::feed_tls() {
    // wolfSSL may compact its output buffer: never while a send from it is in flight.
    if (send_inflight_) return;
    TlsLink& t = *tls_;
    while (state_ == State::active && !session_.wants_close()) {
        if (t.plain_off < t.plain_len) {
            const size_t n = session_.feed({t.plain + t.plain_off, t.plain_len - t.plain_off});
            t.plain_off += static_cast<uint32_t>(n);
            if (t.plain_off == t.plain_len) t.plain_off = t.plain_len = 0;
            if (n == 0) return;  // commit, AUTH check or output room pending
            continue;
        }
        if (!t.session.handshake_done()) {
            const tls::TlsStatus st = t.session.handshake();
            if (st == tls::TlsStatus::done) {
                tls_established();
                continue;
            }
            if (st != tls::TlsStatus::want_more) return tls_ended(st);
        } else {
            const tls::TlsIo io = t.session.read_plaintext(t.plain, sizeof t.plain);
            if (io.status == tls::TlsStatus::done) {
                t.plain_len = static_cast<uint32_t>(io.bytes);
                continue;
            }
            if (io.status != tls::TlsStatus::want_more) return tls_ended(io.status);
        }
        if (!feed_ciphertext()) return;
    }
}

// Moves received ciphertext into the TlsSession; false when there was none to move (or no
// room for it).
bool Connection::feed_ciphertext() {
    Reactor& r = engine_.reactor();
    bool moved = false;
    while (npending_ > 0 && tls_->session.input_room() > 0) {
        Pending& p = pending_[0];
        const size_t n = tls_->session.feed_ciphertext({r.buffer(p.bid) + p.off, p.len - p.off});
        p.off += static_cast<uint32_t>(n);
        moved = moved || n > 0;
        if (p.off < p.len) break;
        pop_pending();
    }
    return moved;
}

void Connection::tls_established() {
    const tls::TlsSession& s = tls_->session;
    LOG_DEBUG("TLS with %s: %.*s %.*s%s", addr_text_, static_cast<int>(s.version().size()),
              s.version().data(), static_cast<int>(s.cipher().size()), s.cipher().data(),
              s.resumed() ? " (resumed)" : "");
    if (kind_ == ListenerKind::smtps) session_.start(client_);
    session_.tls_started(s.version(), s.cipher());
}

// The peer closed the TLS session (close_notify) or broke it: the connection ends, after
// the alert wolfSSL may have queued (a TLS 1.1 client learns "protocol version" from it).
void Connection::tls_ended(tls::TlsStatus status) {
    if (status == tls::TlsStatus::failed)
        LOG_DEBUG("TLS with %s failed: %.*s (%d)", addr_text_,
                  static_cast<int>(tls_->session.error().size()), tls_->session.error().data(),
                  tls_->session.error_code());
    tls_->broken = true;
    drop_pending();
    session_.peer_closed();
    if (status == tls::TlsStatus::closed || tls_->session.ciphertext_output().empty()) {
        begin_close();
        return;
    }
    flush_output();
}

// --- AUTH --------------------------------------------------------------------------------

// The owner core of the client address admits the attempt before anything is checked; it
// answers at once when that is this core.
void Connection::start_auth_check() {
    tls::AuthAdmission a;
    if (!engine_.auth_admit(*this, a)) {
        auth_admitting_ = true;  // auth_admitted() follows
        return;
    }
    check_credentials(a);
}

void Connection::auth_admitted(const tls::AuthAdmission& a) {
    RM_ASSERT(auth_admitting_);
    auth_admitting_ = false;
    if (state_ != State::active || !session_.wants_auth_check()) {
        // The session ended meanwhile (a timeout or a stop): nothing is checked.
        if (!a.refused) engine_.auth_end(ip_, tls::AuthEnd::abandoned);
        return;
    }
    check_credentials(a);
    if (!auth_in_flight_) pump();
}

void Connection::check_credentials(const tls::AuthAdmission& a) {
    if (a.refused) {
        session_.auth_check_started();
        session_.auth_result(smtp::AuthOutcome::too_many);
        LOG_INFO("AUTH from %s refused: too many failures", addr_text_);
        return;
    }
    auth_reserved_ = true;
    auth_penalty_ = a.on_failure;
    const bool submitted =
        engine_.auth_submit(*this, session_.auth_username(), session_.auth_password());
    session_.auth_check_started();  // wipes the session's copy of the password
    if (!submitted) {
        auth_settle(tls::AuthEnd::abandoned);
        session_.auth_result(smtp::AuthOutcome::temporary);
        return;
    }
    auth_in_flight_ = true;
}

void Connection::auth_settle(tls::AuthEnd end) {
    RM_ASSERT(auth_reserved_);
    auth_reserved_ = false;
    engine_.auth_end(ip_, end);
}

void Connection::auth_checked(bool ok) {
    if (!auth_in_flight_ || state_ != State::active) {
        auth_in_flight_ = false;
        return;  // the client has gone: nothing to answer
    }
    auth_in_flight_ = false;
    auth_settle(ok ? tls::AuthEnd::succeeded : tls::AuthEnd::failed);
    if (ok) {
        session_.auth_result(smtp::AuthOutcome::ok);
        pump();
        return;
    }
    const tls::AuthPenalty p = auth_penalty_;
    LOG_INFO("AUTH from %s failed%s", addr_text_, p.disconnect ? "; disconnecting" : "");
    if (p.disconnect || p.delay_ms == 0) {
        session_.auth_result(p.disconnect ? smtp::AuthOutcome::too_many
                                          : smtp::AuthOutcome::failed);
        pump();
        return;
    }
    // Growing delays slow a password guesser down; the reply waits, the reactor does not.
    auth_hold_until_ms_ = engine_.now_ms() + p.delay_ms;
}

void Connection::drop_pending() {
    Reactor& r = engine_.reactor();
    for (uint32_t i = 0; i < npending_; i++)
        r.recycle(pending_[i].bid);
    npending_ = 0;
}

// --- writing -----------------------------------------------------------------------------

void Connection::flush_output() {
    if (send_inflight_ || state_ == State::closing) return;
    if (clear_out_ > 0) {
        submit_send(session_.output().substr(0, clear_out_));
        return;
    }
    if (tls_) {
        flush_tls();
        return;
    }
    std::string_view out = session_.output();
    if (out.empty()) {
        if (session_.wants_close()) begin_close();
        return;
    }
    submit_send(out);
}

// Encrypts the session's replies into the TlsSession (after the handshake), then sends what
// it holds. A closing session gets a close_notify after its last reply (RFC 8446 §6.1).
void Connection::flush_tls() {
    TlsLink& t = *tls_;
    if (t.broken) {  // only a queued alert may still go out
        if (t.session.ciphertext_output().empty()) {
            begin_close();
            return;
        }
        submit_send(t.session.ciphertext_output());
        return;
    }
    const bool handshake_done = t.session.handshake_done();
    while (handshake_done && !session_.output().empty()) {
        const tls::TlsIo w = t.session.write_plaintext(session_.output());
        if (w.status == tls::TlsStatus::want_more) break;  // full: after this send
        if (w.status != tls::TlsStatus::done) return tls_ended(w.status);
        session_.output_sent(w.bytes);
    }
    const bool last_reply_out = session_.wants_close() && session_.output().empty();
    if (handshake_done && last_reply_out && !t.close_notify_queued) {
        t.close_notify_queued = true;
        (void)t.session.close_notify();  // best effort: the close follows either way
    }
    const std::string_view c = t.session.ciphertext_output();
    if (!c.empty()) {
        submit_send(c);
        return;
    }
    if (session_.wants_close() && (last_reply_out || !handshake_done)) begin_close();
}

void Connection::submit_send(std::string_view bytes) {
    RM_ASSERT(!send_inflight_ && !bytes.empty());
    io_uring_sqe* s = engine_.reactor().sqe(send_op_);
    io_uring_prep_send(s, fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    send_inflight_ = true;
    inflight_++;
}

void Connection::on_send(void* self, int res, uint32_t) {
    auto* c = static_cast<Connection*>(self);
    c->inflight_--;
    c->send_inflight_ = false;
    if (c->state_ == State::closing) {
        c->maybe_release();
        return;
    }
    if (res <= 0) {
        c->session_.peer_closed();
        c->begin_close();
        return;
    }
    const auto n = static_cast<size_t>(res);
    if (c->clear_out_ > 0) {
        RM_ASSERT(n <= c->clear_out_);
        c->clear_out_ -= static_cast<uint32_t>(n);
        c->session_.output_sent(n);
    } else if (c->tls_) {
        c->tls_->session.ciphertext_sent(n);
    } else {
        c->session_.output_sent(n);
    }
    c->pump();
    if (c->state_ != State::active) return;
    c->flush_output();
}

// --- closing -----------------------------------------------------------------------------

void Connection::begin_close() {
    if (state_ == State::closing || state_ == State::free) return;
    state_ = State::closing;
    drop_pending();
    if (recv_armed_ || send_inflight_) {
        io_uring_sqe* s = engine_.reactor().sqe();
        io_uring_prep_cancel_fd(s, fd_, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(s, kTagIgnore);
    }
    maybe_release();
}

void Connection::maybe_release() {
    if (state_ != State::closing || inflight_ > 0 || committing_ || close_submitted_) return;
    if (in_message_) message_abort();
    close_submitted_ = true;
    inflight_++;
    io_uring_sqe* s = engine_.reactor().sqe(close_op_);
    io_uring_prep_close(s, fd_);
}

void Connection::on_close(void* self, int, uint32_t) {
    auto* c = static_cast<Connection*>(self);
    c->inflight_--;
    RM_ASSERT(c->inflight_ == 0);
    c->fd_ = -1;
    c->state_ = State::free;
    c->tls_.reset();  // its ~35 KiB go back as soon as the connection does
    c->auth_in_flight_ = false;
    c->auth_hold_until_ms_ = 0;
    c->auth_admitting_ = false;  // a late answer finds the connection gone (Engine)
    if (c->auth_reserved_) c->auth_settle(tls::AuthEnd::abandoned);  // no answer reached it
    if (c->holds_permit_) {
        c->holds_permit_ = false;
        c->engine_.release_permit(c->ip_);
    }
    c->engine_.connection_released(c);
}

// --- the message: staged here, committed by the core's Committer ------------------------

smtp::MessageSink::Start Connection::message_begin(const smtp::Envelope& env) {
    RM_ASSERT(!in_message_ && !committing_);
    rcpt_fields_.clear();
    for (const smtp::Recipient& r : env.rcpts)
        rcpt_fields_.push_back({r.address, r.params});
    spool::EnvelopeFields f{env.helo,      client_.addr_text, env.protocol,
                            env.mail_from, env.mail_params,   rcpt_fields_};
    Committer& c = engine_.committer();
    uint64_t id = c.next_id();
    if (!builder.begin(c.pool(), id, realtime_us(), f)) return {};
    accepted_id_ = id;
    in_message_ = true;
    body_bytes_ = 0;
    if (log::json()) sender_.assign(env.mail_from);  // for the `accepted` event
    rcpt_view = rcpt_fields_;
    rcpts = static_cast<uint16_t>(std::min<size_t>(env.rcpts.size(), UINT16_MAX));
    return {id, engine_.unix_time_s()};
}

bool Connection::message_body(std::string_view chunk) {
    body_bytes_ += chunk.size();
    return builder.append(chunk);
}

void Connection::message_end() {
    RM_ASSERT(in_message_);
    in_message_ = false;
    committing_ = true;
    eod_us_ = sys::precise_us();
    engine_.committer().submit(this);
}

// One `accepted` event per message made durable (JSON logs only: the text log has one line
// per delivery, as before).
void Connection::log_accepted() {
    if (!log::enabled(log::Level::info)) return;
    char qid[16];
    smtp::format_queue_id(accepted_id_, qid);
    log::Event(log::Level::info, "accepted")
        .str("queue_id", std::string_view(qid, sizeof qid))
        .str("sender", sender_)
        .num("recipients", rcpts)
        .num("size", body_bytes_)
        .str("client_ip", client_.addr_text)
        .str("tls_version", tls_ ? tls_->session.version() : std::string_view())
        .str("tls_cipher", tls_ ? tls_->session.cipher() : std::string_view())
        .emit();
}

void Connection::message_abort() {
    builder.reset();
    in_message_ = false;
}

void Connection::commit_finished(smtp::CommitResult r) {
    RM_ASSERT(committing_);
    committing_ = false;
    engine_.stats_mut().eod_to_reply.record(sys::precise_us() - eod_us_);
    if (r == smtp::CommitResult::ok && log::json()) log_accepted();
    // The session learns the outcome even when the peer has gone: it waits in commit_wait
    // until then, and the slot's next open() resets it.
    session_.commit_done(r);
    if (state_ == State::closing) {
        maybe_release();
        return;
    }
    if (shutdown_requested_) session_.shutdown();
    pump();
}

}  // namespace ringmail
