// smtp_client.hpp — the SMTP client session: a sans-I/O state machine for one outbound
// connection to an MX host (RFC 5321, 1870, 2920, 3030, 3463, 6152, 6531).
//
// The delivery driver (the engine's outbound connection pool) owns the socket, the clock and
// the spool; this object only turns received bytes into events and commands into bytes:
//
//   start(want_tls)          → expects the greeting; with want_tls, STARTTLS when offered
//   feed(bytes)              → replies parsed; events queued; commands written to output()
//   output() / output_sent() → what to send, and how much was sent
//   next_event()             → poll after every call until it returns ClientEvent::none
//   begin_transaction(t)     → after `ready`: MAIL, RCPTs (and DATA) go out
//   body_chunk() / body_end()→ after `body_wanted`: the message text, dot-stuffed for DATA or
//                              framed as BDAT chunks when CHUNKING is offered
//   quit(), timeout(), peer_closed()
//   tls_started()            → after starttls_ready, once the driver's TLS handshake is done
//
// One session serves several transactions in a row (`ready` after each); the driver decides
// how many. Events are history: one feed() may queue `ready` and then, from a later reply in
// the same bytes, `closed` or `protocol_error`; act on `ready` only while phase() is ready
// (begin_transaction() returns false otherwise). Guarantees:
//  - every recipient of a transaction gets exactly one final outcome in transaction_done,
//    also when the connection breaks (deferred) — never silently dropped;
//  - hostile replies are bounded (see smtp_reply.hpp) and end in protocol_error, never in
//    unbounded memory, a hang while bytes keep coming, or a crash;
//  - a reply is matched to a command only if that command was already handed to the driver
//    (output_sent); anything else is unsolicited and a protocol error;
//  - no allocation per message in the steady state: buffers are fixed or keep their capacity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/limits.hpp"
#include "net/smtp/smtp_reply.hpp"

namespace ringmail::smtp {

inline constexpr size_t client_output_bytes = 16384;        // commands and message text in flight
inline constexpr size_t client_reply_text_max_bytes = 512;  // kept per outcome, for DSN and log

// RFC 5321 §4.5.3.2 client timeouts; the driver arms one of them with timeout_ms().
struct ClientTimeouts {
    uint32_t greeting_ms = 300'000;    // §4.5.3.2.1 initial 220
    uint32_t ehlo_ms = 300'000;        // EHLO/HELO (as MAIL)
    uint32_t mail_ms = 300'000;        // §4.5.3.2.2
    uint32_t rcpt_ms = 300'000;        // §4.5.3.2.3
    uint32_t data_init_ms = 120'000;   // §4.5.3.2.4 the 354
    uint32_t data_block_ms = 180'000;  // §4.5.3.2.5 each send of text; also each BDAT reply
    uint32_t data_end_ms = 600'000;    // §4.5.3.2.6 after the final dot / BDAT LAST
    uint32_t command_ms = 300'000;     // RSET, QUIT
};

struct ClientSettings {
    std::string helo_name = "localhost";  // our name in EHLO/HELO
    uint32_t max_recipients_per_transaction = 100;
    ClientTimeouts timeouts;
};

// One transaction. The views (addresses) must stay valid until transaction_done is polled.
struct Transaction {
    std::string_view mail_from;               // without brackets; "" is the null sender
    std::span<const std::string_view> rcpts;  // without brackets; not empty
    uint64_t size_bytes = 0;                  // the message text's length (SIZE=, RFC 1870)
    bool needs_8bitmime = false;              // text has octets > 127 (BODY=8BITMIME)
    bool needs_smtputf8 = false;              // non-ASCII addresses or headers (RFC 6531)
};

enum class RcptOutcome : uint8_t {
    delivered,          // 2xx to the end of the message
    deferred,           // 4xx, or the connection failed: retry later
    bounced,            // 5xx, or a local permanent failure (5.6.7, 5.3.4, 5.1.3)
    deferred_too_many,  // not tried (RFC 5321 §4.5.3.1.10): put it in the next transaction
};

// The outcome of one recipient, in the order of Transaction::rcpts.
struct RcptResult {
    RcptOutcome outcome = RcptOutcome::deferred;
    uint16_t code = 0;        // the remote reply code; 0 when decided locally
    std::string_view status;  // enhanced status "5.1.1" (from the reply, or derived)
    std::string_view text;    // "550 5.1.1 <u@x>: unknown user" (lines joined, sanitised), or
                              // a local explanation; at most client_reply_text_max_bytes
};

enum class ClientEvent : uint8_t {
    none,              // nothing (more) to report
    greeting_ok,       // 220 received; EHLO is on its way
    greeting_failed,   // 4xx/5xx greeting, or EHLO/HELO refused: try the next MX
                       // (last_reply_*); QUIT is written and `closed` follows
    starttls_ready,    // 220 to STARTTLS: run the TLS handshake, then tls_started(); bytes
                       // received after the 220 in clear were discarded (RFC 3207 §4.2)
    ready,             // idle: begin_transaction() or quit() may be called; without TLS
                       // when STARTTLS was not offered or refused (check tls_active())
    body_wanted,       // push the message text with body_chunk() / body_end()
    transaction_done,  // results() holds every recipient's outcome
    closed,            // the session is over (QUIT answered, or peer closed while idle)
    protocol_error,    // the session is over: error() says why; pending recipients deferred
};

// Where the session stands; the driver logs it and picks the timeout from it.
enum class ClientPhase : uint8_t {
    init,      // before start()
    greeting,  // waiting for 220
    ehlo,      // EHLO or HELO sent
    starttls,  // STARTTLS sent, or its 220 received and the TLS handshake under way
    ready,     // idle between transactions
    envelope,  // MAIL/RCPT/DATA in flight
    body,      // message text being sent (DATA) or BDAT chunks in flight
    data_end,  // waiting for the reply to the end of the message
    rset,      // RSET after a failed transaction
    quit,      // QUIT sent
    done,      // closed or failed: the driver closes the connection
};

class ClientSession {
  public:
    explicit ClientSession(const ClientSettings& settings);
    ClientSession(const ClientSession&) = delete;
    ClientSession& operator=(const ClientSession&) = delete;

    // A new connection is up: forget the previous one, expect the greeting. want_tls: send
    // STARTTLS after EHLO when the server offers it (RFC 3207).
    void start(bool want_tls = false);

    // The TLS handshake after starttls_ready succeeded: everything learnt from the EHLO in
    // clear is forgotten and EHLO goes out again, now through TLS (RFC 3207 §4.2).
    void tls_started();
    // STARTTLS was answered with 220 and the handshake has not finished: feed() discards.
    [[nodiscard]] bool awaiting_handshake() const { return awaiting_handshake_; }
    // The session runs inside TLS (tls_started() was called on this connection).
    [[nodiscard]] bool tls_active() const { return tls_active_; }

    // Received bytes. Returns how many were consumed: fewer than in.size() only while the
    // output lacks room for the commands a reply may trigger (re-feed after output_sent).
    // Once the session is done, everything is consumed and ignored.
    [[nodiscard]] size_t feed(std::string_view in);

    [[nodiscard]] std::string_view output() const { return {out_, out_len_}; }
    void output_sent(size_t n);

    [[nodiscard]] ClientEvent next_event();

    // Starts a transaction; false if the session is not ready or t has no recipient. A
    // transaction the server cannot take (SMTPUTF8 needed but not offered → 5.6.7, larger than
    // its SIZE → 5.3.4) or whose addresses cannot be sent (CR/LF/NUL, overlong → 5.1.3/5.1.7)
    // ends at once with transaction_done and ready, without a byte sent. 8BITMIME needed but not
    // offered: the text is sent anyway, as Postfix and Exim do by default — downgrading it
    // would be a MIME rewrite, and refusing would bounce mail most servers accept.
    [[nodiscard]] bool begin_transaction(const Transaction& t);

    // Message text, in order, after body_wanted and while wants_body(). Returns the bytes
    // consumed (fewer when the output is full, or, for BDAT without PIPELINING, while the
    // previous chunk is unanswered: call again after output_sent / feed). DATA: dot-stuffed here
    // (RFC 5321 §4.5.2), lines tracked across chunks. BDAT: each call sends one "BDAT n" chunk;
    // with last=true and everything consumed, it is "BDAT n LAST" and the message is complete.
    // After the transaction has failed, text is consumed and dropped.
    [[nodiscard]] size_t body_chunk(std::string_view text, bool last = false);
    // Ends the message: CRLF (if the text did not end with one) + ".CRLF", or "BDAT 0 LAST".
    // False: no room now, call again after output_sent.
    [[nodiscard]] bool body_end();
    [[nodiscard]] bool wants_body() const;

    // Ends the session: QUIT when ready; otherwise pending recipients are deferred
    // (transaction_done) and the session is closed at once.
    void quit();
    // The current wait (timeout_ms()) expired: pending recipients deferred, protocol_error.
    void timeout();
    // The peer closed the connection: `closed` when idle or after QUIT, else pending
    // recipients deferred and protocol_error.
    void peer_closed();

    [[nodiscard]] ClientPhase phase() const { return phase_; }
    // RFC 5321 §4.5.3.2 timeout for the reply awaited now (or the data block timeout while
    // text is being sent); 0 when nothing is awaited (idle).
    [[nodiscard]] uint32_t timeout_ms() const;
    [[nodiscard]] bool wants_close() const { return phase_ == ClientPhase::done; }
    [[nodiscard]] std::string_view error() const { return error_; }

    // Valid from transaction_done until the next begin_transaction.
    [[nodiscard]] std::span<const RcptResult> results() const { return results_; }
    // The last reply received (greeting_failed, logs): code and sanitised text.
    [[nodiscard]] uint16_t last_reply_code() const { return last_code_; }
    [[nodiscard]] std::string_view last_reply_text() const { return {last_text_, last_len_}; }

    // What the server's EHLO offered.
    [[nodiscard]] bool esmtp() const { return esmtp_; }
    [[nodiscard]] bool offers_pipelining() const { return pipelining_; }
    [[nodiscard]] bool offers_8bitmime() const { return eightbit_; }
    [[nodiscard]] bool offers_smtputf8() const { return smtputf8_; }
    [[nodiscard]] bool offers_chunking() const { return chunking_; }
    [[nodiscard]] bool offers_starttls() const { return starttls_; }
    [[nodiscard]] bool offers_enhanced_status() const { return enhanced_; }
    [[nodiscard]] uint64_t server_size_max() const { return size_max_; }  // 0: none announced
    // Recipients per transaction now: the setting, lowered after a 452 "too many" (RFC 5321
    // §4.5.3.1.10) for the rest of this connection.
    [[nodiscard]] uint32_t recipient_limit() const { return rcpt_limit_; }

  private:
    enum class Cmd : uint8_t {
        greeting,
        ehlo,
        helo,
        starttls,
        mail,
        rcpt,
        data,
        dot,
        dot_discard,
        bdat,
        bdat_last,
        rset,
        quit
    };
    struct Pending {
        Cmd cmd;
        uint32_t rcpt;        // for Cmd::rcpt
        uint64_t end_offset;  // written_total_ after the command: solicited once sent
    };
    enum class Mark : uint8_t { open, accepted, final };
    struct Slot {  // a recipient of the current transaction
        Mark mark = Mark::open;
        RcptOutcome outcome = RcptOutcome::deferred;
        uint16_t code = 0;
        uint32_t status_off = 0, status_len = 0;  // in texts_
        uint32_t text_off = 0, text_len = 0;
    };
    struct TextRef {
        uint16_t code;
        uint32_t status_off, status_len, text_off, text_len;
    };

    void enter(ClientPhase next);
    void push_event(ClientEvent e);
    void write(std::string_view s);
    void write_line(std::initializer_list<std::string_view> parts);
    void push_pending(Cmd c, uint32_t rcpt = 0);
    [[nodiscard]] Pending pop_pending();
    [[nodiscard]] bool pending_full() const { return pending_count_ == pending_.size(); }
    [[nodiscard]] size_t output_room() const { return sizeof out_ - out_len_; }

    void handle_reply();
    void remember_reply();
    void refuse_session();
    void on_greeting(uint16_t code);
    void on_ehlo(uint16_t code, bool helo);
    void parse_ehlo_keywords();
    void on_starttls(uint16_t code);
    void send_ehlo();
    void on_mail(uint16_t code);
    void on_rcpt(uint32_t i, uint16_t code);
    void on_data(uint16_t code);
    void on_end_of_text(uint16_t code);
    void on_bdat(uint16_t code, bool last);
    void on_rset(uint16_t code);
    void fail(const char* why, std::string_view status);

    void write_mail();
    [[nodiscard]] bool local_failure(std::string_view status, std::string_view text);
    [[nodiscard]] bool write_next_command();
    void advance_envelope();
    void open_body();
    void finish_transaction(bool rset);
    void publish_results();
    [[nodiscard]] size_t stuff_text(std::string_view text, size_t reserve);
    [[nodiscard]] size_t write_bdat(std::string_view text, bool last);

    [[nodiscard]] TextRef keep_reply();
    [[nodiscard]] TextRef keep_local(std::string_view status, std::string_view text);
    void settle(Slot& s, const TextRef& r, RcptOutcome o);
    void settle_open(const TextRef& r, RcptOutcome o);      // every open recipient
    void settle_accepted(const TextRef& r, RcptOutcome o);  // every accepted recipient
    [[nodiscard]] static RcptOutcome outcome_of(uint16_t code);

    const ClientSettings& settings_;
    ReplyParser parser_;
    char out_[client_output_bytes];
    size_t out_len_ = 0;
    uint64_t written_total_ = 0;
    uint64_t sent_total_ = 0;

    ClientPhase phase_ = ClientPhase::init;
    const char* error_ = "";
    ClientEvent events_[8];
    size_t event_head_ = 0, event_count_ = 0;

    // Replies awaited, oldest first (a ring sized once from the recipient limit).
    std::vector<Pending> pending_;
    size_t pending_head_ = 0, pending_count_ = 0;

    // EHLO.
    bool esmtp_ = false, pipelining_ = false, eightbit_ = false, smtputf8_ = false;
    bool chunking_ = false, starttls_ = false, enhanced_ = false;
    bool size_offered_ = false;
    // STARTTLS (RFC 3207).
    bool want_tls_ = false;
    bool awaiting_handshake_ = false;
    bool tls_active_ = false;
    uint64_t size_max_ = 0;
    uint32_t rcpt_limit_ = 0;

    // Transaction.
    Transaction txn_;
    std::vector<Slot> slots_;
    std::vector<RcptResult> results_;
    std::string texts_;       // reply texts of this transaction (capacity kept)
    uint32_t attempt_ = 0;    // recipients tried in this transaction
    uint32_t next_rcpt_ = 0;  // next RCPT to write
    uint32_t accepted_ = 0;
    bool mail_failed_ = false;
    bool rcpts_stopped_ = false;  // 452 too many: no more RCPT
    bool too_many_ = false;
    bool use_bdat_ = false;
    bool data_written_ = false;
    bool body_open_ = false;    // body_chunk() accepted
    bool body_failed_ = false;  // a BDAT was refused: drop the rest
    bool txn_active_ = false;
    TextRef too_many_ref_{};

    // Dot-stuffing state across chunks (RFC 5321 §4.5.2).
    bool line_start_ = true;
    char last2_[2] = {0, 0};
    uint64_t text_bytes_ = 0;

    uint16_t last_code_ = 0;
    char last_text_[client_reply_text_max_bytes];
    size_t last_len_ = 0;
};

}  // namespace ringmail::smtp
