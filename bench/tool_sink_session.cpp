// tool_sink_session.cpp — see tool_sink_session.hpp.
#include "bench/tool_sink_session.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "core/base/log.hpp"
#include "net/smtp/smtp_command.hpp"

namespace ringmail::bench {
namespace {

// Salts that keep the draws for different decisions independent.
constexpr uint64_t kSaltRcpt = 0x72637074;
constexpr uint64_t kSaltData = 0x64617461;

}  // namespace

SeqSet::SeqSet(uint64_t expect)
    : bits_((expect + 63) / 64 * 64), words_(new std::atomic<uint64_t>[bits_ / 64]) {
    for (uint64_t i = 0; i < bits_ / 64; i++)
        words_[i].store(0, std::memory_order_relaxed);
}

bool SeqSet::insert(uint64_t seq) {
    if (seq < bits_) {
        uint64_t bit = uint64_t{1} << (seq % 64);
        return (words_[seq / 64].fetch_or(bit, std::memory_order_relaxed) & bit) == 0;
    }
    std::lock_guard<std::mutex> lock(mu_);
    return overflow_.insert(seq).second;
}

std::vector<uint64_t> SeqSet::members() {
    std::vector<uint64_t> out;
    for (uint64_t w = 0; w < bits_ / 64; w++) {
        uint64_t word = words_[w].load(std::memory_order_relaxed);
        for (; word != 0; word &= word - 1)
            out.push_back(w * 64 + static_cast<uint64_t>(__builtin_ctzll(word)));
    }
    std::lock_guard<std::mutex> lock(mu_);
    size_t low = out.size();
    out.insert(out.end(), overflow_.begin(), overflow_.end());
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(low), out.end());
    return out;
}

SinkSession::SinkSession(const SinkOptions& opt, SinkCounters& counters, SeqSet* seen)
    : opt_(opt), counters_(counters), seen_(seen) {}

double SinkSession::draw(uint64_t salt, uint64_t key) const {
    return unit_interval(splitmix64(splitmix64(opt_.seed ^ salt) ^ key));
}

void SinkSession::start(bool refuse) {
    phase_ = Phase::command;
    greeted_ = mail_ = close_ = abort_ = false;
    line_len_ = out_len_ = ngates_ = 0;
    line_overflow_ = false;
    reset_transaction();
    if (refuse) {
        counters_.refused_sessions.add();
        put("421 4.7.0 Too many sessions\r\n");
        close_ = true;
        return;
    }
    counters_.sessions.add();
    put("220 ");
    put(opt_.hostname);
    put(" ESMTP ringmail-bench sink\r\n");
}

void SinkSession::put(std::string_view s) {
    RM_ASSERT(out_len_ + s.size() <= kOutBytes);
    memcpy(out_ + out_len_, s.data(), s.size());
    out_len_ += s.size();
}

std::string_view SinkSession::output() const {
    size_t end = ngates_ ? gates_[0].start : out_len_;
    return {out_, end};
}

void SinkSession::output_sent(size_t n) {
    RM_ASSERT(n <= output().size());
    memmove(out_, out_ + n, out_len_ - n);
    out_len_ -= n;
    for (size_t i = 0; i < ngates_; i++)
        gates_[i].start -= n;
}

void SinkSession::release_held(uint64_t now_ms) {
    size_t k = 0;
    while (k < ngates_ && gates_[k].until_ms <= now_ms)
        k++;
    memmove(gates_, gates_ + k, (ngates_ - k) * sizeof(Gate));
    ngates_ -= k;
}

size_t SinkSession::feed(std::string_view in, uint64_t now_ms) {
    size_t used = 0;
    while (used < in.size()) {
        if (close_) return in.size();  // after QUIT, 421 or a drop: nothing more is read
        std::string_view rest = in.substr(used);
        size_t n = phase_ == Phase::command ? feed_command(rest, now_ms)
                   : phase_ == Phase::data  ? feed_data(rest, now_ms)
                                            : feed_bdat(rest, now_ms);
        if (n == 0) break;  // output full
        used += n;
    }
    return used;
}

// --- commands ----------------------------------------------------------------------------

size_t SinkSession::feed_command(std::string_view in, uint64_t now_ms) {
    size_t used = 0;
    while (used < in.size() && phase_ == Phase::command && !close_) {
        if (sizeof out_ - out_len_ < kReplyMaxBytes) return used;
        std::string_view rest = in.substr(used);
        size_t lf = rest.find('\n');
        if (lf == std::string_view::npos) {
            size_t k = std::min(rest.size(), kLineMaxBytes - line_len_);
            memcpy(line_ + line_len_, rest.data(), k);
            line_len_ += k;
            line_overflow_ |= k < rest.size();
            return in.size();
        }
        std::string_view line = rest.substr(0, lf);
        if (line_len_ > 0 || line_overflow_) {
            size_t k = std::min(line.size(), kLineMaxBytes - line_len_);
            memcpy(line_ + line_len_, line.data(), k);
            line_len_ += k;
            line_overflow_ |= k < line.size();
            line = std::string_view(line_, line_len_);
        }
        used += lf + 1;
        bool overflow = line_overflow_;
        line_len_ = 0;
        line_overflow_ = false;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (overflow) {
            put("500 5.5.2 Line too long\r\n");
            continue;
        }
        execute(line, now_ms);
    }
    return used;
}

void SinkSession::execute(std::string_view line, uint64_t now_ms) {
    size_t sp = line.find(' ');
    std::string_view word = line.substr(0, sp);
    std::string_view args = sp == std::string_view::npos ? "" : line.substr(sp + 1);
    const smtp::VerbInfo* v = smtp::find_verb(word);
    switch (v ? v->verb : smtp::Verb::unknown) {
        case smtp::Verb::ehlo:
            return do_ehlo(args, true);
        case smtp::Verb::helo:
            return do_ehlo(args, false);
        case smtp::Verb::mail:
            if (!greeted_) return put("503 5.5.1 Error: send HELO/EHLO first\r\n");
            if (mail_) return put("503 5.5.1 Error: nested MAIL command\r\n");
            mail_ = true;
            return put("250 2.1.0 Ok\r\n");
        case smtp::Verb::rcpt:
            return do_rcpt(args);
        case smtp::Verb::data:
            if (!mail_) return put("503 5.5.1 Error: need MAIL command\r\n");
            if (rcpts_ok_ == 0) {
                counters_.no_valid_rcpt.add();
                reset_transaction();
                return put("554 5.5.1 Error: no valid recipients\r\n");
            }
            phase_ = Phase::data;
            data_state_ = DataState::line_start;
            verifier_.begin();
            msg_bytes_ = 0;
            return put("354 End data with <CR><LF>.<CR><LF>\r\n");
        case smtp::Verb::bdat:
            return do_bdat(args, now_ms);
        case smtp::Verb::rset:
            reset_transaction();
            return put("250 2.0.0 Ok\r\n");
        case smtp::Verb::noop:
            return put("250 2.0.0 Ok\r\n");
        case smtp::Verb::quit:
            put("221 2.0.0 Bye\r\n");
            close_ = true;
            return;
        default:
            return put("502 5.5.2 Error: command not recognized\r\n");
    }
}

void SinkSession::do_ehlo(std::string_view args, bool esmtp) {
    reset_transaction();
    greeted_ = true;
    if (args.empty()) return put("501 5.5.4 Syntax: EHLO hostname\r\n");
    if (!esmtp) {
        put("250 ");
        put(opt_.hostname);
        return put("\r\n");
    }
    char size[48];
    snprintf(size, sizeof size, "SIZE %llu", static_cast<unsigned long long>(opt_.size_max_bytes));
    std::string_view lines[6];
    size_t n = 0;
    lines[n++] = opt_.hostname;
    if (opt_.pipelining) lines[n++] = "PIPELINING";
    if (opt_.size) lines[n++] = size;
    lines[n++] = "8BITMIME";
    lines[n++] = "ENHANCEDSTATUSCODES";
    if (opt_.chunking) lines[n++] = "CHUNKING";
    for (size_t i = 0; i < n; i++) {
        put(i + 1 < n ? "250-" : "250 ");
        put(lines[i]);
        put("\r\n");
    }
}

void SinkSession::do_rcpt(std::string_view args) {
    if (!mail_) return put("503 5.5.1 Error: need MAIL command\r\n");
    size_t lt = args.find('<'), gt = args.find('>');
    std::string_view addr = lt != std::string_view::npos && gt != std::string_view::npos && gt > lt
                                ? args.substr(lt + 1, gt - lt - 1)
                                : args;
    uint64_t key = fnv1a(addr);
    double r = draw(kSaltRcpt, key);
    if (r < opt_.rcpt_temp_fail) {
        counters_.rcpt_temp_fail.add();
        return put("450 4.2.1 Mailbox temporarily unavailable (scripted)\r\n");
    }
    if (r < opt_.rcpt_temp_fail + opt_.rcpt_perm_fail) {
        counters_.rcpt_perm_fail.add();
        return put("550 5.1.1 Mailbox unavailable (scripted)\r\n");
    }
    rcpts_ok_++;
    rcpt_hash_ = splitmix64(rcpt_hash_ ^ key);
    put("250 2.1.5 Ok\r\n");
}

// RFC 3030: "BDAT <size> [LAST]"; the chunk's octets follow the command line directly.
void SinkSession::do_bdat(std::string_view args, uint64_t now_ms) {
    uint64_t size = 0;
    auto [p, ec] = std::from_chars(args.data(), args.data() + args.size(), size);
    std::string_view tail(p, static_cast<size_t>(args.data() + args.size() - p));
    bool last = tail == " LAST" || tail == " last";
    if (ec != std::errc() || (!tail.empty() && !last) || !opt_.chunking) {
        // The chunk length is unknown: the stream cannot be followed any further.
        put("501 5.5.4 Syntax: BDAT size [LAST]\r\n");
        close_ = true;
        return;
    }
    if (!bdat_started_) {
        bdat_started_ = true;
        bdat_failed_ = !mail_ || rcpts_ok_ == 0;
        verifier_.begin();
        msg_bytes_ = 0;
    }
    bdat_last_ = last;
    chunk_left_ = size;
    phase_ = Phase::bdat;
    if (size == 0) (void)feed_bdat({}, now_ms);
}

size_t SinkSession::feed_bdat(std::string_view in, uint64_t now_ms) {
    if (sizeof out_ - out_len_ < kReplyMaxBytes) return 0;
    size_t k = static_cast<size_t>(std::min<uint64_t>(chunk_left_, in.size()));
    if (!bdat_failed_) content(in.substr(0, k));
    chunk_left_ -= k;
    if (chunk_left_ > 0) return k;
    phase_ = Phase::command;
    if (bdat_failed_) {
        if (bdat_last_) reset_transaction();
        put("554 5.5.1 Error: no valid recipients\r\n");
    } else if (bdat_last_) {
        end_message(now_ms);
    } else {
        put("250 2.0.0 Chunk accepted\r\n");
    }
    return k;
}

// --- message text ------------------------------------------------------------------------

// The CRLF.CRLF scanner (RFC 5321 §4.1.1.4) with dot-unstuffing (§4.5.2): content goes out in
// spans of `in`; a dot starting a line is skipped, and the CR after it is held back until the
// next byte shows whether it ends the message.
size_t SinkSession::feed_data(std::string_view in, uint64_t now_ms) {
    const size_t n = in.size();
    size_t i = 0, span = 0;
    while (i < n) {
        switch (data_state_) {
            case DataState::line_start:
                if (in[i] == '.') {
                    content(in.substr(span, i - span));
                    span = ++i;
                    data_state_ = DataState::dot;
                } else {
                    data_state_ = DataState::mid_line;
                }
                break;
            case DataState::mid_line: {
                const void* cr = memchr(in.data() + i, '\r', n - i);
                if (!cr) {
                    i = n;
                    break;
                }
                i = static_cast<size_t>(static_cast<const char*>(cr) - in.data()) + 1;
                data_state_ = DataState::cr;
                break;
            }
            case DataState::cr:
                if (in[i] == '\n') {
                    i++;
                    data_state_ = DataState::line_start;
                } else {
                    data_state_ = DataState::mid_line;
                }
                break;
            case DataState::dot:
                if (in[i] == '\r') {
                    content(in.substr(span, i - span));
                    span = ++i;
                    data_state_ = DataState::dot_cr;
                } else {
                    data_state_ = DataState::mid_line;
                }
                break;
            case DataState::dot_cr:
                if (in[i] != '\n') {
                    content("\r");  // ".\r" then something else: the CR was text after all
                    data_state_ = DataState::mid_line;
                    break;
                }
                if (sizeof out_ - out_len_ < kReplyMaxBytes) return i;
                end_message(now_ms);
                phase_ = Phase::command;
                return i + 1;
        }
    }
    content(in.substr(span, n - span));
    return n;
}

void SinkSession::content(std::string_view s) {
    if (s.empty()) return;
    msg_bytes_ += s.size();
    verifier_.feed(s);
}

void SinkSession::end_message(uint64_t now_ms) {
    BodyVerifier::Result res = verifier_.finish();
    counters_.bytes.add(msg_bytes_);
    if (opt_.verify && res == BodyVerifier::Result::corrupt) counters_.corrupt.add();
    if (opt_.verify && res == BodyVerifier::Result::missing) counters_.missing_header.add();
    // Decisions follow the message (its seq) rather than arrival order, so they repeat.
    uint64_t key = res == BodyVerifier::Result::missing ? rcpt_hash_ : verifier_.seq();
    double r = draw(kSaltData, key);
    uint32_t rcpts = rcpts_ok_;
    reset_transaction();
    if (r < opt_.drop_fraction) {
        counters_.dropped.add();
        close_ = abort_ = true;
        return;
    }
    r -= opt_.drop_fraction;
    size_t reply_start = out_len_;
    if (r < opt_.data_temp_fail) {
        counters_.data_temp_fail.add();
        put("451 4.3.0 Temporary failure (scripted)\r\n");
    } else if (r < opt_.data_temp_fail + opt_.data_perm_fail) {
        counters_.data_perm_fail.add();
        put("554 5.6.0 Message refused (scripted)\r\n");
    } else {
        if (opt_.verify && res == BodyVerifier::Result::ok) {
            counters_.verified.add();
            if (seen_ && !seen_->insert(verifier_.seq())) counters_.duplicates.add();
        }
        counters_.recipients.add(rcpts);
        counters_.messages.add();
        put("250 2.0.0 Ok: queued\r\n");
    }
    if (opt_.data_delay_ms == 0) return;
    uint64_t until = now_ms + opt_.data_delay_ms;
    if (ngates_ == kGates) {  // already held behind the last gate: just hold it longer
        gates_[kGates - 1].until_ms = std::max(gates_[kGates - 1].until_ms, until);
        return;
    }
    gates_[ngates_++] = Gate{reply_start, until};
}

void SinkSession::reset_transaction() {
    mail_ = false;
    bdat_started_ = bdat_failed_ = bdat_last_ = false;
    rcpts_ok_ = 0;
    rcpt_hash_ = 0;
    chunk_left_ = 0;
}

}  // namespace ringmail::bench
