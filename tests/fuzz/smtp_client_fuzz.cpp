// smtp_client_fuzz.cpp — the SMTP reply parser (net/smtp/smtp_reply.hpp) and the client session
// (net/smtp/smtp_client.hpp) fed arbitrary server bytes (OpenSMTPD CVE-2020-8794 was a client that
// trusted its server).
//
// Input: three header bytes, then what the server sends.
//   [0] bit0 STARTTLS wanted, bits1-2 messages to send (0-3), bits3-4 recipients per
//       transaction (1, 2, 3, 100), bits5-6 how it ends (peer_closed, timeout, quit(), nothing)
//   [1] bits0-2 recipients per message (1-8), bits3-4 body (plain, dot lines, no final CRLF,
//       40 KiB), bit5 needs 8BITMIME, bit6 needs SMTPUTF8, bit7 last piece pushed with last=true
//   [2] split schedule: bit7 cut after every LF as well (a server answering each command),
//       the rest seeds the random cuts
//
// The parser alone must read the bytes the same way whatever the cuts, and every reply it
// completes is within its caps. The client session, driven like the delivery driver drives it,
// must give every recipient of every transaction it began exactly one outcome consistent with
// its reply code, deliver only after the whole text went out correctly dot-stuffed (DATA) or
// framed (BDAT), keep reply text free of control octets, and stay silent once it is done.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "net/smtp/smtp_client.hpp"
#include "net/smtp/smtp_reply.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace ringmail::smtp {
namespace {

constexpr size_t kHeaderBytes = 3;

uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The server's writes: random cuts, and optionally a cut after every LF.
std::vector<std::string_view> cut(std::string_view bytes, uint8_t schedule) {
    static constexpr size_t kMaxWrite[] = {1, 3, 16, 64, 512, 4096, 100000, 100000};
    const size_t max_write = kMaxWrite[schedule & 7];
    const bool at_lines = (schedule & 0x80) != 0;
    uint64_t rng = schedule;
    std::vector<std::string_view> out;
    for (size_t at = 0; at < bytes.size();) {
        size_t n = 1 + static_cast<size_t>(splitmix64(rng) % max_write);
        n = std::min(n, bytes.size() - at);
        if (at_lines) {
            const size_t lf = bytes.find('\n', at);
            if (lf != std::string_view::npos && lf < at + n) n = lf + 1 - at;
        }
        out.push_back(bytes.substr(at, n));
        at += n;
    }
    return out;
}

bool printable(std::string_view s) {
    return std::none_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

// --- the reply parser alone --------------------------------------------------------------

std::string parse_replies(const std::vector<std::string_view>& writes) {
    ReplyParser p;
    std::string log;
    for (std::string_view w : writes) {
        while (!w.empty()) {
            size_t used = 0;
            const ReplyParser::Status st = p.feed(w, used);
            FUZZ_CHECK(used <= w.size());
            if (st == ReplyParser::Status::error) {
                // Which cap tripped first may depend on the cuts ("reply too long" before "reply
                // line too long"); that the reply is refused may not.
                FUZZ_CHECK(*p.error() != '\0');
                log += "error\n";
                FUZZ_CHECK(p.feed(w, used) == ReplyParser::Status::error && used == 0);
                return log;  // terminal until reset()
            }
            if (st == ReplyParser::Status::need_more) {
                FUZZ_CHECK(used == w.size());
                break;
            }
            FUZZ_CHECK(used > 0 && w[used - 1] == '\n');  // a reply ends with its line
            const uint16_t code = p.code();
            FUZZ_CHECK(code >= 200 && code <= 559 && code % 100 / 10 <= 5);
            FUZZ_CHECK(p.line_count() >= 1 && p.line_count() <= reply_lines_max);
            size_t wire = 0;
            log += std::to_string(code);
            for (size_t i = 0; i < p.line_count(); ++i) {
                const std::string_view t = p.text(i);
                FUZZ_CHECK(t.find('\n') == std::string_view::npos);
                // "ddd-" + text; a line ending in a bare LF may hold one more octet than one
                // ending in CRLF (the cap counts the CR).
                FUZZ_CHECK(t.size() + 4 <= reply_line_max_bytes + 1);
                wire += (t.empty() ? 3 : t.size() + 4) + 1;  // at least this much came in
                log += "|";
                log += t;
            }
            FUZZ_CHECK(wire <= reply_max_bytes);
            const std::string_view e = p.enhanced();
            if (!e.empty()) {
                FUZZ_CHECK(e[0] == static_cast<char>('0' + code / 100) && e[1] == '.');
                FUZZ_CHECK(p.text(0).starts_with(e));
            }
            log += " [";
            log += e;
            log += "]\n";
            w.remove_prefix(used);
        }
    }
    return log;
}

// --- the client session ------------------------------------------------------------------

struct Message {
    std::string mail_from;
    std::vector<std::string> rcpts;
    std::vector<std::string> pieces;
    bool last_flag = false;
    bool needs_8bit = false;
    bool needs_utf8 = false;
};

std::vector<std::string> body_pieces(uint8_t style) {
    switch (style) {
        case 0:
            return {"Subject: t\r\n\r\nhi\r\n"};
        case 1:
            return {"Subject: dots\r\n\r\n.\r\n..x\r\n", ".leading\r\n", "\r\n", ".", "\r\n"};
        case 2:
            return {"Subject: open\r\n\r\nno final line end"};
        default: {
            std::string big;
            for (int i = 0; big.size() < 40000; ++i)
                big += (i % 3 == 0 ? ".line " : "line ") + std::to_string(i) + "\r\n";
            return {big.substr(0, 20000), big.substr(20000)};
        }
    }
}

// RFC 5321 §4.5.2, applied to the whole text: what must be on the wire between the 354 and
// the server's final reply.
std::string stuffed(const std::string& text) {
    std::string out;
    bool line_start = true;
    for (const char c : text) {
        if (line_start && c == '.') out += '.';
        out += c;
        line_start = c == '\n';
    }
    if (!text.empty() && !text.ends_with("\r\n")) out += "\r\n";
    return out + ".\r\n";
}

// The BDAT framing (RFC 3030): "BDAT n[ LAST]\r\n" + n octets, the last chunk marked LAST.
bool unframe(std::string_view wire, std::string* text) {
    bool last = false;
    while (!wire.empty()) {
        if (last || !wire.starts_with("BDAT ")) return false;
        const size_t eol = wire.find("\r\n");
        if (eol == std::string_view::npos) return false;
        std::string_view head = wire.substr(5, eol - 5);
        if (head.ends_with(" LAST")) {
            last = true;
            head.remove_suffix(5);
        }
        size_t n = 0;
        for (const char c : head) {
            if (c < '0' || c > '9') return false;
            n = n * 10 + static_cast<size_t>(c - '0');
        }
        wire.remove_prefix(eol + 2);
        if (n > wire.size()) return false;
        text->append(wire.substr(0, n));
        wire.remove_prefix(n);
    }
    return last;
}

class Driver {
  public:
    explicit Driver(const uint8_t* h) {
        static constexpr uint32_t kLimits[] = {1, 2, 3, 100};
        settings_.helo_name = "relay.test";
        settings_.max_recipients_per_transaction = kLimits[(h[0] >> 3) & 3];
        end_mode_ = (h[0] >> 5) & 3;
        const size_t messages = (h[0] >> 1) & 3;
        for (size_t i = 0; i < messages; ++i) {
            Message m;
            m.mail_from = i == 1 ? "" : "sender@origin.test";
            const size_t rcpts = 1 + (h[1] & 7) + i;
            for (size_t k = 0; k < rcpts; ++k)
                m.rcpts.push_back("r" + std::to_string(k) + "@dest.test");
            m.pieces = body_pieces(static_cast<uint8_t>((h[1] >> 3) + i) & 3);
            m.needs_8bit = (h[1] & 0x20) != 0;
            m.needs_utf8 = (h[1] & 0x40) != 0 && i == 0;
            m.last_flag = (h[1] & 0x80) != 0;
            messages_.push_back(std::move(m));
        }
        c_ = std::make_unique<ClientSession>(settings_);
        c_->start((h[0] & 1) != 0);
    }

    void server(std::string_view bytes) {
        size_t pos = 0;
        int stuck = 0;
        while (pos < bytes.size()) {
            const size_t n = c_->feed(bytes.substr(pos));
            FUZZ_CHECK(n <= bytes.size() - pos);
            if (done_) FUZZ_CHECK(n == bytes.size() - pos);  // ignored once done
            pos += n;
            pump();
            stuck = n == 0 ? stuck + 1 : 0;
            FUZZ_CHECK(stuck < 3);  // feed takes bytes once the driver drained the output
        }
    }

    void finish() {
        switch (end_mode_) {
            case 0:
                c_->peer_closed();
                break;
            case 1:
                c_->timeout();
                break;
            case 2:
                c_->quit();
                break;
            default:
                break;
        }
        pump();
        c_->peer_closed();  // the connection ends in any case
        pump();
        if (trace_) std::fprintf(stderr, "--- sent:\n%s---\n", sent_.c_str());
        FUZZ_CHECK(c_->wants_close() && done_);
        // Every transaction begun got its outcomes, also when the connection broke.
        FUZZ_CHECK(!txn_open_);
        // Done is done: bytes are ignored, nothing is written, nothing happens.
        FUZZ_CHECK(c_->feed("250 ok\r\n") == 8);
        c_->timeout();
        c_->quit();
        FUZZ_CHECK(c_->output().empty() && c_->next_event() == ClientEvent::none);
    }

  private:
    void pump() {
        int round = 0;
        for (; round < 100000; ++round) {
            drain();
            bool progress = false;
            for (ClientEvent e; (e = c_->next_event()) != ClientEvent::none;) {
                progress = true;
                on_event(e);
            }
            if (c_->wants_body()) progress |= push_body();
            if (!progress && c_->output().empty()) break;
        }
        FUZZ_CHECK(round < 100000);  // the driver loop settles
        // Waiting for the server always has a timer: a silent server cannot hang the connection.
        if (!done_ && c_->phase() != ClientPhase::ready) FUZZ_CHECK(c_->timeout_ms() > 0);
    }

    void drain() {
        const std::string_view o = c_->output();
        FUZZ_CHECK(o.size() <= client_output_bytes);
        sent_.append(o);
        c_->output_sent(o.size());
    }

    [[nodiscard]] size_t wire_offset() const { return sent_.size() + c_->output().size(); }

    void on_event(ClientEvent e) {
        if (trace_)
            std::fprintf(stderr, "event %d phase %d\n", static_cast<int>(e),
                         static_cast<int>(c_->phase()));
        FUZZ_CHECK(!done_);  // nothing follows closed / protocol_error
        FUZZ_CHECK(printable(c_->last_reply_text()));
        FUZZ_CHECK(c_->last_reply_text().size() <= client_reply_text_max_bytes);
        switch (e) {
            case ClientEvent::ready:
                begin_next();
                break;
            case ClientEvent::starttls_ready:
                FUZZ_CHECK(c_->awaiting_handshake());
                drain();
                c_->tls_started();
                break;
            case ClientEvent::body_wanted:
                FUZZ_CHECK(txn_open_ && !body_started_);
                body_started_ = true;
                body_from_ = wire_offset();
                break;
            case ClientEvent::transaction_done:
                check_results();
                break;
            case ClientEvent::closed:
            case ClientEvent::protocol_error:
                FUZZ_CHECK(c_->wants_close());
                done_ = true;
                break;
            case ClientEvent::greeting_ok:
            case ClientEvent::greeting_failed:
            case ClientEvent::none:
                break;
        }
    }

    void begin_next() {
        // Events are history: act on `ready` only while the session is ready.
        if (c_->phase() != ClientPhase::ready) return;
        if (next_ == messages_.size()) {
            c_->quit();
            return;
        }
        const Message& m = messages_[next_++];
        views_.assign(m.rcpts.begin(), m.rcpts.end());
        Transaction t;
        t.mail_from = m.mail_from;
        t.rcpts = views_;
        for (const std::string& p : m.pieces)
            t.size_bytes += p.size();
        t.needs_8bitmime = m.needs_8bit;
        t.needs_smtputf8 = m.needs_utf8;
        current_ = &m;
        piece_ = offset_ = 0;
        txn_open_ = true;
        body_started_ = body_complete_ = false;
        use_bdat_ = c_->offers_chunking();
        txn_from_ = wire_offset();
        FUZZ_CHECK(c_->begin_transaction(t));
    }

    bool push_body() {
        bool progress = false;
        while (c_->wants_body() && piece_ < current_->pieces.size()) {
            const std::string_view p = std::string_view(current_->pieces[piece_]).substr(offset_);
            const bool last = current_->last_flag && piece_ + 1 == current_->pieces.size();
            const size_t n = c_->body_chunk(p, last);
            FUZZ_CHECK(n <= p.size());
            offset_ += n;
            if (offset_ == current_->pieces[piece_].size() && (n > 0 || p.empty())) {
                ++piece_;
                offset_ = 0;
                progress = true;
                if (last) body_done();
                continue;
            }
            if (n == 0) return progress;
            progress = true;
            drain();
        }
        if (c_->wants_body() && piece_ == current_->pieces.size()) {
            if (c_->body_end()) {
                body_done();
                progress = true;
            }
        }
        return progress;
    }

    void body_done() {
        if (body_complete_) return;
        body_complete_ = true;
        body_to_ = wire_offset();
    }

    void check_results() {
        FUZZ_CHECK(txn_open_);
        txn_open_ = false;
        const std::span<const RcptResult> results = c_->results();
        FUZZ_CHECK(results.size() == current_->rcpts.size());
        std::string text;
        for (const std::string& p : current_->pieces)
            text += p;
        bool any_delivered = false;
        for (size_t i = 0; i < results.size(); ++i) {
            const RcptResult& r = results[i];
            // "d.ddd.ddd" whose class is the outcome's; a remote code of the same class.
            if (trace_) {
                std::fprintf(stderr, "result %zu: outcome %d code %u status %.*s text %.*s\n", i,
                             static_cast<int>(r.outcome), r.code, static_cast<int>(r.status.size()),
                             r.status.data(), static_cast<int>(r.text.size()), r.text.data());
            }
            FUZZ_CHECK(r.status.size() >= 5 && r.status[1] == '.');
            const char cls = r.status[0];
            // A 3xx other than 354 to DATA once bounced with status "3.0.0"
            // (corpus/smtp_client/regression-data-3xx-bounced-as-3.0.0.bin).
            switch (r.outcome) {
                case RcptOutcome::delivered:
                    FUZZ_CHECK(cls == '2');
                    break;
                case RcptOutcome::deferred:
                case RcptOutcome::deferred_too_many:
                    FUZZ_CHECK(cls == '4');
                    break;
                case RcptOutcome::bounced:
                    FUZZ_CHECK(cls == '5');
                    break;
            }
            FUZZ_CHECK(r.code == 0 || r.code / 100 == static_cast<uint16_t>(cls - '0'));
            FUZZ_CHECK(printable(r.text) && r.text.size() <= client_reply_text_max_bytes);
            if (r.outcome != RcptOutcome::delivered) continue;
            any_delivered = true;
            FUZZ_CHECK(r.code / 100 == 2);
            // Delivered: its RCPT went out in this transaction.
            const std::string rcpt = "RCPT TO:<" + current_->rcpts[i] + ">\r\n";
            FUZZ_CHECK(sent_.find(rcpt, txn_from_) != std::string::npos);
        }
        if (!any_delivered) return;
        // Delivered means the whole text went out, correctly encoded (a lost or cut message
        // after a 250 is the one thing that must never happen).
        FUZZ_CHECK(body_started_ && body_complete_);
        FUZZ_CHECK(body_to_ <= sent_.size() + c_->output().size());
        const std::string wire =
            (sent_ + std::string(c_->output())).substr(body_from_, body_to_ - body_from_);
        if (use_bdat_) {
            std::string got;
            FUZZ_CHECK(unframe(wire, &got));
            FUZZ_CHECK(got == text);
        } else {
            FUZZ_CHECK(wire == stuffed(text));
        }
    }

    // RINGMAIL_FUZZ_TRACE=1 shows what happened, to read a saved input.
    const bool trace_ = std::getenv("RINGMAIL_FUZZ_TRACE") != nullptr;
    ClientSettings settings_;
    std::unique_ptr<ClientSession> c_;
    std::vector<Message> messages_;
    std::vector<std::string_view> views_;
    const Message* current_ = nullptr;
    size_t next_ = 0, piece_ = 0, offset_ = 0;
    uint8_t end_mode_ = 0;
    std::string sent_;
    bool done_ = false;
    bool txn_open_ = false;
    bool use_bdat_ = false;
    bool body_started_ = false, body_complete_ = false;
    size_t txn_from_ = 0, body_from_ = 0, body_to_ = 0;
};

}  // namespace
}  // namespace ringmail::smtp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace ringmail::smtp;
    if (size < kHeaderBytes) return 0;
    const std::string_view server(reinterpret_cast<const char*>(data) + kHeaderBytes,
                                  size - kHeaderBytes);
    const std::vector<std::string_view> writes = cut(server, data[2]);

    // The parser reads the same replies however the bytes are cut.
    FUZZ_CHECK(parse_replies(writes) == parse_replies({server}));

    Driver d(data);
    for (const std::string_view w : writes)
        d.server(w);
    d.finish();
    return 0;
}
