// smtp_client.cpp — the SMTP client session state machine (contract in smtp_client.hpp).
//
// Called by the outbound delivery driver and by tests with scripted replies. Commands awaiting
// a reply sit in a ring (pending_), oldest first; each reply is matched to the oldest one, and
// only if the driver already sent it. Recipient outcomes live in slots_: a recipient is open
// (no answer yet), accepted (250 to RCPT, waiting for the end of the message) or final; the
// first final outcome wins, so a late or duplicate reply can never turn a bounce into a
// delivery. Every write is checked against the output room: feed() only handles a reply while
// kCommandHeadroomBytes are free, and one reply writes at most one command line — except the
// pipelined RCPT fill, which checks the room before each line.
#include "net/smtp/smtp_client.hpp"

#include <strings.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "core/base/assert.hpp"

namespace ringmail::smtp {
namespace {

constexpr size_t kCommandHeadroomBytes = limits::command_line_max_bytes;
constexpr size_t kBdatHeaderBytes = 32;  // "BDAT 18446744073709551615 LAST\r\n"
constexpr size_t kPathMaxBytes = limits::path_max_bytes - 2;  // without the brackets
static_assert(client_output_bytes >= 4 * kCommandHeadroomBytes);
static_assert(limits::domain_max_bytes + 7 <= kCommandHeadroomBytes, "EHLO line fits");

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Addresses come from our own spool, where the server session already refused CR, LF and
// NUL; checked again because a CR/LF here would inject commands into the remote session.
bool sendable_path(std::string_view path) {
    if (path.size() > kPathMaxBytes) return false;
    return std::none_of(path.begin(), path.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

bool legal_transition(ClientPhase from, ClientPhase to) {
    using P = ClientPhase;
    if (to == P::done) return from != P::init;
    switch (from) {
        case P::init:
            return to == P::greeting;
        case P::greeting:
            return to == P::ehlo || to == P::quit;
        case P::ehlo:
            return to == P::ehlo || to == P::starttls || to == P::ready || to == P::quit;
        case P::starttls:
            return to == P::ehlo || to == P::ready;
        case P::ready:
            return to == P::envelope || to == P::ready || to == P::quit;
        case P::envelope:
            return to == P::body || to == P::rset;
        case P::body:
            return to == P::data_end || to == P::rset;
        case P::data_end:
            return to == P::ready || to == P::rset;
        case P::rset:
            return to == P::ready;
        case P::quit:
        case P::done:
            return false;
    }
    return false;
}

}  // namespace

ClientSession::ClientSession(const ClientSettings& settings) : settings_(settings) {
    RM_ASSERT(settings.max_recipients_per_transaction > 0);
    RM_ASSERT(!settings.helo_name.empty() && settings.helo_name.size() <= limits::domain_max_bytes);
    pending_.resize(settings.max_recipients_per_transaction + 8);
    slots_.reserve(settings.max_recipients_per_transaction);
    results_.reserve(settings.max_recipients_per_transaction);
    texts_.reserve(4096);
}

void ClientSession::start(bool want_tls) {
    want_tls_ = want_tls;
    awaiting_handshake_ = tls_active_ = false;
    parser_.reset();
    out_len_ = 0;
    written_total_ = sent_total_ = 0;
    error_ = "";
    event_head_ = event_count_ = 0;
    pending_head_ = pending_count_ = 0;
    esmtp_ = pipelining_ = eightbit_ = smtputf8_ = false;
    chunking_ = starttls_ = enhanced_ = size_offered_ = false;
    size_max_ = 0;
    rcpt_limit_ = settings_.max_recipients_per_transaction;
    txn_active_ = body_failed_ = false;
    slots_.clear();
    results_.clear();
    last_code_ = 0;
    last_len_ = 0;
    phase_ = ClientPhase::init;
    enter(ClientPhase::greeting);
    push_pending(Cmd::greeting);  // end_offset 0: solicited at once (RFC 5321 §3.1)
}

// --- plumbing ----------------------------------------------------------------------------

void ClientSession::enter(ClientPhase next) {
    RM_ASSERT(legal_transition(phase_, next));
    phase_ = next;
}

void ClientSession::push_event(ClientEvent e) {
    RM_ASSERT(event_count_ < std::size(events_));  // the driver polls after every call
    events_[(event_head_ + event_count_) % std::size(events_)] = e;
    ++event_count_;
}

ClientEvent ClientSession::next_event() {
    if (event_count_ == 0) return ClientEvent::none;
    const ClientEvent e = events_[event_head_];
    event_head_ = (event_head_ + 1) % std::size(events_);
    --event_count_;
    return e;
}

void ClientSession::write(std::string_view s) {
    RM_ASSERT(s.size() <= output_room());
    if (s.empty()) return;  // a default string_view has no data pointer for memcpy
    std::memcpy(out_ + out_len_, s.data(), s.size());
    out_len_ += s.size();
    written_total_ += s.size();
}

void ClientSession::write_line(std::initializer_list<std::string_view> parts) {
    size_t n = 2;
    for (const auto p : parts)
        n += p.size();
    RM_ASSERT(n <= kCommandHeadroomBytes);  // RFC 5321 §4.5.3.1.4
    for (const auto p : parts)
        write(p);
    write("\r\n");
}

void ClientSession::output_sent(size_t n) {
    RM_ASSERT(n <= out_len_);
    std::memmove(out_, out_ + n, out_len_ - n);
    out_len_ -= n;
    sent_total_ += n;
    if (phase_ == ClientPhase::envelope) {
        while (write_next_command()) {
        }
    }
}

void ClientSession::push_pending(Cmd c, uint32_t rcpt) {
    RM_ASSERT(!pending_full());
    pending_[(pending_head_ + pending_count_) % pending_.size()] = {c, rcpt, written_total_};
    ++pending_count_;
}

ClientSession::Pending ClientSession::pop_pending() {
    RM_ASSERT(pending_count_ > 0);
    const Pending p = pending_[pending_head_];
    pending_head_ = (pending_head_ + 1) % pending_.size();
    --pending_count_;
    return p;
}

uint32_t ClientSession::timeout_ms() const {
    const ClientTimeouts& t = settings_.timeouts;
    if (pending_count_ == 0) {
        if (awaiting_handshake_) return t.command_ms;  // the TLS handshake
        return phase_ == ClientPhase::body ? t.data_block_ms : 0;
    }
    switch (pending_[pending_head_].cmd) {
        case Cmd::greeting:
            return t.greeting_ms;
        case Cmd::ehlo:
        case Cmd::helo:
            return t.ehlo_ms;
        case Cmd::mail:
            return t.mail_ms;
        case Cmd::rcpt:
            return t.rcpt_ms;
        case Cmd::data:
            return t.data_init_ms;
        case Cmd::bdat:
            return t.data_block_ms;
        case Cmd::dot:
        case Cmd::dot_discard:
        case Cmd::bdat_last:
            return t.data_end_ms;
        case Cmd::starttls:
        case Cmd::rset:
        case Cmd::quit:
            return t.command_ms;
    }
    return t.command_ms;
}

// --- replies -----------------------------------------------------------------------------

size_t ClientSession::feed(std::string_view in) {
    RM_ASSERT(phase_ != ClientPhase::init);
    size_t used = 0;
    while (used < in.size() && phase_ != ClientPhase::done && !awaiting_handshake_) {
        if (output_room() < kCommandHeadroomBytes) return used;
        size_t n = 0;
        const ReplyParser::Status st = parser_.feed(in.substr(used), n);
        used += n;
        if (st == ReplyParser::Status::error) {
            fail(parser_.error(), "4.5.0");
        } else if (st == ReplyParser::Status::complete) {
            handle_reply();
        }
    }
    // RFC 3207 §4.2 / CVE-2011-0411: bytes after the 220 to STARTTLS came in clear, where
    // anyone on the path could have put them; they must never count as replies inside TLS.
    if (phase_ == ClientPhase::done || awaiting_handshake_) return in.size();
    return used;
}

void ClientSession::remember_reply() {
    last_code_ = parser_.code();
    size_t n = 0;
    auto put = [&](std::string_view s) {
        for (const char c : s) {
            if (n == sizeof last_text_) return;
            const auto u = static_cast<unsigned char>(c);
            // Remote text ends up in logs and DSN fields: no control characters survive.
            last_text_[n++] = (u < 0x20 || u == 0x7f) ? '?' : c;
        }
    };
    char code[3] = {static_cast<char>('0' + last_code_ / 100),
                    static_cast<char>('0' + last_code_ / 10 % 10),
                    static_cast<char>('0' + last_code_ % 10)};
    put({code, 3});
    for (size_t i = 0; i < parser_.line_count(); ++i) {
        if (parser_.text(i).empty()) continue;
        put(" ");
        put(parser_.text(i));
    }
    last_len_ = n;
}

void ClientSession::handle_reply() {
    remember_reply();
    const uint16_t code = parser_.code();
    if (pending_count_ == 0 || pending_[pending_head_].end_offset > sent_total_) {
        // RFC 5321 §3.8: a server about to close may say 421 unasked; on an idle pooled
        // connection that is an ordinary end, not an error.
        if (pending_count_ == 0 && phase_ == ClientPhase::ready && code == 421) {
            error_ = "server closed the connection (421)";
            enter(ClientPhase::done);
            push_event(ClientEvent::closed);
            return;
        }
        return fail("unsolicited reply", "4.5.0");
    }
    const Pending p = pop_pending();
    if (code / 100 == 3 && p.cmd != Cmd::data) return fail("unexpected 3xx reply", "4.5.0");
    switch (p.cmd) {
        case Cmd::greeting:
            return on_greeting(code);
        case Cmd::ehlo:
            return on_ehlo(code, false);
        case Cmd::helo:
            return on_ehlo(code, true);
        case Cmd::starttls:
            return on_starttls(code);
        case Cmd::mail:
            return on_mail(code);
        case Cmd::rcpt:
            return on_rcpt(p.rcpt, code);
        case Cmd::data:
            return on_data(code);
        case Cmd::dot:
            return on_end_of_text(code);
        case Cmd::dot_discard:
            return finish_transaction(true);
        case Cmd::bdat:
            return on_bdat(code, false);
        case Cmd::bdat_last:
            return on_bdat(code, true);
        case Cmd::rset:
            return on_rset(code);
        case Cmd::quit:
            enter(ClientPhase::done);
            return push_event(ClientEvent::closed);
    }
}

void ClientSession::refuse_session() {
    push_event(ClientEvent::greeting_failed);
    write_line({"QUIT"});
    push_pending(Cmd::quit);
    enter(ClientPhase::quit);
}

void ClientSession::on_greeting(uint16_t code) {
    if (code / 100 != 2) return refuse_session();
    push_event(ClientEvent::greeting_ok);
    send_ehlo();
}

void ClientSession::send_ehlo() {
    write_line({"EHLO ", settings_.helo_name});
    push_pending(Cmd::ehlo);
    enter(ClientPhase::ehlo);
}

void ClientSession::on_ehlo(uint16_t code, bool helo) {
    if (code / 100 == 2) {
        if (!helo) {
            esmtp_ = true;
            parse_ehlo_keywords();
        }
        if (starttls_ && want_tls_ && !tls_active_) {
            write_line({"STARTTLS"});
            push_pending(Cmd::starttls);
            return enter(ClientPhase::starttls);
        }
        enter(ClientPhase::ready);
        return push_event(ClientEvent::ready);
    }
    // RFC 5321 §3.2: a server that does not know EHLO answers 500/502/504 (some 550); HELO.
    if (code / 100 == 5 && !helo) {
        write_line({"HELO ", settings_.helo_name});
        push_pending(Cmd::helo);
        return;
    }
    refuse_session();
}

// RFC 3207 §4: 220 starts the handshake; any other answer leaves the session in clear (the
// driver decides whether clear is acceptable, from tls_active()).
void ClientSession::on_starttls(uint16_t code) {
    if (code == 220) {
        awaiting_handshake_ = true;
        parser_.reset();
        return push_event(ClientEvent::starttls_ready);
    }
    enter(ClientPhase::ready);
    push_event(ClientEvent::ready);
}

void ClientSession::tls_started() {
    RM_ASSERT(awaiting_handshake_ && phase_ == ClientPhase::starttls);
    RM_ASSERT(pending_count_ == 0 && out_len_ == 0);  // STARTTLS was the last command
    awaiting_handshake_ = false;
    tls_active_ = true;
    // RFC 3207 §4.2: the client MUST discard any knowledge obtained from the server before
    // TLS, such as the EHLO keywords (a man in the middle could have stripped or added them).
    esmtp_ = pipelining_ = eightbit_ = smtputf8_ = false;
    chunking_ = starttls_ = enhanced_ = size_offered_ = false;
    size_max_ = 0;
    parser_.reset();
    send_ehlo();
}

void ClientSession::parse_ehlo_keywords() {
    for (size_t i = 1; i < parser_.line_count(); ++i) {
        const std::string_view line = parser_.text(i);
        const size_t sp = line.find(' ');
        const std::string_view kw = line.substr(0, sp);
        const std::string_view arg = sp == std::string_view::npos ? "" : line.substr(sp + 1);
        if (iequals(kw, "PIPELINING")) pipelining_ = true;
        if (iequals(kw, "8BITMIME")) eightbit_ = true;
        if (iequals(kw, "SMTPUTF8")) smtputf8_ = true;
        if (iequals(kw, "CHUNKING")) chunking_ = true;
        if (iequals(kw, "STARTTLS")) starttls_ = true;
        if (iequals(kw, "ENHANCEDSTATUSCODES")) enhanced_ = true;
        if (iequals(kw, "SIZE")) {
            // RFC 1870 §4: "SIZE" alone or "SIZE 0" means no fixed limit. A value that is
            // not a number is ignored rather than trusted.
            size_offered_ = true;
            uint64_t v = 0;
            const auto [ptr, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), v);
            size_max_ = (ec == std::errc() && ptr == arg.data() + arg.size()) ? v : 0;
        }
    }
}

RcptOutcome ClientSession::outcome_of(uint16_t code) {
    if (code / 100 == 2) return RcptOutcome::delivered;
    return code / 100 == 4 ? RcptOutcome::deferred : RcptOutcome::bounced;
}

void ClientSession::on_mail(uint16_t code) {
    if (code / 100 != 2) {
        // RFC 5321 §4.1.1.2: a refused MAIL refuses the whole transaction.
        mail_failed_ = true;
        settle_open(keep_reply(), outcome_of(code));
    }
    advance_envelope();
}

void ClientSession::on_rcpt(uint32_t i, uint16_t code) {
    RM_ASSERT(i < attempt_);
    Slot& s = slots_[i];
    if (s.mark == Mark::final) return advance_envelope();  // MAIL failed: answer ignored
    if (code / 100 == 2) {
        s.mark = Mark::accepted;
        ++accepted_;
        return advance_envelope();
    }
    // RFC 5321 §4.5.3.1.10: 452 after some recipients were taken means "no more in this
    // transaction"; the rest goes into the next one, on this connection or another.
    if ((code == 452 && accepted_ > 0) || too_many_) {
        if (!too_many_) {
            too_many_ = true;
            rcpts_stopped_ = true;
            rcpt_limit_ = std::min(rcpt_limit_, accepted_);
            too_many_ref_ = keep_reply();
            for (uint32_t j = next_rcpt_; j < attempt_; ++j)
                settle(slots_[j], too_many_ref_, RcptOutcome::deferred_too_many);
        }
        settle(s, too_many_ref_, RcptOutcome::deferred_too_many);
        return advance_envelope();
    }
    settle(s, keep_reply(), outcome_of(code));
    advance_envelope();
}

void ClientSession::on_data(uint16_t code) {
    if (code == 354) {
        if (accepted_ > 0 && !mail_failed_) return open_body();
        // Pipelined DATA with nobody accepted, and the server still said 354: end an empty
        // message, whose answer does not matter, then RSET (RFC 2920 §3.1).
        write_line({"."});
        push_pending(Cmd::dot_discard);
        return;
    }
    // 2xx or a 3xx other than 354: the server does not follow the protocol (RFC 5321 §4.3.2
    // allows 354, 4xx and 5xx); a 3xx must not become a bounce with a "3.x.x" status.
    if (code / 100 == 2 || code / 100 == 3) return fail("DATA answered without 354", "4.5.0");
    settle_accepted(keep_reply(), outcome_of(code));
    advance_envelope();
}

void ClientSession::on_end_of_text(uint16_t code) {
    settle_accepted(keep_reply(), outcome_of(code));
    finish_transaction(false);
}

void ClientSession::on_bdat(uint16_t code, bool last) {
    if (!body_failed_) {
        if (code / 100 == 2 && !last) return;
        if (last) return on_end_of_text(code);
        // RFC 3030 §4.2: a refused chunk fails the message; later chunks are answered but
        // cannot revive it. Drop the rest of the text and RSET once all answers are in.
        body_failed_ = true;
        settle_accepted(keep_reply(), outcome_of(code));
    }
    if (pending_count_ == 0) finish_transaction(true);
}

void ClientSession::on_rset(uint16_t code) {
    if (code / 100 != 2) return fail("RSET refused", "4.5.0");
    enter(ClientPhase::ready);
    push_event(ClientEvent::ready);
}

// --- transactions ------------------------------------------------------------------------

bool ClientSession::begin_transaction(const Transaction& t) {
    if (phase_ != ClientPhase::ready || t.rcpts.empty()) return false;
    RM_ASSERT(output_room() >= kCommandHeadroomBytes);
    txn_ = t;
    texts_.clear();
    slots_.assign(t.rcpts.size(), Slot{});
    results_.clear();
    attempt_ = static_cast<uint32_t>(std::min<size_t>(t.rcpts.size(), rcpt_limit_));
    next_rcpt_ = accepted_ = 0;
    mail_failed_ = rcpts_stopped_ = too_many_ = false;
    data_written_ = body_failed_ = false;
    use_bdat_ = chunking_;
    line_start_ = true;
    last2_[0] = last2_[1] = 0;
    text_bytes_ = 0;
    txn_active_ = true;

    if (t.needs_smtputf8 && !smtputf8_) {
        // RFC 6531 §3.4: no downgrade; the message cannot go to this server.
        return local_failure("5.6.7", "SMTPUTF8 is required but the server does not offer it");
    }
    if (size_max_ > 0 && t.size_bytes > size_max_) {
        return local_failure("5.3.4", "message is larger than the server's SIZE limit");
    }
    if (!sendable_path(t.mail_from)) return local_failure("5.1.7", "bad sender address");
    if (attempt_ < t.rcpts.size()) {
        const TextRef r = keep_local("4.5.3", "too many recipients for one transaction");
        for (size_t i = attempt_; i < t.rcpts.size(); ++i)
            settle(slots_[i], r, RcptOutcome::deferred_too_many);
    }
    bool any = false;
    for (uint32_t i = 0; i < attempt_; ++i) {
        if (sendable_path(t.rcpts[i])) {
            any = true;
            continue;
        }
        settle(slots_[i], keep_local("5.1.3", "bad recipient address"), RcptOutcome::bounced);
    }
    if (!any) {
        finish_transaction(false);
        return true;
    }
    write_mail();
    enter(ClientPhase::envelope);
    advance_envelope();
    return true;
}

void ClientSession::write_mail() {
    char size_param[32] = " SIZE=";
    std::string_view size_text;
    if (size_offered_) {
        const auto r =
            std::to_chars(size_param + 6, size_param + sizeof size_param, txn_.size_bytes);
        size_text = {size_param, static_cast<size_t>(r.ptr - size_param)};
    }
    // RFC 6152 §3: BODY=8BITMIME only where offered (see begin_transaction for the rest).
    const std::string_view body = txn_.needs_8bitmime && eightbit_ ? " BODY=8BITMIME" : "";
    const std::string_view utf8 = txn_.needs_smtputf8 ? " SMTPUTF8" : "";
    write_line({"MAIL FROM:<", txn_.mail_from, ">", size_text, body, utf8});
    push_pending(Cmd::mail);
}

bool ClientSession::local_failure(std::string_view status, std::string_view text) {
    const TextRef r = keep_local(status, text);
    settle_open(r, RcptOutcome::bounced);
    finish_transaction(false);
    return true;
}

// Writes the next envelope command if the rules allow it now: without PIPELINING one command
// at a time; with it, every RCPT then DATA in one group (RFC 2920 §3.1), as room allows.
bool ClientSession::write_next_command() {
    if (mail_failed_ || data_written_) return false;
    if (!pipelining_ && pending_count_ > 0) return false;
    if (pending_full() || output_room() < kCommandHeadroomBytes) return false;
    while (next_rcpt_ < attempt_ && slots_[next_rcpt_].mark == Mark::final)
        ++next_rcpt_;
    if (!rcpts_stopped_ && next_rcpt_ < attempt_) {
        write_line({"RCPT TO:<", txn_.rcpts[next_rcpt_], ">"});
        push_pending(Cmd::rcpt, next_rcpt_);
        ++next_rcpt_;
        return true;
    }
    // BDAT needs no DATA; without pipelining, DATA only when someone was accepted.
    if (use_bdat_ || (!pipelining_ && accepted_ == 0)) return false;
    write_line({"DATA"});
    push_pending(Cmd::data);
    data_written_ = true;
    return true;
}

void ClientSession::advance_envelope() {
    if (phase_ != ClientPhase::envelope) return;
    while (write_next_command()) {
    }
    if (pending_count_ > 0) return;
    // Every command written is answered and nothing more may be written.
    if (use_bdat_ && accepted_ > 0 && !mail_failed_) return open_body();
    finish_transaction(true);
}

void ClientSession::open_body() {
    enter(ClientPhase::body);
    push_event(ClientEvent::body_wanted);
}

void ClientSession::finish_transaction(bool rset) {
    publish_results();
    if (!rset) {
        enter(ClientPhase::ready);
        return push_event(ClientEvent::ready);
    }
    write_line({"RSET"});
    push_pending(Cmd::rset);
    enter(ClientPhase::rset);
}

void ClientSession::publish_results() {
    RM_ASSERT(txn_active_);
    results_.clear();
    for (const Slot& s : slots_) {
        RM_ASSERT(s.mark == Mark::final);  // every recipient answered exactly once
        results_.push_back({s.outcome,
                            s.code,
                            {texts_.data() + s.status_off, s.status_len},
                            {texts_.data() + s.text_off, s.text_len}});
    }
    txn_active_ = false;
    push_event(ClientEvent::transaction_done);
}

// --- message text ------------------------------------------------------------------------

bool ClientSession::wants_body() const {
    return phase_ == ClientPhase::body && !body_failed_;
}

size_t ClientSession::body_chunk(std::string_view text, bool last) {
    if (!wants_body()) {
        RM_ASSERT(phase_ != ClientPhase::envelope);  // text before body_wanted: driver bug
        return text.size();  // the transaction failed or ended: the text is not wanted
    }
    if (use_bdat_) return write_bdat(text, last);
    const size_t n = stuff_text(text, last ? 5 : 0);
    if (last && n == text.size()) {
        const bool ended = body_end();
        RM_ASSERT(ended);  // room for the terminator was reserved
    }
    return n;
}

// RFC 5321 §4.5.2: a line of text starting with '.' gets one more '.'. The text comes from
// our spool with CRLF line ends, so a line starts after every LF, also across chunks.
size_t ClientSession::stuff_text(std::string_view text, size_t reserve) {
    size_t i = 0;
    while (i < text.size()) {
        const size_t room = output_room() > reserve ? output_room() - reserve : 0;
        if (line_start_ && text[i] == '.') {
            if (room < 2) break;
            write("..");
            ++i;
            line_start_ = false;
            continue;
        }
        if (room == 0) break;
        const auto* lf =
            static_cast<const char*>(std::memchr(text.data() + i, '\n', text.size() - i));
        const size_t run_end =
            lf != nullptr ? static_cast<size_t>(lf - text.data()) + 1 : text.size();
        const size_t n = std::min(run_end - i, room);
        write(text.substr(i, n));
        i += n;
        line_start_ = text[i - 1] == '\n';
    }
    if (i >= 2) {
        last2_[0] = text[i - 2];
        last2_[1] = text[i - 1];
    } else if (i == 1) {
        last2_[0] = last2_[1];
        last2_[1] = text[0];
    }
    text_bytes_ += i;
    return i;
}

size_t ClientSession::write_bdat(std::string_view text, bool last) {
    // RFC 3030 §4.2: BDAT chunks may follow each other unanswered only with PIPELINING.
    if (!pipelining_ && pending_count_ > 0) return 0;
    if (pending_full() || output_room() <= kBdatHeaderBytes) return 0;
    const size_t n = std::min(text.size(), output_room() - kBdatHeaderBytes);
    if (n == 0 && !last) return 0;
    const bool is_last = last && n == text.size();
    char count[24];
    const auto r = std::to_chars(count, count + sizeof count, n);
    write_line({"BDAT ", {count, static_cast<size_t>(r.ptr - count)}, is_last ? " LAST" : ""});
    write(text.substr(0, n));
    push_pending(is_last ? Cmd::bdat_last : Cmd::bdat);
    text_bytes_ += n;
    if (is_last) enter(ClientPhase::data_end);
    return n;
}

bool ClientSession::body_end() {
    if (!wants_body()) return true;  // already ended, or the text is not wanted
    if (use_bdat_) return write_bdat({}, true) == 0 && phase_ == ClientPhase::data_end;
    const bool ends_crlf = text_bytes_ == 0 || (last2_[0] == '\r' && last2_[1] == '\n');
    const std::string_view end = ends_crlf ? std::string_view(".\r\n") : "\r\n.\r\n";
    if (output_room() < end.size()) return false;
    write(end);
    push_pending(Cmd::dot);
    enter(ClientPhase::data_end);
    return true;
}

// --- outcomes ----------------------------------------------------------------------------

ClientSession::TextRef ClientSession::keep_reply() {
    std::string_view status = parser_.enhanced();
    const char derived[6] = {static_cast<char>('0' + last_code_ / 100), '.', '0', '.', '0', 0};
    if (status.empty()) status = {derived, 5};
    TextRef r{last_code_, 0, 0, 0, 0};
    r.status_off = static_cast<uint32_t>(texts_.size());
    r.status_len = static_cast<uint32_t>(status.size());
    texts_.append(status);
    r.text_off = static_cast<uint32_t>(texts_.size());
    r.text_len = static_cast<uint32_t>(last_len_);
    texts_.append(last_text_, last_len_);
    return r;
}

ClientSession::TextRef ClientSession::keep_local(std::string_view status, std::string_view text) {
    TextRef r{0, 0, 0, 0, 0};
    r.status_off = static_cast<uint32_t>(texts_.size());
    r.status_len = static_cast<uint32_t>(status.size());
    texts_.append(status);
    text = text.substr(0, client_reply_text_max_bytes);
    r.text_off = static_cast<uint32_t>(texts_.size());
    r.text_len = static_cast<uint32_t>(text.size());
    texts_.append(text);
    return r;
}

void ClientSession::settle(Slot& s, const TextRef& r, RcptOutcome o) {
    if (s.mark == Mark::final) return;  // the first final outcome wins
    if (s.mark == Mark::accepted) {
        RM_ASSERT(accepted_ > 0);
        --accepted_;
    }
    s.mark = Mark::final;
    s.outcome = o;
    s.code = r.code;
    s.status_off = r.status_off;
    s.status_len = r.status_len;
    s.text_off = r.text_off;
    s.text_len = r.text_len;
}

void ClientSession::settle_open(const TextRef& r, RcptOutcome o) {
    for (Slot& s : slots_) {
        if (s.mark == Mark::open) settle(s, r, o);
    }
}

void ClientSession::settle_accepted(const TextRef& r, RcptOutcome o) {
    for (Slot& s : slots_) {
        if (s.mark == Mark::accepted) settle(s, r, o);
    }
}

void ClientSession::fail(const char* why, std::string_view status) {
    if (phase_ == ClientPhase::done) return;
    error_ = why;
    if (txn_active_) {
        // Accepted recipients whose end-of-message answer never came are deferred too: a
        // retry may deliver twice, which at-least-once delivery allows; losing them is not.
        const TextRef r = keep_local(status, why);
        for (Slot& s : slots_)
            settle(s, r, RcptOutcome::deferred);
        publish_results();
    }
    enter(ClientPhase::done);
    push_event(ClientEvent::protocol_error);
}

// --- the driver's decisions --------------------------------------------------------------

void ClientSession::quit() {
    if (phase_ == ClientPhase::ready) {
        write_line({"QUIT"});
        push_pending(Cmd::quit);
        return enter(ClientPhase::quit);
    }
    if (phase_ == ClientPhase::init || phase_ == ClientPhase::quit || phase_ == ClientPhase::done)
        return;
    if (txn_active_) {
        const TextRef r = keep_local("4.3.2", "delivery stopped by the relay");
        for (Slot& s : slots_)
            settle(s, r, RcptOutcome::deferred);
        publish_results();
    }
    enter(ClientPhase::done);
    push_event(ClientEvent::closed);
}

void ClientSession::timeout() {
    if (phase_ == ClientPhase::init || phase_ == ClientPhase::done) return;
    if (phase_ == ClientPhase::quit) {
        enter(ClientPhase::done);
        return push_event(ClientEvent::closed);
    }
    fail("timeout waiting for the server", "4.4.2");
}

void ClientSession::peer_closed() {
    if (phase_ == ClientPhase::init || phase_ == ClientPhase::done) return;
    const bool idle = phase_ == ClientPhase::ready && !parser_.mid_reply();
    if (phase_ == ClientPhase::quit || idle) {
        enter(ClientPhase::done);
        return push_event(ClientEvent::closed);
    }
    fail(parser_.mid_reply() ? "connection closed in the middle of a reply"
                             : "connection closed by the server",
         "4.4.2");
}

}  // namespace ringmail::smtp
