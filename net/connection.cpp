// connection.cpp — see connection.hpp.
#include "net/connection.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/engine.hpp"
#include "core/log.hpp"

namespace ringmail {
namespace {

int64_t realtime_us() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}

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

void Connection::open(int fd, const smtp::IpAddress& ip, uint32_t generation) {
    RM_ASSERT(state_ == State::free && inflight_ == 0 && npending_ == 0);
    fd_ = fd;
    ip_ = ip;
    generation_ = generation;
    state_ = State::awaiting_permit;
    recv_armed_ = send_inflight_ = close_submitted_ = holds_permit_ = false;
    in_message_ = committing_ = shutdown_requested_ = starved_ = false;
    format_ip(ip, addr_text_, sizeof addr_text_);
    client_.addr_text = addr_text_;
    client_.addr = ip;
    client_.relay_allowed = engine_.shared().policy.network_trusted(ip);
    session_.reset(client_);  // the slot's session still holds the last connection's state
}

void Connection::permit(bool granted) {
    RM_ASSERT(state_ == State::awaiting_permit);
    if (granted) holds_permit_ = true;
    if (engine_.stopping()) {
        begin_close();
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
    // Clients outside the relay networks wait for the greeting; one that talks first is a
    // spam engine that does not speak SMTP (smtp.md, "Talking before the greeting").
    uint32_t delay = client_.relay_allowed ? 0 : engine_.config().greet_delay_ms;
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
    if (now_ms < deadline_ms_) return;
    switch (state_) {
        case State::greeting_delay:
            start_session();
            return;
        case State::active:
            if (committing_) return;  // the disk, not the client, is slow: wait for it
            if (session_.wants_close()) {
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
    if (res == -ENOBUFS) {  // every receive buffer of this core is in use: retry soon
        if (!more && !c->starved_) {
            c->starved_ = true;
            c->engine_.recv_starved(c);
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
    while (npending_ > 0 && !session_.waiting_commit() && !session_.wants_close()) {
        Pending& p = pending_[0];
        std::string_view in(r.buffer(p.bid) + p.off, p.len - p.off);
        size_t n = session_.feed(in);
        RM_ASSERT(n <= in.size());
        p.off += static_cast<uint32_t>(n);
        if (p.off == p.len) {
            r.recycle(p.bid);
            memmove(&pending_[0], &pending_[1], (npending_ - 1) * sizeof(Pending));
            npending_--;
            continue;
        }
        if (n == 0) break;  // output full: continue after the send completes
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

void Connection::drop_pending() {
    Reactor& r = engine_.reactor();
    for (uint32_t i = 0; i < npending_; i++)
        r.recycle(pending_[i].bid);
    npending_ = 0;
}

// --- writing -----------------------------------------------------------------------------

void Connection::flush_output() {
    if (send_inflight_ || state_ == State::closing) return;
    std::string_view out = session_.output();
    if (out.empty()) {
        if (session_.wants_close()) begin_close();
        return;
    }
    io_uring_sqe* s = engine_.reactor().sqe(send_op_);
    io_uring_prep_send(s, fd_, out.data(), out.size(), MSG_NOSIGNAL);
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
    c->session_.output_sent(static_cast<size_t>(res));
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
    in_message_ = true;
    rcpt_view = rcpt_fields_;
    rcpts = static_cast<uint16_t>(std::min<size_t>(env.rcpts.size(), UINT16_MAX));
    return {id, engine_.unix_time_s()};
}

bool Connection::message_body(std::string_view chunk) {
    return builder.append(chunk);
}

void Connection::message_end() {
    RM_ASSERT(in_message_);
    in_message_ = false;
    committing_ = true;
    engine_.committer().submit(this);
}

void Connection::message_abort() {
    builder.reset();
    in_message_ = false;
}

void Connection::commit_finished(smtp::CommitResult r) {
    RM_ASSERT(committing_);
    committing_ = false;
    if (state_ == State::closing) {
        maybe_release();
        return;
    }
    session_.commit_done(r);
    if (shutdown_requested_) session_.shutdown();
    pump();
}

}  // namespace ringmail
