// connection.cpp — see connection.hpp.
#include "net/inbound/connection.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstring>
#include <ctime>

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
    RM_ASSERT(state_ == State::free && stream_.state() == SocketStream::State::idle);
    RM_ASSERT(!auth_admitting_ && !auth_reserved_);  // the last release ended its AUTH
    stream_.open(engine_.reactor(), fd);
    kind_ = kind;
    auth_in_flight_ = false;
    auth_hold_until_ms_ = 0;
    ip_ = ip;
    generation_ = generation;
    state_ = State::awaiting_permit;
    holds_permit_ = false;
    in_message_ = committing_ = shutdown_requested_ = false;
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
        if (!stream_.start_tls(*engine_.shared().tls_server)) {
            LOG_WARN("cannot start TLS for %s: out of memory", addr_text_);
            begin_close();
            return;
        }
        set_deadline();
        stream_.start_reading();
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
        stream_.start_reading();
        return;
    }
    start_session();
}

void Connection::start_session() {
    state_ = State::active;
    session_.start(client_);
    set_deadline();
    if (!stream_.reading()) stream_.start_reading();
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
            if (session_.wants_close() || stream_.tls_handshaking()) {
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
            if (stream_.tls_handshaking()) {
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

void Connection::stream_starved() {
    engine_.recv_starved(&stream_, stream_.starved_listed());
}

// Input arrived, a send completed, or the handshake moved on.
void Connection::stream_ready() {
    if (state_ == State::greeting_delay) {
        if (stream_.backlog() == 0) return;
        stream_.discard_input();
        state_ = State::active;
        session_.pregreet_violation();
        flush_output();
        return;
    }
    pump();
}

void Connection::pump() {
    if (state_ != State::active) return;
    feed_session();
    if (state_ != State::active) return;
    if (session_.wants_auth_check() && !auth_admitting_) {
        start_auth_check();
        // Answered at once: the next commands may run.
        if (!auth_in_flight_ && !auth_admitting_) feed_session();
        if (state_ != State::active) return;
    }
    // A closing session reads nothing more. (While it is only slow — a commit or its output
    // pending — the stream pauses reading past a few buffers, so one client cannot hold many.)
    if (session_.wants_close()) stream_.stop_reading();
    set_deadline();
    flush_output();
}

void Connection::feed_session() {
    if (stream_.tls()) {
        feed_tls();
        return;
    }
    feed_plain();
    if (session_.wants_starttls()) begin_starttls();
}

void Connection::feed_plain() {
    while (!session_.waiting_commit() && !session_.wants_close() && !session_.wants_starttls()) {
        const std::string_view in = stream_.input();
        if (in.empty()) break;
        const size_t n = session_.feed(in);
        RM_ASSERT(n <= in.size());
        stream_.consume(n);
        if (n == 0) break;  // output full: continue after the send completes
    }
}

// --- TLS ---------------------------------------------------------------------------------

// RFC 3207 §4.2: whatever we received so far came before our 220, in clear, after STARTTLS;
// the stream drops it, never runs it inside the TLS session (CVE-2011-0411). The 220 itself
// (and any earlier reply still queued) goes out in clear, then the handshake's records.
void Connection::begin_starttls() {
    const tls::TlsContext* ctx = engine_.shared().tls_server;
    RM_ASSERT(ctx != nullptr);
    if (!stream_.start_tls(*ctx, {}, nullptr, session_.output().size())) {
        LOG_WARN("cannot start TLS for %s: out of memory", addr_text_);
        session_.peer_closed();
        begin_close();
    }
}

// Moves plaintext into the session until it waits or the stream has none.
void Connection::feed_tls() {
    while (state_ == State::active && !session_.wants_close()) {
        const std::string_view in = stream_.input();
        if (in.empty()) return;
        const size_t n = session_.feed(in);
        stream_.consume(n);
        if (n == 0) return;  // commit, AUTH check or output room pending
    }
}

void Connection::stream_tls_established() {
    const tls::TlsSession& s = *stream_.tls();
    LOG_DEBUG("TLS with %s: %.*s %.*s%s", addr_text_, static_cast<int>(s.version().size()),
              s.version().data(), static_cast<int>(s.cipher().size()), s.cipher().data(),
              s.resumed() ? " (resumed)" : "");
    if (kind_ == ListenerKind::smtps) session_.start(client_);
    session_.tls_started(s.version(), s.cipher());
}

// The peer closed its side, the connection broke, or the peer closed or broke the TLS
// session: the connection ends, after the alert wolfSSL may have queued (a TLS 1.1 client
// learns "protocol version" from it).
void Connection::stream_ended(StreamEnd why) {
    session_.peer_closed();
    if (why != StreamEnd::tls_failed) {
        begin_close();
        return;
    }
    const tls::TlsSession& t = *stream_.tls();
    LOG_DEBUG("TLS with %s failed: %.*s (%d)", addr_text_, static_cast<int>(t.error().size()),
              t.error().data(), t.error_code());
    stream_.finish();
    if (!stream_.is_open()) state_ = State::closing;
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

// --- writing and closing -----------------------------------------------------------------

// A closing session's last reply goes out (with close_notify after it under TLS), then the
// stream closes.
void Connection::flush_output() {
    if (state_ != State::active) return;
    if (!session_.wants_close()) {
        stream_.flush();
        return;
    }
    stream_.finish();
    if (!stream_.is_open()) state_ = State::closing;
}

void Connection::begin_close() {
    if (state_ == State::closing || state_ == State::free) return;
    state_ = State::closing;
    stream_.close();
}

void Connection::stream_released() {
    if (in_message_) message_abort();
    state_ = State::free;
    auth_in_flight_ = false;
    auth_hold_until_ms_ = 0;
    auth_admitting_ = false;  // a late answer finds it gone (Engine)
    if (auth_reserved_) auth_settle(tls::AuthEnd::abandoned);  // no answer reached it
    if (holds_permit_) {
        holds_permit_ = false;
        engine_.release_permit(ip_);
    }
    engine_.connection_released(this);
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
    stream_.hold();  // the committer refers to this connection until commit_finished
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
        .str("tls_version", stream_.tls() ? stream_.tls()->version() : std::string_view())
        .str("tls_cipher", stream_.tls() ? stream_.tls()->cipher() : std::string_view())
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
    stream_.unhold();
    if (state_ != State::active || !stream_.is_open()) return;
    if (shutdown_requested_) session_.shutdown();
    pump();
}

}  // namespace ringmail
