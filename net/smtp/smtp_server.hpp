// smtp_server.hpp — the SMTP server session: a sans-I/O state machine.
//
// Bytes in (feed), bytes out (output), and calls on a MessageSink for the message it receives.
// It never touches a socket, a ring, a clock or a file; the driver (net/inbound/connection.cpp)
// owns those. Commands are parsed in place in the bytes handed to feed(); only a command line split
// across two feeds is copied (into a 512-byte line buffer). Message text goes to the sink as
// spans of the fed bytes (dot-unstuffed by skipping bytes, never copied here).
//
// Guarantees (RFC 5321, 1870, 2920, 3030, 6152, 6531, 2034/3463, and smtp.md):
//  - replies come out in command order; every reply carries an enhanced status code;
//  - only CRLF.CRLF ends DATA; a message with a bare CR or LF is refused and aborted;
//  - a message is reported to the sink with message_end() only when it is complete and valid;
//    the session then waits (consuming no more input) until commit_done();
//  - a command line longer than 512 octets is refused whole, never split into two commands;
//  - STARTTLS (RFC 3207): bytes that follow it in the same feed are discarded, the session then
//    waits for tls_started() and forgets everything the client said before (EHLO included);
//  - AUTH (RFC 4954) only over TLS (538 5.7.11 before, and not advertised); the credentials are
//    handed to the driver (wants_auth_check) and wiped once it took them; a failed or cancelled
//    exchange leaves nothing behind; on a submission listener MAIL needs TLS and AUTH first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/commit_result.hpp"
#include "core/base/limits.hpp"
#include "net/smtp/relay_policy.hpp"
#include "tls/auth.hpp"

namespace ringmail::smtp {

// The session's knowledge of its peer, set by the driver at accept time.
struct ClientInfo {
    std::string_view addr_text;  // "192.0.2.1" or "2001:db8::1" (no brackets)
    IpAddress addr;              // for the relay policy
    bool relay_allowed = false;  // in --relay-networks
    // A submission listener (587 with STARTTLS, 465 implicit TLS, RFC 6409 / RFC 8314): MAIL
    // needs TLS and AUTH first.
    bool submission = false;
};

// Settings shared by every session of a process (read-only after start).
struct ServerSettings {
    std::string hostname = "localhost";  // greeting, EHLO reply, Received "by"
    uint64_t message_size_max_bytes = limits::message_size_max_bytes_default;
    uint32_t recipients_max = limits::recipients_max_default;
    uint32_t junk_commands_max = limits::junk_commands_max_default;
    const RelayPolicy* relay = nullptr;  // must be set
    bool starttls_available = false;     // a certificate is loaded: STARTTLS is offered
    bool auth_available = false;         // --auth-users is loaded: AUTH is offered over TLS
};

// One recipient as received: the path without brackets (source route removed) and its
// ESMTP parameters as one string ("NOTIFY=FAILURE ORCPT=rfc822;a@b" or "").
struct Recipient {
    std::string_view address;
    std::string_view params;
};

// The envelope of the message being received; views stay valid until message_end() or
// message_abort() returns... and, for message_end, until commit_done() is called.
struct Envelope {
    std::string_view helo;       // the EHLO/HELO argument
    std::string_view protocol;   // RFC 3848: "SMTP", "ESMTP", "ESMTPS", "ESMTPSA"
    std::string_view mail_from;  // reverse-path without brackets; "" is the null sender
    std::string_view mail_params;
    std::span<const Recipient> rcpts;
};

// Where a received message goes: the driver's spool batch.
class MessageSink {
  public:
    // A message begins (DATA accepted / first BDAT). The driver gives it its queue id and the
    // arrival time (the session has no clock). id 0: no storage available now; the session
    // answers 452 4.3.1 (to DATA, or to that first BDAT chunk, whose octets it discards, and
    // to the later BDATs of that transaction) and drops the transaction's message.
    struct Start {
        uint64_t id = 0;          // shown as 16 lowercase hex digits (format_queue_id)
        int64_t unix_time_s = 0;  // for the Received header's date
    };
    virtual Start message_begin(const Envelope& env) = 0;
    // Next piece of message text in order: the Received header first, then the content with
    // CRLF line endings, dot-unstuffed, without the terminating ".CRLF" (the CRLF before the
    // dot ends the last line and is part of the text, RFC 5321 §4.1.1.4; "DATA" then ".CRLF"
    // gives no content). BDAT text is passed as sent (it may not end in CRLF). The span points
    // into the bytes given to feed() (or into the session for the Received header) and is
    // valid only during the call. False: storage ran out; the session aborts the message
    // (message_abort) and answers 452 4.3.1 at its end.
    virtual bool message_body(std::string_view chunk) = 0;
    // The message is complete and valid; commit it. The session waits for commit_done().
    virtual void message_end() = 0;
    // The message begun is dropped (size limit, bare CR/LF, RSET during BDAT, disconnect).
    virtual void message_abort() = 0;

  protected:
    ~MessageSink() = default;
};

// Queue ids are 64-bit numbers written as 16 lowercase hex digits (no allocation).
void format_queue_id(uint64_t id, char (&out)[16]);

// What the driver learned of an AUTH check it was asked for (wants_auth_check).
enum class AuthOutcome : uint8_t {
    ok,         // 235 2.7.0
    failed,     // 535 5.7.8 (the driver has already applied its delay)
    temporary,  // 454 4.7.0: the checker is overloaded
    too_many,   // 421 4.7.0 and close: too many failures from this client address
};

class ServerSession {
  public:
    ServerSession(const ServerSettings& settings, MessageSink& sink);
    ServerSession(const ServerSession&) = delete;
    ServerSession& operator=(const ServerSession&) = delete;

    // A new connection: forget everything about the previous one, write nothing (the driver
    // may hold the greeting back, or refuse the client).
    void reset(const ClientInfo& client);
    // Start a connection: reset() and write the 220 greeting to the output.
    void start(const ClientInfo& client);
    // The connection is refused at the greeting: writes "421 4.7.0 <text>" (too many
    // connections) and asks to close.
    void refuse(std::string_view reply_line);
    // The client sent bytes before the greeting (the driver delays the greeting for untrusted
    // clients): writes a 554 5.5.1 and asks to close.
    void pregreet_violation();

    // Consume received bytes. Returns how many were consumed: less than in.size() when the
    // session must wait (a commit is pending, the output is nearly full, or it will close);
    // the driver feeds the rest again after commit_done() / output drain.
    [[nodiscard]] size_t feed(std::string_view in);

    // The spool resolved the message reported by message_end().
    void commit_done(CommitResult r);

    // Timers and the end of the connection, decided by the driver.
    void timeout();      // 421 4.4.2 and close
    void shutdown();     // 421 4.3.2 service shutting down, and close
    void peer_closed();  // aborts a message in progress (no reply)

    // Reply bytes to send; the driver sends them and then calls output_sent(n).
    [[nodiscard]] std::string_view output() const { return {out_, out_len_}; }
    void output_sent(size_t n);

    // STARTTLS was accepted: send output() in clear, then run the TLS handshake; everything
    // received before it completes is discarded (RFC 3207 §4.2, CVE-2011-0411).
    [[nodiscard]] bool wants_starttls() const { return phase_ == Phase::tls_wait; }
    // The handshake is done (after STARTTLS, or right after start() on an implicit-TLS
    // listener). version/cipher go into the Received header.
    void tls_started(std::string_view version, std::string_view cipher);
    [[nodiscard]] bool tls_active() const { return tls_; }

    // AUTH: the exchange asks for a password check. The driver takes auth_username() and
    // auth_password(), then calls auth_check_started() (which wipes them here) and later
    // auth_result(). Input waits meanwhile.
    [[nodiscard]] bool wants_auth_check() const {
        return phase_ == Phase::auth_wait && !auth_checking_;
    }
    [[nodiscard]] std::string_view auth_username() const { return auth_.username(); }
    [[nodiscard]] std::string_view auth_password() const { return auth_.password(); }
    void auth_check_started();
    void auth_result(AuthOutcome r);  // ignored once the session is closing
    [[nodiscard]] bool authenticated() const { return authenticated_; }

    [[nodiscard]] bool wants_close() const { return close_; }  // after output() is sent
    [[nodiscard]] bool waiting_commit() const;
    [[nodiscard]] bool in_data() const;  // the data timeout applies, not the command one

  private:
    // Implementation state (net/smtp/smtp_server.cpp). Fixed buffers: no allocation per message in
    // the steady state (the envelope arena keeps its capacity across messages).
    enum class Phase : uint8_t {
        idle,
        command,
        data,
        bdat_chunk,
        commit_wait,
        tls_wait,   // STARTTLS answered; input is discarded until tls_started()
        auth_line,  // an AUTH challenge was sent; the next line is the client's answer
        auth_wait,  // credentials complete; the driver checks them
        closed
    };
    // Where the DATA scanner stands relative to the CRLF.CRLF terminator (RFC 5321 §4.1.1.4).
    enum class DataState : uint8_t { line_start, mid_line, cr, dot, dot_cr };
    // Why a message (or a BDAT chunk) is refused; the reply comes at its end.
    enum class Refusal : uint8_t { none, bad_sequence, bare_crlf, too_big, no_storage };
    enum class PendingClose : uint8_t { none, timeout, shutdown };
    struct Slice {  // a field stored in arena_
        uint32_t off = 0;
        uint32_t len = 0;
    };
    struct RcptSlice {
        Slice address;
        Slice params;
    };
    static constexpr size_t kReceivedMaxBytes = 1024;
    // RFC 4954 §4: the 512-octet limit does not hold for AUTH lines. Ours carry at most a
    // PLAIN message of three 255-octet fields in base64, after "AUTH <mechanism> ".
    static constexpr size_t kAuthLineMaxBytes =
        32 + tls::base64_encoded_bytes(tls::auth_plain_max_bytes) + 2;
    static_assert(kAuthLineMaxBytes > limits::command_line_max_bytes);
    static_assert(limits::command_line_abandon_bytes > kAuthLineMaxBytes);

    void enter(Phase next);
    void put(std::initializer_list<std::string_view> parts);
    void reject(std::initializer_list<std::string_view> parts);  // an error that counts as junk
    void put_refusal(Refusal r);
    void close_with(std::initializer_list<std::string_view> parts);
    void close_session();
    [[nodiscard]] size_t output_room() const { return sizeof out_ - out_len_; }

    [[nodiscard]] size_t feed_command(std::string_view in);
    [[nodiscard]] size_t feed_data(std::string_view in);
    [[nodiscard]] size_t discard_data(std::string_view in);
    [[nodiscard]] size_t start_discard(std::string_view in, size_t at);
    [[nodiscard]] size_t feed_chunk(std::string_view in);
    void execute(std::string_view line, bool more_follows);
    void do_hello(std::string_view args, bool esmtp);
    void do_mail(std::string_view args);
    void do_rcpt(std::string_view args);
    void do_data(bool more_follows);
    void do_bdat(std::string_view args);
    void do_rset();
    void do_quit();
    void do_starttls();
    void do_auth(std::string_view args);
    void auth_continue(std::string_view line);
    void on_auth_step(const tls::AuthStep& step);
    void line_too_long();
    void abandon_line();
    [[nodiscard]] size_t line_max(std::string_view in) const;
    [[nodiscard]] std::string_view protocol() const;

    [[nodiscard]] bool begin_message();
    [[nodiscard]] bool emit(const char* p, size_t n);
    void store_chunk(std::string_view part);
    void fail_message(Refusal r);
    void finish_data();
    void finish_chunk();
    void reset_transaction();
    void build_received(int64_t unix_time_s);
    [[nodiscard]] Slice stash(std::string_view s);
    [[nodiscard]] std::string_view view(Slice s) const { return {arena_.data() + s.off, s.len}; }

    const ServerSettings& settings_;
    MessageSink& sink_;
    char out_[limits::session_output_bytes];
    size_t out_len_ = 0;
    bool close_ = false;

    // Connection.
    Phase phase_ = Phase::idle;
    PendingClose pending_close_ = PendingClose::none;
    bool greeting_unsent_ = false;  // pregreet_violation() replaces it
    bool client_trusted_ = false;
    bool greeted_ = false;  // EHLO or HELO seen
    bool esmtp_ = false;
    uint32_t junk_count_ = 0;
    char client_addr_[64];
    size_t client_addr_len_ = 0;
    char helo_[limits::command_line_max_bytes];
    size_t helo_len_ = 0;

    // Command line assembly across feeds; an overlong line is discarded up to its LF.
    char line_[kAuthLineMaxBytes];
    size_t line_len_ = 0;
    bool discarding_line_ = false;
    size_t discarded_bytes_ = 0;  // of the overlong line being discarded

    // Transaction: fields live in arena_ (capacity kept across messages); views into it are
    // built only at message_begin, after which the arena is not touched until the end.
    bool mail_active_ = false;
    bool smtputf8_ = false;
    Slice mail_from_;
    Slice mail_params_;
    std::vector<RcptSlice> rcpts_;
    std::vector<Recipient> rcpt_views_;
    std::string arena_;

    // Message in progress.
    bool message_active_ = false;  // begun with the sink, not yet ended or aborted
    uint64_t queue_id_ = 0;
    uint64_t body_bytes_ = 0;
    Refusal body_error_ = Refusal::none;
    DataState data_state_ = DataState::line_start;
    uint8_t end_match_ = 0;  // bytes of CRLF.CRLF matched while discarding

    // BDAT (RFC 3030).
    bool bdat_mode_ = false;  // the transaction's message is being sent with BDAT
    bool chunk_last_ = false;
    bool chunk_prev_cr_ = false;  // a CR ended the previous chunk bytes
    uint64_t chunk_size_ = 0;
    uint64_t chunk_remaining_ = 0;
    Refusal chunk_refusal_ = Refusal::none;  // decided at the BDAT command
    Refusal bdat_failed_ = Refusal::none;    // repeated to the rest of a failed transaction

    char received_[kReceivedMaxBytes];
    size_t received_len_ = 0;

    // TLS and AUTH.
    bool submission_ = false;
    bool tls_ = false;
    bool authenticated_ = false;
    bool auth_checking_ = false;  // the driver has the credentials; auth_result() follows
    tls::AuthExchange auth_;
    char tls_version_[16];
    size_t tls_version_len_ = 0;
    char tls_cipher_[64];
    size_t tls_cipher_len_ = 0;
};

}  // namespace ringmail::smtp
