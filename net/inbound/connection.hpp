// connection.hpp — the driver of one inbound SMTP connection on a reactor.
//
// Its socket is a SocketStream (net/socket/): multishot recv from the core's provided buffers,
// one send at a time from the session's output, TLS, close. This driver feeds received bytes
// to the sans-I/O smtp::ServerSession in place, and is the session's MessageSink: message
// text is appended to a spool::MessageBuilder (the one copy) and handed to the core's
// Committer at its end. Connections live in a per-core pool sized from --max-connections and
// are reused; a connection is never freed while the ring or the committer still refers to it
// (a commit in flight is held on the stream).
//
// TLS (STARTTLS, or implicit on an smtps listener): the stream allocates the TlsSession only
// when TLS starts and frees it at close, so an idle clear-text connection costs none of it.
// Bytes received in clear after STARTTLS are dropped; the 220 goes out in clear first.
// AUTH: the core that owns the client address admits each attempt first (at once, or over
// the channels: Engine::auth_admit) and tells the penalty a failure will get; then the
// credentials go to this core's AuthWorker, the outcome settles the attempt with the owner,
// and a failure's 535 is held back for the delay it was given.
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/config.hpp"
#include "core/runtime/reactor.hpp"
#include "net/smtp/smtp_server.hpp"
#include "net/socket/socket_stream.hpp"
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
    void pump();
    void feed_session();
    void feed_plain();
    void feed_tls();
    void begin_starttls();
    void start_auth_check();
    void check_credentials(const tls::AuthAdmission& a);
    void auth_settle(tls::AuthEnd end);
    void flush_output();
    void begin_close();
    void set_deadline();

    // The stream's events (SocketStream).
    friend struct StreamEvents<Connection>;
    std::string_view stream_output() { return session_.output(); }
    void stream_output_sent(size_t n) { session_.output_sent(n); }
    void stream_ready();
    void stream_ended(StreamEnd why);
    void stream_released();
    void stream_starved();
    void stream_tls_established();

    Engine& engine_;
    smtp::ServerSession session_;
    smtp::ClientInfo client_;
    smtp::IpAddress ip_;
    char addr_text_[48] = {};
    uint32_t slot_;
    uint32_t generation_ = 0;
    State state_ = State::free;
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
    std::vector<spool::RcptField> rcpt_fields_;  // keeps its capacity across messages
    uint64_t deadline_ms_ = 0;

    ListenerKind kind_ = ListenerKind::plain;
    bool auth_admitting_ = false;      // waiting for the owner core's Engine::auth_admit answer
    bool auth_reserved_ = false;       // an admitted attempt the owner has not seen settled
    bool auth_in_flight_ = false;      // credentials are with the AuthWorker
    tls::AuthPenalty auth_penalty_;    // what a failure of the admitted attempt gets
    uint64_t auth_hold_until_ms_ = 0;  // a failed AUTH's 535 waits until then (0: none)

    SocketStream stream_{StreamEvents<Connection>::table, this};
};

}  // namespace ringmail
