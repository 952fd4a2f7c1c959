// connection.hpp — the driver of one inbound SMTP connection on a reactor.
//
// It owns the socket and the ring operations (multishot recv from the core's provided
// buffers, one send at a time from the session's output buffer, close), feeds received bytes
// to the sans-I/O smtp::ServerSession in place, and is the session's MessageSink: message
// text is appended to a spool::MessageBuilder (the one copy) and handed to the core's
// Committer at its end. Connections live in a per-core pool sized from --max-connections and
// are reused; a connection is never freed while the ring or the committer still refers to it.
//
// TLS (STARTTLS, or implicit on an smtps listener): the TlsSession and its buffers are
// allocated only when TLS starts and freed at close, so an idle clear-text connection costs
// none of them. Received ciphertext goes from the provided buffers into the TlsSession, the
// plaintext it yields to the session; replies are encrypted into the TlsSession's output and
// sent from there. wolfSSL is never called while a send from its output buffer is in flight
// (it may compact that buffer). Bytes received in clear after STARTTLS are dropped.
// AUTH: the core that owns the client address admits each attempt first (at once, or over
// the channels: Engine::auth_admit) and tells the penalty a failure will get; then the
// credentials go to this core's AuthWorker, the outcome settles the attempt with the owner,
// and a failure's 535 is held back for the delay it was given.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/base/config.hpp"
#include "core/runtime/reactor.hpp"
#include "net/smtp/smtp_server.hpp"
#include "spool/io/commit.hpp"
#include "tls/auth_throttle.hpp"
#include "tls/tls_session.hpp"

namespace ringmail {

class Engine;

class Connection final : public smtp::MessageSink, public CommitWaiter {
  public:
    enum class State : uint8_t { free, awaiting_permit, greeting_delay, active, closing };

    Connection(Engine& engine, uint32_t slot);

    // A new socket: from here the connection waits for its per-address permit.
    void open(int fd, const smtp::IpAddress& ip, uint32_t generation, ListenerKind kind);
    // The owner core of the client address answered.
    void permit(bool granted);
    // Timers, from the engine's tick: greeting delay, command/data timeouts.
    void tick(uint64_t now_ms);
    // Graceful stop: 421 and close (after a pending commit resolves).
    void shutdown();
    // Re-arm a recv that stopped for lack of buffers.
    void resume_recv();
    // The owner core of the client address answered Engine::auth_admit.
    void auth_admitted(const tls::AuthAdmission& a);
    // The AUTH check submitted for this connection (Engine::auth_submit) is done.
    void auth_checked(bool ok);

    [[nodiscard]] State state() const { return state_; }
    [[nodiscard]] uint32_t slot() const { return slot_; }
    [[nodiscard]] uint32_t generation() const { return generation_; }
    [[nodiscard]] const smtp::IpAddress& ip() const { return ip_; }
    [[nodiscard]] bool holds_permit() const { return holds_permit_; }
    [[nodiscard]] bool awaiting_auth_admission() const { return auth_admitting_; }
    uint32_t list_index = 0;  // position in the engine's list of open connections

  private:
    void log_accepted();
    // smtp::MessageSink
    Start message_begin(const smtp::Envelope& env) override;
    bool message_body(std::string_view chunk) override;
    void message_end() override;
    void message_abort() override;
    // CommitWaiter
    void commit_finished(smtp::CommitResult r) override;

    void start_session();
    void arm_recv();
    void pump();
    void feed_session();
    void feed_plain();
    void feed_tls();
    [[nodiscard]] bool feed_ciphertext();
    void pop_pending();
    [[nodiscard]] bool start_tls();
    void begin_starttls();
    void tls_established();
    void tls_ended(tls::TlsStatus status);
    [[nodiscard]] bool tls_handshaking() const {
        return tls_ != nullptr && !tls_->session.handshake_done();
    }
    void start_auth_check();
    void check_credentials(const tls::AuthAdmission& a);
    void auth_settle(tls::AuthEnd end);
    void flush_output();
    void flush_tls();
    void submit_send(std::string_view bytes);
    void begin_close();
    void maybe_release();
    void drop_pending();
    void set_deadline();

    static void on_recv(void* self, int res, uint32_t flags);
    static void on_send(void* self, int res, uint32_t flags);
    static void on_close(void* self, int res, uint32_t flags);

    struct Pending {
        uint16_t bid;
        uint32_t off, len;
    };
    // Received buffers not yet consumed (the session waits for a commit or for output room).
    // Past kPendingStop the recv is cancelled until the backlog drains.
    static constexpr uint32_t kPendingMax = 32;
    static constexpr uint32_t kPendingStop = 4;
    // Plaintext taken from the TlsSession and not yet consumed by the session.
    static constexpr uint32_t kTlsPlainBytes = 4096;

    struct TlsLink {
        explicit TlsLink(const tls::TlsContext& ctx) : session(ctx) {}
        tls::TlsSession session;
        uint32_t plain_off = 0;
        uint32_t plain_len = 0;
        bool close_notify_queued = false;
        bool broken = false;  // failed or closed by the peer: nothing more is read or written
        char plain[kTlsPlainBytes];
    };

    Engine& engine_;
    smtp::ServerSession session_;
    smtp::ClientInfo client_;
    smtp::IpAddress ip_;
    char addr_text_[48] = {};
    int fd_ = -1;
    uint32_t slot_;
    uint32_t generation_ = 0;
    State state_ = State::free;
    bool recv_armed_ = false;
    bool send_inflight_ = false;
    bool close_submitted_ = false;
    bool holds_permit_ = false;
    bool in_message_ = false;
    bool committing_ = false;
    uint64_t eod_us_ = 0;
    // For the JSON `accepted` event: the message's id, text bytes and sender (kept only in JSON
    // mode; the string keeps its capacity across messages).
    uint64_t accepted_id_ = 0;
    uint64_t body_bytes_ = 0;
    std::string sender_;  // sys::precise_us() when the message was handed to the committer
    bool shutdown_requested_ = false;
    bool starved_ = false;  // recv ended with ENOBUFS: in the engine's list until resume_recv
    uint32_t inflight_ = 0;
    uint32_t npending_ = 0;
    Pending pending_[kPendingMax];
    std::vector<spool::RcptField> rcpt_fields_;  // keeps its capacity across messages
    uint64_t deadline_ms_ = 0;

    ListenerKind kind_ = ListenerKind::plain;
    std::unique_ptr<TlsLink> tls_;     // from STARTTLS / accept on smtps until close
    uint32_t clear_out_ = 0;           // session output to send in clear first (STARTTLS's 220)
    bool auth_admitting_ = false;      // waiting for the owner core's Engine::auth_admit answer
    bool auth_reserved_ = false;       // an admitted attempt the owner has not seen settled
    bool auth_in_flight_ = false;      // credentials are with the AuthWorker
    tls::AuthPenalty auth_penalty_;    // what a failure of the admitted attempt gets
    uint64_t auth_hold_until_ms_ = 0;  // a failed AUTH's 535 waits until then (0: none)

    IoOp recv_op_{&Connection::on_recv, this};
    IoOp send_op_{&Connection::on_send, this};
    IoOp close_op_{&Connection::on_close, this};
};

}  // namespace ringmail
