// socket_stream.cpp — see socket_stream.hpp.
#include "net/socket/socket_stream.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace ringmail {

void SocketStream::open(Reactor& reactor, int fd) {
    RM_ASSERT(state_ == State::idle && inflight_ == 0 && npending_ == 0 && fd >= 0);
    reactor_ = &reactor;
    fd_ = fd;
    state_ = State::open;
    reading_ = recv_armed_ = recv_cancelled_ = starved_ = false;
    send_inflight_ = send_ciphertext_ = finishing_ = close_submitted_ = false;
    clear_first_ = 0;
    tls_.reset();  // kept past the last release for its owner's look at it (resumption)
}

// --- reading -----------------------------------------------------------------------------

void SocketStream::start_reading() {
    RM_ASSERT(state_ == State::open);
    reading_ = true;
    update_recv();
}

void SocketStream::stop_reading() {
    reading_ = false;
    drop_backlog();
}

void SocketStream::resume_recv() {
    starved_ = listed_ = false;
    if (state_ == State::open) update_recv();
}

void SocketStream::arm_recv() {
    RM_ASSERT(!recv_armed_ && fd_ >= 0);
    io_uring_sqe* s = reactor_->sqe(recv_op_);
    io_uring_prep_recv_multishot(s, fd_, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = reactor_->buffer_group();
    recv_armed_ = true;
    inflight_++;
}

// A backlog past the pause mark stops the recv until it drains, so one peer whose owner is
// not keeping up (a commit, a full output) cannot hold many of the core's receive buffers.
void SocketStream::update_recv() {
    if (state_ != State::open || !reading_) return;
    if (npending_ >= backlog_pause_buffers && recv_armed_ && !recv_cancelled_) {
        io_uring_sqe* s = reactor_->sqe();
        io_uring_prep_cancel64(s, recv_op_.user_data(), 0);
        io_uring_sqe_set_data64(s, kTagIgnore);
        recv_cancelled_ = true;
    } else if (npending_ == 0 && !recv_armed_ && !starved_) {
        arm_recv();
    }
}

void SocketStream::on_recv(void* self, int res, uint32_t flags) {
    auto* s = static_cast<SocketStream*>(self);
    const bool more = flags & IORING_CQE_F_MORE;
    if (!more) {
        s->recv_armed_ = s->recv_cancelled_ = false;
        s->inflight_--;
    }
    if (res > 0) {
        RM_ASSERT(flags & IORING_CQE_F_BUFFER);
        const auto bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
        if (s->state_ != State::open || !s->reading_) {
            s->reactor_->recycle(bid);
            s->maybe_release();
            return;
        }
        if (s->npending_ == backlog_max_buffers) {  // a peer that never waits for our replies
            s->reactor_->recycle(bid);
            s->handler_.ended(s->owner_, StreamEnd::overrun);
            return;
        }
        s->pending_[s->npending_++] = Pending{bid, 0, static_cast<uint32_t>(res)};
        s->tls_advance();
        if (s->state_ != State::open) return;
        s->handler_.ready(s->owner_);
        s->flush();
        return;
    }
    if (s->state_ != State::open) {
        s->maybe_release();
        return;
    }
    if (res == -ENOBUFS) {  // every receive buffer of this core is in use: retry soon
        if (!more && !s->starved_) {
            s->starved_ = true;
            s->was_listed_ = s->listed_;
            s->listed_ = true;
            s->handler_.starved(s->owner_);
        }
        return;
    }
    if (res == -ECANCELED) {  // paused while the backlog drains: flush() re-arms
        s->handler_.ready(s->owner_);
        s->flush();
        return;
    }
    s->handler_.ended(s->owner_, res == 0 ? StreamEnd::eof : StreamEnd::error);
}

std::string_view SocketStream::input() {
    if (state_ != State::open) return {};
    if (!tls_) {
        if (npending_ == 0) return {};
        const Pending& p = pending_[0];
        return {reactor_->buffer(p.bid) + p.off, p.len - p.off};
    }
    TlsLink& t = *tls_;
    if (t.plain_off < t.plain_len) return {t.plain + t.plain_off, t.plain_len - t.plain_off};
    // wolfSSL may compact its output buffer: never while a send from it is in flight.
    if (t.broken || !t.session.handshake_done() || send_inflight_) return {};
    for (;;) {
        const tls::TlsIo io = t.session.read_plaintext(t.plain, sizeof t.plain);
        if (io.status == tls::TlsStatus::done) {
            t.plain_off = 0;
            t.plain_len = static_cast<uint32_t>(io.bytes);
            return {t.plain, io.bytes};
        }
        if (io.status != tls::TlsStatus::want_more) {
            tls_end(io.status);
            return {};
        }
        if (!feed_ciphertext()) return {};
    }
}

void SocketStream::consume(size_t n) {
    if (state_ != State::open || n == 0) return;
    if (tls_) {
        TlsLink& t = *tls_;
        RM_ASSERT(n <= t.plain_len - t.plain_off);
        t.plain_off += static_cast<uint32_t>(n);
        if (t.plain_off == t.plain_len) t.plain_off = t.plain_len = 0;
        return;
    }
    RM_ASSERT(npending_ > 0);
    Pending& p = pending_[0];
    RM_ASSERT(n <= p.len - p.off);
    p.off += static_cast<uint32_t>(n);
    if (p.off == p.len) pop_backlog();
}

void SocketStream::pop_backlog() {
    RM_ASSERT(npending_ > 0);
    reactor_->recycle(pending_[0].bid);
    memmove(&pending_[0], &pending_[1], (npending_ - 1) * sizeof(Pending));
    npending_--;
}

void SocketStream::drop_backlog() {
    for (uint32_t i = 0; i < npending_; i++)
        reactor_->recycle(pending_[i].bid);
    npending_ = 0;
}

// --- TLS ---------------------------------------------------------------------------------

bool SocketStream::start_tls(const tls::TlsContext& ctx, std::string_view server_name,
                             const tls::TlsResumption* resume, size_t clear_first) {
    RM_ASSERT(state_ == State::open && tls_ == nullptr);
    drop_backlog();
    tls_.reset(new (std::nothrow) TlsLink(ctx, server_name, resume));
    if (tls_ == nullptr || !tls_->session.ok()) {
        tls_.reset();
        return false;
    }
    clear_first_ = static_cast<uint32_t>(clear_first);
    tls_advance();  // a client's first flight
    return true;
}

// Runs the handshake as far as the ciphertext received allows.
void SocketStream::tls_advance() {
    if (!tls_ || tls_->broken || send_inflight_ || state_ != State::open) return;
    tls::TlsSession& s = tls_->session;
    while (!s.handshake_done()) {
        const tls::TlsStatus st = s.handshake();
        if (st == tls::TlsStatus::done) {
            handler_.tls_established(owner_);
            return;
        }
        if (st != tls::TlsStatus::want_more) return tls_end(st);
        if (!feed_ciphertext()) return;
    }
}

// Moves received ciphertext into the TlsSession; false when there was none to move (or no
// room for it).
bool SocketStream::feed_ciphertext() {
    bool moved = false;
    while (npending_ > 0 && tls_->session.input_room() > 0) {
        Pending& p = pending_[0];
        const size_t n =
            tls_->session.feed_ciphertext({reactor_->buffer(p.bid) + p.off, p.len - p.off});
        p.off += static_cast<uint32_t>(n);
        moved = moved || n > 0;
        if (p.off < p.len) break;
        pop_backlog();
    }
    return moved;
}

// The peer closed the TLS session (close_notify) or broke it: nothing more is read or
// written in it, but the alert wolfSSL may have queued can still go (finish()).
void SocketStream::tls_end(tls::TlsStatus status) {
    tls_->broken = true;
    drop_backlog();
    handler_.ended(
        owner_, status == tls::TlsStatus::closed ? StreamEnd::tls_closed : StreamEnd::tls_failed);
}

// --- sending -----------------------------------------------------------------------------

void SocketStream::flush() {
    if (state_ != State::open) return;
    if (!send_inflight_) send_next();
    update_recv();
}

void SocketStream::finish() {
    if (state_ != State::open) return;
    finishing_ = true;
    flush();
}

void SocketStream::send_next() {
    if (tls_ && clear_first_ == 0) return send_tls();
    std::string_view out = handler_.output(owner_);
    if (clear_first_ > 0) out = out.substr(0, clear_first_);
    if (!out.empty()) return submit_send(out, false);
    if (finishing_) close();
}

// Encrypts the owner's output (after the handshake), then sends what the TLS session holds.
void SocketStream::send_tls() {
    TlsLink& t = *tls_;
    const bool up = !t.broken && t.session.handshake_done();
    bool all_out = true;
    if (up) {
        for (std::string_view out = handler_.output(owner_); !out.empty();
             out = handler_.output(owner_)) {
            const tls::TlsIo w = t.session.write_plaintext(out);
            if (w.status == tls::TlsStatus::want_more) {  // full: after this send
                all_out = false;
                break;
            }
            if (w.status != tls::TlsStatus::done) return tls_end(w.status);
            handler_.output_sent(owner_, w.bytes);
            if (state_ != State::open) return;
        }
        // RFC 8446 §6.1: the last data, then close_notify (best effort: the close follows).
        if (finishing_ && all_out && !t.close_notify_queued) {
            t.close_notify_queued = true;
            (void)t.session.close_notify();
        }
    }
    const std::string_view c = t.session.ciphertext_output();
    if (!c.empty()) return submit_send(c, true);
    // A stream that cannot encrypt (mid-handshake, broken) ends without its last output.
    if (finishing_ && (all_out || !up)) close();
}

void SocketStream::submit_send(std::string_view bytes, bool ciphertext) {
    RM_ASSERT(!send_inflight_ && !bytes.empty());
    io_uring_sqe* s = reactor_->sqe(send_op_);
    io_uring_prep_send(s, fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    send_inflight_ = true;
    send_ciphertext_ = ciphertext;
    inflight_++;
}

void SocketStream::on_send(void* self, int res, uint32_t) {
    auto* s = static_cast<SocketStream*>(self);
    s->inflight_--;
    s->send_inflight_ = false;
    if (s->state_ != State::open) {
        s->maybe_release();
        return;
    }
    if (res <= 0) {
        s->handler_.ended(s->owner_, StreamEnd::error);
        return;
    }
    const auto n = static_cast<size_t>(res);
    if (s->send_ciphertext_) {
        s->tls_->session.ciphertext_sent(n);
    } else {
        if (s->clear_first_ > 0) {
            RM_ASSERT(n <= s->clear_first_);
            s->clear_first_ -= static_cast<uint32_t>(n);
        }
        s->handler_.output_sent(s->owner_, n);
    }
    s->tls_advance();
    if (s->state_ != State::open) return;
    s->handler_.ready(s->owner_);
    s->flush();
}

// --- closing -----------------------------------------------------------------------------

void SocketStream::close() {
    if (state_ != State::open) return;
    state_ = State::closing;
    reading_ = false;
    drop_backlog();
    // Everything on the socket (a recv, a send, an owner's connect) ends with -ECANCELED.
    if (inflight_ > 0) {
        io_uring_sqe* s = reactor_->sqe();
        io_uring_prep_cancel_fd(s, fd_, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(s, kTagIgnore);
    }
    maybe_release();
}

void SocketStream::unhold() {
    RM_ASSERT(inflight_ > 0);
    inflight_--;
    maybe_release();
}

void SocketStream::maybe_release() {
    if (state_ != State::closing || inflight_ > 0 || close_submitted_) return;
    close_submitted_ = true;
    inflight_++;
    io_uring_prep_close(reactor_->sqe(close_op_), fd_);
}

void SocketStream::on_close(void* self, int, uint32_t) {
    auto* s = static_cast<SocketStream*>(self);
    s->inflight_--;
    RM_ASSERT(s->inflight_ == 0 && s->npending_ == 0);
    s->fd_ = -1;
    s->state_ = State::idle;
    s->close_submitted_ = false;
    s->handler_.released(s->owner_);
    // The owner may have opened the stream again from released(); if not, the TLS session's
    // ~35 KiB go back now rather than with the next connection.
    if (s->state_ == State::idle) s->tls_.reset();
}

}  // namespace ringmail
