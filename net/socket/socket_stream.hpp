// socket_stream.hpp — one connected socket on a reactor: receive, send, optional TLS, close.
//
// The one socket driver under every connection we run: the inbound SMTP connection
// (net/inbound/), the outbound one (net/outbound/), and the load generator and sink of
// ringmail-bench (bench/). Each owner keeps its protocol; the stream owns what they all did
// alike:
//   - reading: a multishot recv from the core's provided buffers; received buffers stay in a
//     bounded backlog, in place, until the owner consumed them (no copy); past
//     backlog_pause_buffers the recv is cancelled until the backlog drains, and a peer that
//     keeps sending regardless ends the stream (StreamEnd::overrun);
//   - sending: one send in flight at a time, of the bytes the owner's output() shows (they
//     must stay put until output_sent() says they left); under TLS they are encrypted into the
//     TLS session's buffer first and output_sent() is called at once;
//   - TLS (tls::TlsSession, allocated only when TLS starts): the handshake runs on every
//     receive and send completion, input() yields plaintext, finish() queues close_notify after
//     the last output. wolfSSL is never called while a send from its output buffer is in flight
//     (it may compact that buffer);
//   - closing: close() cancels what is in flight on the socket and closes it once nothing is
//     (its own operations, and those the owner hold()s: a connect, a timer, a commit), so a
//     peer that vanishes while work is in flight never finds a reused owner; released() says
//     the owner may be reused.
//
// The owner is told what happened through a table of plain function pointers (StreamHandler,
// made by stream_handler<Owner>()), one indirect call per completion as the reactor's IoOp
// already does: no virtual call, no allocation per operation. Every call happens on the
// reactor's thread. Handlers may call back into the stream; released() is never called from
// within another call of the owner's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "core/runtime/reactor.hpp"
#include "tls/tls_session.hpp"

namespace ringmail {

// Why a stream cannot go on. The owner decides what follows: close() at once, or finish()
// to send what is queued first (the alert of a failed TLS session).
enum class StreamEnd : uint8_t {
    eof,         // the peer closed its side (recv returned 0)
    error,       // recv or send failed: reset, broken pipe
    overrun,     // the peer kept sending past the backlog bound while we did not read
    tls_closed,  // the peer's close_notify
    tls_failed,  // a handshake or record failure (TlsSession::error() says which)
};

struct StreamHandler {
    // The owner's bytes to send next; they stay where they are until output_sent() covers them.
    std::string_view (*output)(void* owner);
    // n bytes of output() left: sent in clear, or encrypted into the TLS session.
    void (*output_sent)(void* owner, size_t n);
    // Input arrived, a send completed or the handshake moved on: the owner runs a round
    // (consumes input(), writes output) and ends it with flush().
    void (*ready)(void* owner);
    void (*ended)(void* owner, StreamEnd why);
    // Closed, nothing in flight: the owner may be reused (and reopen the stream from here).
    void (*released)(void* owner);
    // The recv stopped because every provided buffer of the reactor is in use: call
    // resume_recv() once some came back (the owner's loop keeps a list of them).
    void (*starved)(void* owner);
    // The TLS handshake is complete.
    void (*tls_established)(void* owner);
};

// The handler table of an Owner with these members (private ones need
// `friend struct StreamEvents<Owner>;`):
//   std::string_view stream_output();  void stream_output_sent(size_t n);
//   void stream_ready();  void stream_ended(StreamEnd why);  void stream_released();
//   void stream_starved();  void stream_tls_established();
template <typename Owner>
struct StreamEvents {
    static Owner& of(void* o) { return *static_cast<Owner*>(o); }
    static std::string_view output(void* o) { return of(o).stream_output(); }
    static void output_sent(void* o, size_t n) { of(o).stream_output_sent(n); }
    static void ready(void* o) { of(o).stream_ready(); }
    static void ended(void* o, StreamEnd why) { of(o).stream_ended(why); }
    static void released(void* o) { of(o).stream_released(); }
    static void starved(void* o) { of(o).stream_starved(); }
    static void tls_established(void* o) { of(o).stream_tls_established(); }
    static constexpr StreamHandler table{&output,   &output_sent, &ready,          &ended,
                                         &released, &starved,     &tls_established};
};

class SocketStream {
  public:
    // Received buffers held for the owner at most, and the count at which reading pauses.
    static constexpr uint32_t backlog_max_buffers = 32;
    static constexpr uint32_t backlog_pause_buffers = 4;
    static_assert(backlog_pause_buffers < backlog_max_buffers);
    // Plaintext decrypted and not yet consumed by the owner.
    static constexpr uint32_t tls_plain_bytes = 4096;

    enum class State : uint8_t { idle, open, closing };

    SocketStream(const StreamHandler& handler, void* owner) : handler_(handler), owner_(owner) {}
    SocketStream(const SocketStream&) = delete;
    SocketStream& operator=(const SocketStream&) = delete;

    // Takes a socket (connected, or with a connect the owner hold()s). Nothing is read yet.
    void open(Reactor& reactor, int fd);
    // Arms the recv (again after stop_reading()).
    void start_reading();
    // Drops what was received and not consumed; what arrives later is dropped too.
    void stop_reading();
    // After starved(): arms the recv again if reading is still wanted.
    void resume_recv();
    // In starved(): whether the owner was starved before and not resumed since (its list
    // holds it already). Kept across open(): a reused owner may still be in its loop's list.
    [[nodiscard]] bool starved_listed() const { return was_listed_; }

    // The next received bytes (plaintext under TLS), empty when none is ready. May report
    // ended(tls_closed / tls_failed) before it returns empty.
    [[nodiscard]] std::string_view input();
    // The first n bytes of input() were used.
    void consume(size_t n);
    // Drops what was received so far and not consumed; reading goes on.
    void discard_input() { drop_backlog(); }
    [[nodiscard]] uint32_t backlog() const { return npending_; }

    // Sends what the owner has to send (when no send is in flight), and arms or pauses the
    // recv by the backlog. Ends every round of the owner's work.
    void flush();
    // Sends what is left (the owner's output, then close_notify under TLS, or a failed TLS
    // session's alert), then closes.
    void finish();
    // Cancels what is in flight on the socket and closes it once nothing is; then released().
    void close();
    // Operations of the owner that must end before the socket is closed and the owner reused
    // (a connect on this socket, a timer, a commit that refers to the owner).
    void hold() {
        RM_ASSERT(state_ != State::idle);
        inflight_++;
    }
    void unhold();

    // TLS from now on. Whatever was received in clear and not consumed is dropped (RFC 3207
    // §4.2: bytes sent before the handshake are never run inside TLS; CVE-2011-0411), so no view
    // from input() may be in use. clear_first: bytes of output() that still go in clear first
    // (the server's 220 to STARTTLS). False when the session cannot be created (no memory).
    [[nodiscard]] bool start_tls(const tls::TlsContext& ctx, std::string_view server_name = {},
                                 const tls::TlsResumption* resume = nullptr,
                                 size_t clear_first = 0);
    [[nodiscard]] tls::TlsSession* tls() const { return tls_ ? &tls_->session : nullptr; }
    [[nodiscard]] bool tls_handshaking() const {
        return tls_ != nullptr && !tls_->session.handshake_done();
    }

    [[nodiscard]] State state() const { return state_; }
    [[nodiscard]] bool is_open() const { return state_ == State::open; }
    [[nodiscard]] bool sending() const { return send_inflight_; }
    [[nodiscard]] bool reading() const { return reading_; }
    [[nodiscard]] int fd() const { return fd_; }

  private:
    struct Pending {
        uint16_t bid;
        uint32_t off, len;
    };
    struct TlsLink {
        TlsLink(const tls::TlsContext& ctx, std::string_view name, const tls::TlsResumption* r)
            : session(ctx, name, r) {}
        tls::TlsSession session;
        uint32_t plain_off = 0;
        uint32_t plain_len = 0;
        bool close_notify_queued = false;
        bool broken = false;  // failed or closed by the peer: only a queued alert may still go
        char plain[tls_plain_bytes];
    };

    void arm_recv();
    void update_recv();
    void send_next();
    void send_tls();
    void submit_send(std::string_view bytes, bool ciphertext);
    void tls_advance();
    [[nodiscard]] bool feed_ciphertext();
    void tls_end(tls::TlsStatus status);
    void pop_backlog();
    void drop_backlog();
    void maybe_release();

    static void on_recv(void* self, int res, uint32_t flags);
    static void on_send(void* self, int res, uint32_t flags);
    static void on_close(void* self, int res, uint32_t flags);

    const StreamHandler& handler_;
    void* owner_;
    Reactor* reactor_ = nullptr;
    int fd_ = -1;
    State state_ = State::idle;
    bool reading_ = false;         // the owner wants input
    bool recv_armed_ = false;      // a multishot recv is in the ring
    bool recv_cancelled_ = false;  // ... and its cancel too (a paused backlog)
    bool starved_ = false;         // the recv ended with ENOBUFS: the owner resumes it
    bool listed_ = false;          // starved() since the last resume_recv() (not reset by open)
    bool was_listed_ = false;      // listed_ as it was at the last starved()
    bool send_inflight_ = false;
    bool send_ciphertext_ = false;  // the send in flight is from the TLS session's buffer
    bool finishing_ = false;
    bool close_submitted_ = false;
    uint32_t inflight_ = 0;     // our operations in the ring, and the owner's holds
    uint32_t clear_first_ = 0;  // output still to go in clear before TLS (STARTTLS's 220)
    uint32_t npending_ = 0;
    Pending pending_[backlog_max_buffers];
    std::unique_ptr<TlsLink> tls_;  // from start_tls until the stream is released

    IoOp recv_op_{&SocketStream::on_recv, this};
    IoOp send_op_{&SocketStream::on_send, this};
    IoOp close_op_{&SocketStream::on_close, this};
};

}  // namespace ringmail
