// smtp_server.cpp — the SMTP server session state machine (contract in smtp_server.hpp).
//
// Called by the connection driver (net/inbound/connection.cpp) and by tests with a fake sink. Every
// input byte goes through exactly one of three scanners: command lines (feed_command), DATA
// text (feed_data / discard_data), or BDAT chunk octets (feed_chunk). The phase says which.
// Replies are appended to a fixed buffer; feed() stops while less than kReplyHeadroomBytes are
// free, and no single step writes more than that, so out_ never overflows.
#include "net/smtp/smtp_server.hpp"

#include <strings.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <ctime>
#include <optional>

#include "core/base/assert.hpp"
#include "net/smtp/address.hpp"
#include "net/smtp/smtp_command.hpp"

namespace ringmail::smtp {
namespace {

// The largest output one step may produce: a reply naming a 256-octet path plus a 421 naming
// a 255-octet hostname, or a DATA end reply plus a deferred 421 (see put()).
constexpr size_t kReplyHeadroomBytes = 1024;
static_assert(limits::session_output_bytes >= 2 * kReplyHeadroomBytes);
constexpr size_t kHeloShownMaxBytes = 128;  // in the Received header
// Nothing is reserved up front: an idle connection costs only its fixed buffers (issue 5's
// budget is 16 KiB per idle connection). The first message grows these and they keep their
// capacity, so later messages allocate nothing.
constexpr size_t kArenaReserveBytes = 0;
constexpr size_t kRcptReserve = 0;
constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kEndOfData = "\r\n.\r\n";

std::string_view trim_spaces(std::string_view s) {
    while (!s.empty() && s.front() == ' ')
        s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ')
        s.remove_suffix(1);
    return s;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// tls/auth.hpp replies end in CRLF; put() adds its own.
std::string_view without_crlf(std::string_view reply) {
    if (reply.size() >= 2 && reply.substr(reply.size() - 2) == kCrlf) reply.remove_suffix(2);
    return reply;
}

// Copies printable ASCII only (the text goes into a header line).
size_t copy_printable(std::string_view in, char* out, size_t cap) {
    const size_t n = std::min(in.size(), cap);
    for (size_t i = 0; i < n; ++i) {
        const auto c = static_cast<unsigned char>(in[i]);
        out[i] = c > 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
    }
    return n;
}

// Decimal digits only; a value past 64 bits saturates (a huge SIZE is simply too big).
std::optional<uint64_t> parse_decimal(std::string_view s) {
    if (s.empty()) return std::nullopt;
    uint64_t v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto d = static_cast<uint64_t>(c - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    return v;
}

// A decimal that must fit in 64 bits: nothing on overflow.
std::optional<uint64_t> parse_u64(std::string_view s) {
    if (s.empty()) return std::nullopt;
    uint64_t v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto d = static_cast<uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return std::nullopt;
        v = v * 10 + d;
    }
    return v;
}

// The bytes of CRLF.CRLF already seen when the scanner gives up in a given state.
uint8_t end_match_for(uint8_t state_index) {
    constexpr uint8_t kMatch[] = {2, 0, 1, 3, 4};  // line_start, mid_line, cr, dot, dot_cr
    return kMatch[state_index];
}

// RFC 5322 §3.3 date-time in UTC: "Tue, 02 Jan 2024 03:04:05 +0000".
size_t format_date(int64_t unix_time_s, char (&out)[40]) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const auto t = static_cast<time_t>(unix_time_s);
    tm g{};
    if (gmtime_r(&t, &g) == nullptr) g = tm{.tm_mday = 1, .tm_year = 70, .tm_wday = 4};
    const int n = std::snprintf(out, sizeof out, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                                kDays[g.tm_wday % 7], g.tm_mday, kMonths[g.tm_mon % 12],
                                g.tm_year + 1900, g.tm_hour, g.tm_min, g.tm_sec);
    RM_ASSERT(n > 0 && static_cast<size_t>(n) < sizeof out);
    return static_cast<size_t>(n);
}

// A bounded appender over a fixed buffer; overflow is a bug.
struct Writer {
    char* buf;
    size_t cap;
    size_t len = 0;
    void add(std::string_view s) {
        RM_ASSERT(len + s.size() <= cap);
        std::memcpy(buf + len, s.data(), s.size());
        len += s.size();
    }
};

// The index of the first offending byte: an LF not preceded by CR, or the byte after a CR that
// is not an LF; continues from the previous chunk's last byte (prev_cr); npos when clean.
size_t find_bare_crlf(std::string_view s, bool& prev_cr) {
    const char* p = s.data();
    const size_t n = s.size();
    size_t i = 0;
    if (n > 0 && prev_cr) {
        if (p[0] != '\n') return 0;
        prev_cr = false;
        i = 1;
    }
    while (i < n) {  // line by line: each LF must have its CR just before it, and no other CR
        const auto* lf = static_cast<const char*>(std::memchr(p + i, '\n', n - i));
        const size_t end = lf != nullptr ? static_cast<size_t>(lf - p) : n;
        const auto* cr = static_cast<const char*>(std::memchr(p + i, '\r', end - i));
        const size_t cr_at = cr != nullptr ? static_cast<size_t>(cr - p) : end;
        if (lf == nullptr) {
            if (cr == nullptr) return std::string_view::npos;
            if (cr_at + 1 < n) return cr_at + 1;
            prev_cr = true;  // the LF may start the next chunk
            return std::string_view::npos;
        }
        if (cr == nullptr) return end;
        if (cr_at + 1 != end) return cr_at + 1;
        i = end + 1;
    }
    return std::string_view::npos;
}

enum class ParamCheck : uint8_t { ok, unsupported, bad_value, too_big };

struct MailParams {
    bool smtputf8 = false;
    std::string_view bad;  // the offending parameter
};

// RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8.
ParamCheck check_mail_param(std::string_view kv, uint64_t size_max, MailParams& mp) {
    const size_t eq = kv.find('=');
    const std::string_view key = kv.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : kv.substr(eq + 1);
    if (iequals(key, "SIZE")) {
        const auto n = parse_decimal(value);
        if (!n) return ParamCheck::bad_value;
        return *n > size_max ? ParamCheck::too_big : ParamCheck::ok;
    }
    if (iequals(key, "BODY")) {
        return iequals(value, "7BIT") || iequals(value, "8BITMIME") ? ParamCheck::ok
                                                                    : ParamCheck::bad_value;
    }
    if (iequals(key, "SMTPUTF8") && eq == std::string_view::npos) {
        mp.smtputf8 = true;
        return ParamCheck::ok;
    }
    return ParamCheck::unsupported;
}

// RFC 3461 NOTIFY and ORCPT, accepted syntactically for forward compatibility.
ParamCheck check_rcpt_param(std::string_view kv) {
    const size_t eq = kv.find('=');
    if (eq == std::string_view::npos || eq + 1 == kv.size()) return ParamCheck::unsupported;
    const std::string_view key = kv.substr(0, eq);
    const std::string_view value = kv.substr(eq + 1);
    if (iequals(key, "NOTIFY")) return ParamCheck::ok;
    if (iequals(key, "ORCPT"))
        return value.find(';') != std::string_view::npos ? ParamCheck::ok : ParamCheck::bad_value;
    return ParamCheck::unsupported;
}

// Walks space-separated "KEY[=VALUE]" parameters; stops at the first that is not ok.
template <typename Check>
ParamCheck check_params(std::string_view params, std::string_view& bad, Check check) {
    while (!params.empty()) {
        const size_t sp = params.find(' ');
        const std::string_view kv = params.substr(0, sp);
        params = sp == std::string_view::npos ? "" : trim_spaces(params.substr(sp + 1));
        const ParamCheck r = check(kv);
        if (r != ParamCheck::ok) {
            bad = kv;
            return r;
        }
    }
    return ParamCheck::ok;
}

}  // namespace

void format_queue_id(uint64_t id, char (&out)[16]) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
        out[i] = kHex[id & 0xf];
        id >>= 4;
    }
}

ServerSession::ServerSession(const ServerSettings& settings, MessageSink& sink)
    : settings_(settings), sink_(sink) {
    arena_.reserve(kArenaReserveBytes);
    rcpts_.reserve(kRcptReserve);
    rcpt_views_.reserve(kRcptReserve);
}

// --- state -----------------------------------------------------------------------------------

void ServerSession::enter(Phase next) {
    // The legal transitions; anything else is a bug in this file.
    bool legal = false;
    switch (phase_) {
        case Phase::idle:
            legal = next == Phase::command || next == Phase::closed;
            break;
        case Phase::command:
            legal = next != Phase::idle;
            break;
        case Phase::data:
        case Phase::bdat_chunk:
            legal = next == Phase::command || next == Phase::commit_wait || next == Phase::closed;
            break;
        case Phase::commit_wait:
        case Phase::tls_wait:
        case Phase::auth_wait:
            legal = next == Phase::command || next == Phase::closed;
            break;
        case Phase::auth_line:
            legal = next == Phase::command || next == Phase::auth_line ||
                    next == Phase::auth_wait || next == Phase::closed;
            break;
        case Phase::closed:
            legal = next == Phase::closed;
            break;
    }
    RM_ASSERT(legal);
    phase_ = next;
}

void ServerSession::start(const ClientInfo& client) {
    reset(client);
    put({"220 ", settings_.hostname, " ESMTP ringmail"});
    greeting_unsent_ = true;
    enter(Phase::command);
}

void ServerSession::reset(const ClientInfo& client) {
    RM_ASSERT(settings_.relay != nullptr);
    RM_ASSERT(settings_.hostname.size() <= limits::domain_max_bytes);
    RM_ASSERT(phase_ != Phase::commit_wait);  // commit_done first: envelope views would dangle
    if (message_active_) {
        sink_.message_abort();
        message_active_ = false;
    }
    phase_ = Phase::idle;
    out_len_ = 0;
    close_ = false;
    pending_close_ = PendingClose::none;
    client_trusted_ = client.relay_allowed;
    greeted_ = esmtp_ = false;
    junk_count_ = 0;
    helo_len_ = 0;
    line_len_ = 0;
    discarding_line_ = false;
    client_addr_len_ = std::min(client.addr_text.size(), sizeof client_addr_);
    std::memcpy(client_addr_, client.addr_text.data(), client_addr_len_);
    reset_transaction();
    greeting_unsent_ = false;
    submission_ = client.submission;
    tls_ = authenticated_ = auth_checking_ = false;
    auth_.reset();
    tls_version_len_ = tls_cipher_len_ = 0;
}

void ServerSession::refuse(std::string_view reply_line) {
    if (greeting_unsent_ || phase_ == Phase::idle || phase_ == Phase::closed) out_len_ = 0;
    if (reply_line.size() >= 2 && reply_line.substr(reply_line.size() - 2) == kCrlf)
        reply_line.remove_suffix(2);
    put({reply_line});
    close_session();
}

void ServerSession::pregreet_violation() {
    // The greeting was held back (the driver delays it); the bot never gets it.
    if (greeting_unsent_ || phase_ == Phase::idle || phase_ == Phase::closed) out_len_ = 0;
    close_with({"554 5.5.1 Error: talking before the greeting"});
}

void ServerSession::output_sent(size_t n) {
    RM_ASSERT(n <= out_len_);
    if (n > 0) greeting_unsent_ = false;
    std::memmove(out_, out_ + n, out_len_ - n);
    out_len_ -= n;
}

bool ServerSession::waiting_commit() const {
    return phase_ == Phase::commit_wait;
}

bool ServerSession::in_data() const {
    return phase_ == Phase::data || phase_ == Phase::bdat_chunk;
}

void ServerSession::put(std::initializer_list<std::string_view> parts) {
    size_t n = kCrlf.size();
    for (const auto p : parts)
        n += p.size();
    RM_ASSERT(n <= output_room());  // the headroom rule makes this unreachable
    for (const auto p : parts) {
        std::memcpy(out_ + out_len_, p.data(), p.size());
        out_len_ += p.size();
    }
    std::memcpy(out_ + out_len_, kCrlf.data(), kCrlf.size());
    out_len_ += kCrlf.size();
}

// Persistent errors end the connection (smtp.md: "count, limit, reply, then disconnect";
// Exim CVE-2020-28017 was an unbounded flood).
void ServerSession::reject(std::initializer_list<std::string_view> parts) {
    put(parts);
    if (++junk_count_ > settings_.junk_commands_max)
        close_with({"421 4.7.0 ", settings_.hostname, " Error: too many errors"});
}

void ServerSession::put_refusal(Refusal r) {
    switch (r) {
        case Refusal::none:
            RM_ASSERT(false);
            break;
        case Refusal::bad_sequence:
            reject({"503 5.5.1 Error: BDAT needs MAIL and RCPT first"});
            break;
        case Refusal::bare_crlf:
            put({"550 5.6.11 Message contains bare CR or LF; refused (SMTP smuggling defence)"});
            break;
        case Refusal::too_big:
            put({"552 5.3.4 Message size exceeds fixed maximum message size"});
            break;
        case Refusal::no_storage:
            put({"452 4.3.1 Insufficient system storage"});
            break;
    }
}

void ServerSession::close_with(std::initializer_list<std::string_view> parts) {
    put(parts);
    close_session();
}

void ServerSession::close_session() {
    auth_.reset();  // a LOGIN exchange may hold a username
    if (phase_ != Phase::commit_wait) {
        reset_transaction();
        enter(Phase::closed);
    }
    close_ = true;
}

void ServerSession::timeout() {
    if (close_) return;
    if (phase_ == Phase::commit_wait) {
        pending_close_ = PendingClose::timeout;  // the message is the spool's now; reply first
        return;
    }
    close_with({"421 4.4.2 ", settings_.hostname, " Error: timeout exceeded"});
}

void ServerSession::shutdown() {
    if (close_) return;
    if (phase_ == Phase::commit_wait) {
        pending_close_ = PendingClose::shutdown;
        return;
    }
    close_with({"421 4.3.2 ", settings_.hostname, " Service shutting down"});
}

void ServerSession::peer_closed() {
    close_ = true;
    if (phase_ == Phase::commit_wait) return;  // handed to message_end: commit_done follows
    reset_transaction();
    enter(Phase::closed);
}

void ServerSession::commit_done(CommitResult r) {
    RM_ASSERT(phase_ == Phase::commit_wait);
    RM_ASSERT(!message_active_);
    reset_transaction();
    if (close_) {
        enter(Phase::closed);
        return;
    }
    char id[16];
    format_queue_id(queue_id_, id);
    switch (r) {
        case CommitResult::ok:
            put({"250 2.0.0 Ok: queued as ", std::string_view(id, sizeof id)});
            break;
        case CommitResult::failed:
            put({"451 4.3.0 Error: queue file write error"});
            break;
        case CommitResult::no_space:
            put({"452 4.3.1 Insufficient system storage"});
            break;
    }
    enter(Phase::command);
    if (pending_close_ == PendingClose::timeout) timeout();
    if (pending_close_ == PendingClose::shutdown) shutdown();
}

// --- transaction -----------------------------------------------------------------------------

void ServerSession::reset_transaction() {
    RM_ASSERT(phase_ != Phase::commit_wait || !message_active_);
    if (message_active_) {
        sink_.message_abort();
        message_active_ = false;
    }
    mail_active_ = smtputf8_ = false;
    mail_from_ = mail_params_ = Slice{};
    rcpts_.clear();
    rcpt_views_.clear();
    arena_.clear();
    body_bytes_ = 0;
    body_error_ = Refusal::none;
    data_state_ = DataState::line_start;
    end_match_ = 0;
    bdat_mode_ = chunk_last_ = chunk_prev_cr_ = false;
    chunk_size_ = chunk_remaining_ = 0;
    chunk_refusal_ = Refusal::none;
}

ServerSession::Slice ServerSession::stash(std::string_view s) {
    RM_ASSERT(!message_active_);  // views handed to the sink point into the arena
    const Slice r{static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(s.size())};
    arena_.append(s);
    return r;
}

bool ServerSession::begin_message() {
    rcpt_views_.clear();
    for (const RcptSlice& r : rcpts_)
        rcpt_views_.push_back({view(r.address), view(r.params)});
    const Envelope env{
        .helo = {helo_, helo_len_},
        .protocol = protocol(),
        .mail_from = view(mail_from_),
        .mail_params = view(mail_params_),
        .rcpts = rcpt_views_,
    };
    const MessageSink::Start s = sink_.message_begin(env);
    if (s.id == 0) return false;
    queue_id_ = s.id;
    message_active_ = true;
    body_bytes_ = 0;
    body_error_ = Refusal::none;
    build_received(s.unix_time_s);
    if (!sink_.message_body({received_, received_len_})) fail_message(Refusal::no_storage);
    return true;
}

// RFC 5321 §4.4 trace header. The HELO text is client-controlled: only printable ASCII
// survives, so it can never end the header line and inject one of its own.
void ServerSession::build_received(int64_t unix_time_s) {
    char helo[kHeloShownMaxBytes];
    const size_t helo_n = std::min(helo_len_, sizeof helo);
    for (size_t i = 0; i < helo_n; ++i) {
        const auto c = static_cast<unsigned char>(helo_[i]);
        helo[i] = c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?';
    }
    char id[16];
    format_queue_id(queue_id_, id);
    char date[40];
    const size_t date_n = format_date(unix_time_s, date);
    Writer w{received_, sizeof received_};
    w.add("Received: from ");
    w.add({helo, helo_n});
    w.add(" ([");
    w.add({client_addr_, client_addr_len_});
    w.add("])\r\n\tby ");
    w.add(settings_.hostname);
    w.add(" (ringmail) with ");
    w.add(protocol());
    w.add(" id ");
    w.add({id, sizeof id});
    if (tls_) {
        w.add("\r\n\t(using ");
        w.add({tls_version_, tls_version_len_});
        w.add(" with cipher ");
        w.add({tls_cipher_, tls_cipher_len_});
        w.add(")");
    }
    if (rcpts_.size() == 1) {
        w.add("\r\n\tfor <");
        w.add(view(rcpts_.front().address));
        w.add(">");
    }
    w.add("; ");
    w.add({date, date_n});
    w.add(kCrlf);
    received_len_ = w.len;
}

// RFC 3848 transmission types for the Received "with" clause.
std::string_view ServerSession::protocol() const {
    if (!esmtp_) return "SMTP";
    if (tls_) return authenticated_ ? "ESMTPSA" : "ESMTPS";
    return authenticated_ ? "ESMTPA" : "ESMTP";
}

void ServerSession::fail_message(Refusal r) {
    RM_ASSERT(r != Refusal::none);
    if (body_error_ == Refusal::none) body_error_ = r;
    if (message_active_) {
        sink_.message_abort();
        message_active_ = false;
    }
}

// --- input -----------------------------------------------------------------------------------

size_t ServerSession::feed(std::string_view in) {
    RM_ASSERT(phase_ != Phase::idle);
    size_t used = 0;
    while (used < in.size() && !close_) {
        const std::string_view rest = in.substr(used);
        size_t n = 0;
        switch (phase_) {
            case Phase::command:
            case Phase::auth_line:
                n = feed_command(rest);
                break;
            case Phase::tls_wait:
                // RFC 3207 §4.2: what was pipelined after STARTTLS came in clear before the
                // handshake; running it afterwards would let an attacker inject commands into
                // the protected session (CVE-2011-0411). Consumed and dropped.
                return in.size();
            case Phase::data:
                n = feed_data(rest);
                break;
            case Phase::bdat_chunk:
                n = feed_chunk(rest);
                break;
            case Phase::idle:
            case Phase::commit_wait:
            case Phase::auth_wait:
            case Phase::closed:
                return used;
        }
        if (n == 0) break;  // output nearly full: the driver drains and feeds the rest again
        used += n;
    }
    return used;
}

size_t ServerSession::feed_command(std::string_view in) {
    if (output_room() < kReplyHeadroomBytes) return 0;
    const size_t lf = in.find('\n');
    if (discarding_line_) {
        if (lf == std::string_view::npos) {
            discarded_bytes_ += in.size();
            if (discarded_bytes_ >= limits::command_line_abandon_bytes) abandon_line();
            return in.size();
        }
        discarding_line_ = false;
        line_too_long();
        return lf + 1;
    }
    const size_t max = line_max(in);
    if (lf == std::string_view::npos) {
        // No line end yet. 512 octets without one can only be an overlong line (§4.5.3.1.4):
        // start discarding now so the buffer stays bounded, reply when the line ends.
        if (line_len_ + in.size() >= max) {
            discarded_bytes_ = line_len_ + in.size();
            line_len_ = 0;
            discarding_line_ = true;
            if (discarded_bytes_ >= limits::command_line_abandon_bytes) abandon_line();
        } else {
            std::memcpy(line_ + line_len_, in.data(), in.size());
            line_len_ += in.size();
        }
        return in.size();
    }
    const size_t take = lf + 1;
    if (line_len_ + take > max) {
        line_len_ = 0;
        line_too_long();
        return take;
    }
    std::string_view line = in.substr(0, take);
    if (line_len_ > 0) {
        std::memcpy(line_ + line_len_, in.data(), take);
        line = {line_, line_len_ + take};
        line_len_ = 0;
    }
    if (phase_ == Phase::auth_line) {
        auth_continue(line);
    } else {
        execute(line, take < in.size());
    }
    return take;
}

// The longest line accepted here: AUTH lines (and answers to its challenges) may be longer
// than other commands (RFC 4954 §4). The verb may be split across feeds: look at both parts.
size_t ServerSession::line_max(std::string_view in) const {
    if (phase_ == Phase::auth_line) return kAuthLineMaxBytes;
    constexpr std::string_view kAuth = "AUTH ";
    char head[kAuth.size()];
    const size_t a = std::min(line_len_, kAuth.size());
    std::memcpy(head, line_, a);
    const size_t b = std::min(kAuth.size() - a, in.size());
    std::memcpy(head + a, in.data(), b);
    const bool auth = a + b == kAuth.size() && iequals({head, kAuth.size()}, kAuth);
    return auth ? kAuthLineMaxBytes : limits::command_line_max_bytes;
}

void ServerSession::abandon_line() {
    discarding_line_ = false;
    if (phase_ == Phase::auth_line) {
        auth_.reset();
        enter(Phase::command);
    }
    close_with({"500 5.5.2 Error: line too long"});
}

void ServerSession::line_too_long() {
    if (phase_ == Phase::auth_line) {
        auth_.reset();
        enter(Phase::command);
        reject({without_crlf(tls::auth_reply_line_too_long)});
        return;
    }
    reject({"500 5.5.2 Error: line too long"});
}

void ServerSession::execute(std::string_view line, bool more_follows) {
    // A line ends in CRLF; a bare LF, a CR or a NUL inside is never a command (they could make
    // an envelope field carry structure: Exim CVE-2020-28021).
    if (line.size() < 2 || line[line.size() - 2] != '\r' ||
        line.substr(0, line.size() - 2).find_first_of(std::string_view("\r\0", 2)) !=
            std::string_view::npos) {
        reject({"501 5.5.2 Error: bare CR, LF or NUL in command line"});
        return;
    }
    line.remove_suffix(2);
    const size_t sp = line.find(' ');
    const std::string_view word = line.substr(0, sp);
    const std::string_view args =
        sp == std::string_view::npos ? std::string_view() : trim_spaces(line.substr(sp + 1));
    const VerbInfo* verb = find_verb(word);
    if (verb == nullptr) {
        reject({"500 5.5.2 Error: command not recognized"});
        return;
    }
    if (!verb->takes_argument && !args.empty()) {
        reject({"501 5.5.4 Syntax: ", verb->name, " takes no parameters"});
        return;
    }
    switch (verb->verb) {
        case Verb::ehlo:
            return do_hello(args, true);
        case Verb::helo:
            return do_hello(args, false);
        case Verb::mail:
            return do_mail(args);
        case Verb::rcpt:
            return do_rcpt(args);
        case Verb::data:
            return do_data(more_follows);
        case Verb::bdat:
            return do_bdat(args);
        case Verb::rset:
            return do_rset();
        case Verb::noop:
            return put({"250 2.0.0 Ok"});
        case Verb::quit:
            return do_quit();
        case Verb::vrfy:
            return put(
                {"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"});
        case Verb::help:
            return put({"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY"});
        case Verb::starttls:
            return do_starttls();
        case Verb::auth:
            return do_auth(args);
        case Verb::unknown:
            break;
    }
    RM_ASSERT(false);
}

// RFC 5321 §4.1.4: EHLO/HELO may come at any time and reset the transaction.
void ServerSession::do_hello(std::string_view args, bool esmtp) {
    if (args.empty()) {
        reject({"501 5.5.4 Syntax: ", esmtp ? "EHLO" : "HELO", " hostname"});
        return;
    }
    reset_transaction();
    bdat_failed_ = Refusal::none;
    std::memcpy(helo_, args.data(), args.size());  // args is shorter than a command line
    helo_len_ = args.size();
    greeted_ = true;
    esmtp_ = esmtp;
    if (!esmtp) {
        put({"250 ", settings_.hostname});
        return;
    }
    char size[24];
    const auto [end, ec] =
        std::to_chars(size, size + sizeof size, settings_.message_size_max_bytes);
    RM_ASSERT(ec == std::errc());
    // RFC 3207 §4.2: no STARTTLS once TLS is on; smtp.md: AUTH only over TLS (RFC 4954 §4).
    const std::string_view starttls =
        settings_.starttls_available && !tls_ ? "\r\n250-STARTTLS" : "";
    const std::string_view auth = settings_.auth_available && tls_ ? "\r\n250-AUTH " : "";
    const std::string_view mechanisms = auth.empty() ? "" : tls::auth_mechanisms;
    put({"250-", settings_.hostname, "\r\n250-PIPELINING\r\n250-SIZE ",
         std::string_view(size, static_cast<size_t>(end - size)),
         "\r\n250-8BITMIME\r\n250-SMTPUTF8", starttls, auth, mechanisms,
         "\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING"});
}

void ServerSession::do_starttls() {
    if (!settings_.starttls_available) return reject({"502 5.5.1 Error: command not implemented"});
    if (tls_) return reject({"503 5.5.1 Error: TLS already active"});
    if (mail_active_) return reject({"503 5.5.1 Error: MAIL transaction in progress"});
    put({"220 2.0.0 Ready to start TLS"});
    line_len_ = 0;
    discarding_line_ = false;
    enter(Phase::tls_wait);
}

void ServerSession::tls_started(std::string_view version, std::string_view cipher) {
    RM_ASSERT(!tls_ && !close_);
    RM_ASSERT(phase_ == Phase::tls_wait || (phase_ == Phase::command && !greeted_));
    tls_ = true;
    tls_version_len_ = copy_printable(version, tls_version_, sizeof tls_version_);
    tls_cipher_len_ = copy_printable(cipher, tls_cipher_, sizeof tls_cipher_);
    // RFC 3207 §4.2: forget all knowledge obtained from the client before TLS; it must send
    // EHLO again.
    greeted_ = esmtp_ = false;
    helo_len_ = 0;
    line_len_ = 0;
    discarding_line_ = false;
    reset_transaction();
    bdat_failed_ = Refusal::none;
    if (phase_ == Phase::tls_wait) enter(Phase::command);
}

void ServerSession::do_auth(std::string_view args) {
    if (!settings_.auth_available) return reject({"503 5.5.1 Error: authentication not enabled"});
    // smtp.md: never let a password cross the wire in clear.
    if (!tls_) return reject({without_crlf(tls::auth_reply_tls_required)});
    if (!esmtp_) return reject({"503 5.5.1 Error: send EHLO first"});
    if (authenticated_) return reject({"503 5.5.1 Error: already authenticated"});  // §4
    if (mail_active_) return reject({"503 5.5.1 Error: MAIL transaction in progress"});
    on_auth_step(auth_.start(args));
}

void ServerSession::auth_continue(std::string_view line) {
    line.remove_suffix(line.size() >= 2 && line[line.size() - 2] == '\r' ? 2 : 1);
    on_auth_step(auth_.resume(line));
}

void ServerSession::on_auth_step(const tls::AuthStep& step) {
    switch (step.action) {
        case tls::AuthAction::challenge:
            put({without_crlf(step.reply)});
            enter(Phase::auth_line);
            return;
        case tls::AuthAction::verify:
            auth_checking_ = false;
            enter(Phase::auth_wait);
            return;
        case tls::AuthAction::rejected:
            if (phase_ == Phase::auth_line) enter(Phase::command);
            // A cancel is the client's choice; a malformed exchange counts as junk.
            if (step.reply == tls::auth_reply_cancelled) return put({without_crlf(step.reply)});
            return reject({without_crlf(step.reply)});
    }
    RM_ASSERT(false);
}

void ServerSession::auth_check_started() {
    RM_ASSERT(wants_auth_check());
    auth_checking_ = true;
    auth_.reset();  // the driver holds the only copy now
}

void ServerSession::auth_result(AuthOutcome r) {
    if (phase_ != Phase::auth_wait) return;  // closed meanwhile (timeout, shutdown, peer)
    RM_ASSERT(auth_checking_);
    auth_checking_ = false;
    enter(Phase::command);
    switch (r) {
        case AuthOutcome::ok:
            authenticated_ = true;
            return put({without_crlf(tls::auth_reply_ok)});
        case AuthOutcome::failed:
            return put({without_crlf(tls::auth_reply_failed)});
        case AuthOutcome::temporary:
            return put({"454 4.7.0 Temporary authentication failure"});
        case AuthOutcome::too_many:
            return close_with(
                {"421 4.7.0 ", settings_.hostname, " Error: too many failed authentications"});
    }
    RM_ASSERT(false);
}

void ServerSession::do_mail(std::string_view args) {
    if (!greeted_) return reject({"503 5.5.1 Error: send HELO/EHLO first"});
    // RFC 6409 §4.3 / RFC 8314 §3.3: submission is for authenticated users, over TLS.
    if (submission_ && !tls_) return reject({"530 5.7.0 Must issue a STARTTLS command first"});
    if (submission_ && !authenticated_) return reject({"530 5.7.0 Authentication required"});
    if (mail_active_) return reject({"503 5.5.1 Error: nested MAIL command"});
    if (!istarts_with(args, "FROM:")) return reject({"501 5.5.4 Syntax: MAIL FROM:<address>"});
    const PathResult p = parse_path(args.substr(5), {.allow_null = true});
    if (p.status != PathStatus::ok) return reject({"501 5.1.3 Bad address syntax"});
    if (p.rest.size() > limits::mail_params_max_bytes)
        return reject({"501 5.5.4 Error: parameters too long"});
    MailParams mp;
    const ParamCheck pc = check_params(p.rest, mp.bad, [&](std::string_view kv) {
        return check_mail_param(kv, settings_.message_size_max_bytes, mp);
    });
    switch (pc) {
        case ParamCheck::ok:
            break;
        case ParamCheck::unsupported:
            return reject({"555 5.5.4 Unsupported option: ", mp.bad});
        case ParamCheck::bad_value:
            return reject({"501 5.5.4 Bad parameter value: ", mp.bad});
        case ParamCheck::too_big:  // RFC 1870 §6.2: refused at once, not after the upload
            return put({"552 5.3.4 Message size exceeds fixed maximum message size"});
    }
    // RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8 on this MAIL.
    if (p.path.utf8 && !mp.smtputf8)
        return reject({"553 5.6.7 Error: non-ASCII address requires SMTPUTF8"});
    reset_transaction();
    bdat_failed_ = Refusal::none;
    mail_active_ = true;
    smtputf8_ = mp.smtputf8;
    mail_from_ = stash(p.path.address);
    mail_params_ = stash(p.rest);
    put({"250 2.1.0 Ok"});
}

void ServerSession::do_rcpt(std::string_view args) {
    if (!mail_active_) return reject({"503 5.5.1 Error: need MAIL command"});
    if (bdat_mode_) return reject({"503 5.5.1 Error: RCPT after BDAT"});
    if (!istarts_with(args, "TO:")) return reject({"501 5.5.4 Syntax: RCPT TO:<address>"});
    const PathResult p = parse_path(args.substr(3), {.allow_postmaster = true});
    if (p.status != PathStatus::ok) return reject({"501 5.1.3 Bad address syntax"});
    if (p.rest.size() > limits::mail_params_max_bytes)
        return reject({"501 5.5.4 Error: parameters too long"});
    std::string_view bad;
    switch (check_params(p.rest, bad, check_rcpt_param)) {
        case ParamCheck::ok:
            break;
        case ParamCheck::unsupported:
        case ParamCheck::too_big:
            return reject({"555 5.5.4 Unsupported option: ", bad});
        case ParamCheck::bad_value:
            return reject({"501 5.5.4 Bad parameter value: ", bad});
    }
    if (p.path.utf8 && !smtputf8_)
        return reject({"553 5.6.7 Error: non-ASCII address requires SMTPUTF8"});
    // Not junk: a big list is legitimate; the client sends the rest in another transaction.
    if (rcpts_.size() >= settings_.recipients_max) return put({"452 4.5.3 Too many recipients"});
    // RFC 5321 §4.5.1: postmaster (no domain) is accepted from anyone.
    const bool postmaster = p.path.domain.empty();
    if (!postmaster && !settings_.relay->may_send(client_trusted_ || authenticated_,
                                                  p.path.local_part, p.path.domain))
        return reject({"554 5.7.1 <", p.path.address, ">: Relay access denied"});
    const Slice address = stash(p.path.address);
    rcpts_.push_back({address, stash(p.rest)});
    put({"250 2.1.5 Ok"});
}

void ServerSession::do_data(bool more_follows) {
    if (!mail_active_) return reject({"503 5.5.1 Error: need MAIL command"});
    if (bdat_mode_) return reject({"503 5.5.1 Error: DATA after BDAT"});
    if (rcpts_.empty()) return reject({"503 5.5.1 Error: need RCPT command"});
    // RFC 2920 §3.1: DATA ends a pipelined group; text before our 354 is a client that does
    // not wait for replies (a spam-bot signature, and how smuggling payloads get staged).
    if (more_follows)
        return close_with({"554 5.5.0 Error: message text sent before 354 (pipelining violation)"});
    if (!begin_message()) return put({"452 4.3.1 Insufficient system storage"});
    put({"354 End data with <CR><LF>.<CR><LF>"});
    data_state_ = DataState::line_start;  // the CRLF of the DATA line starts the first line
    end_match_ = end_match_for(static_cast<uint8_t>(data_state_));  // if the Received failed
    enter(Phase::data);
}

// RFC 3030 §2: "BDAT <chunk-size> [LAST]".
void ServerSession::do_bdat(std::string_view args) {
    const size_t sp = args.find(' ');
    const auto size = parse_u64(args.substr(0, sp));
    const std::string_view tail =
        sp == std::string_view::npos ? std::string_view() : trim_spaces(args.substr(sp + 1));
    if (!size || !(tail.empty() || iequals(tail, "LAST"))) {
        // Without a size we cannot tell where the chunk ends; its octets would run as commands.
        // A size past 64 bits is no size either (saturating it would wait for 2^64 octets).
        return close_with({"501 5.5.4 Syntax: BDAT chunk-size [LAST]"});
    }
    if (*size > settings_.message_size_max_bytes) {
        // One chunk alone is over the limit: reading it through to resynchronise could mean
        // reading exabytes. Refuse and close (the message, if any, is aborted).
        return close_with({"552 5.3.4 Message size exceeds fixed maximum message size"});
    }
    chunk_size_ = chunk_remaining_ = *size;
    chunk_last_ = !tail.empty();
    chunk_refusal_ = Refusal::none;
    if (bdat_failed_ != Refusal::none) {
        chunk_refusal_ = bdat_failed_;  // the transaction already failed: same answer, no junk
    } else if (!mail_active_ || rcpts_.empty()) {
        chunk_refusal_ = Refusal::bad_sequence;
    } else if (!bdat_mode_) {
        if (begin_message()) {
            bdat_mode_ = true;
            chunk_prev_cr_ = false;
        } else {
            chunk_refusal_ = Refusal::no_storage;
        }
    }
    if (chunk_size_ == 0) return finish_chunk();
    enter(Phase::bdat_chunk);
}

void ServerSession::do_rset() {
    reset_transaction();  // aborts a BDAT message in progress
    bdat_failed_ = Refusal::none;
    put({"250 2.0.0 Ok"});
}

void ServerSession::do_quit() {
    reset_transaction();
    close_with({"221 2.0.0 Bye"});
}

// --- DATA ------------------------------------------------------------------------------------

bool ServerSession::emit(const char* p, size_t n) {
    if (n == 0) return true;
    RM_ASSERT(body_bytes_ <= settings_.message_size_max_bytes);
    const uint64_t room = settings_.message_size_max_bytes - body_bytes_;
    body_bytes_ += n;
    if (n > room) {
        // What fits is stored first: running out of storage before the limit is that refusal,
        // however the text was cut.
        if (room > 0 && !sink_.message_body({p, static_cast<size_t>(room)})) {
            fail_message(Refusal::no_storage);
            return false;
        }
        fail_message(Refusal::too_big);
        return false;
    }
    if (!sink_.message_body({p, n})) {
        fail_message(Refusal::no_storage);
        return false;
    }
    return true;
}

// Scans message text in place (RFC 5321 §4.1.1.4, §4.5.2): CRLF.CRLF ends it, a leading dot is
// removed by ending the current span before it, and a CR or LF that is not part of a CRLF
// refuses the message (SMTP smuggling, CVE-2023-51764). Spans go to the sink unchanged.
size_t ServerSession::feed_data(std::string_view in) {
    if (body_error_ != Refusal::none) return discard_data(in);
    const char* p = in.data();
    const size_t n = in.size();
    size_t i = 0;
    size_t span = 0;
    // The refusal is the first one in the order of the bytes, however they were cut into reads:
    // the text before the offending byte (a bare LF, or the byte after a bare CR) is stored
    // first, so a message too big or out of storage before it is refused as such.
    const auto bare = [&](size_t at) {
        if (emit(p + span, at - span)) fail_message(Refusal::bare_crlf);
        return start_discard(in, at);
    };
    while (i < n) {
        const char c = p[i];
        switch (data_state_) {
            case DataState::mid_line: {
                // The common case: jump to the line's LF; its CR must be the byte before.
                const auto* lf = static_cast<const char*>(std::memchr(p + i, '\n', n - i));
                const size_t end = lf != nullptr ? static_cast<size_t>(lf - p) : n;
                const auto* cr = static_cast<const char*>(std::memchr(p + i, '\r', end - i));
                const size_t cr_at = cr != nullptr ? static_cast<size_t>(cr - p) : end;
                if (lf == nullptr) {
                    if (cr != nullptr && cr_at + 1 < n) return bare(cr_at + 1);
                    if (cr != nullptr) data_state_ = DataState::cr;
                    i = n;
                    break;
                }
                if (cr == nullptr) return bare(end);
                if (cr_at + 1 != end) return bare(cr_at + 1);
                data_state_ = DataState::line_start;
                i = end + 1;
                break;
            }
            case DataState::line_start:
                if (c == '\n') return bare(i);
                if (c == '.') {
                    if (!emit(p + span, i - span)) return start_discard(in, i);
                    span = i + 1;  // the stuffed dot is dropped
                    data_state_ = DataState::dot;
                } else {
                    data_state_ = c == '\r' ? DataState::cr : DataState::mid_line;
                }
                ++i;
                break;
            case DataState::cr:
                if (c != '\n') return bare(i);
                data_state_ = DataState::line_start;
                ++i;
                break;
            case DataState::dot:
                if (c == '\n') return bare(i);
                if (c == '\r') {
                    RM_ASSERT(span == i);
                    span = i + 1;  // held back: part of the terminator if an LF follows
                    data_state_ = DataState::dot_cr;
                } else {
                    data_state_ = DataState::mid_line;
                }
                ++i;
                break;
            case DataState::dot_cr:
                if (c != '\n') return bare(i);
                finish_data();
                return i + 1;
        }
    }
    if (!emit(p + span, n - span)) return start_discard(in, n);
    return n;
}

// After a refusal the rest of the text is read and dropped until the real CRLF.CRLF, so that
// nothing inside it can run as a command.
size_t ServerSession::start_discard(std::string_view in, size_t at) {
    end_match_ = end_match_for(static_cast<uint8_t>(data_state_));
    return at + discard_data(in.substr(at));
}

size_t ServerSession::discard_data(std::string_view in) {
    const char* p = in.data();
    const size_t n = in.size();
    size_t i = 0;
    while (i < n) {
        if (end_match_ == 0) {
            const auto* cr = static_cast<const char*>(std::memchr(p + i, '\r', n - i));
            if (cr == nullptr) return n;
            i = static_cast<size_t>(cr - p);
        }
        const char c = p[i++];
        if (c == kEndOfData[end_match_]) {
            if (++end_match_ == kEndOfData.size()) {
                finish_data();
                return i;
            }
        } else {
            end_match_ = c == '\r' ? 1 : 0;
        }
    }
    return n;
}

void ServerSession::finish_data() {
    end_match_ = 0;
    if (body_error_ != Refusal::none) {
        put_refusal(body_error_);
        reset_transaction();
        enter(Phase::command);
        return;
    }
    RM_ASSERT(message_active_);
    message_active_ = false;
    sink_.message_end();
    enter(Phase::commit_wait);
}

// --- BDAT ------------------------------------------------------------------------------------

size_t ServerSession::feed_chunk(std::string_view in) {
    const size_t take = static_cast<size_t>(std::min<uint64_t>(in.size(), chunk_remaining_));
    if (chunk_refusal_ == Refusal::none && body_error_ == Refusal::none)
        store_chunk(in.substr(0, take));
    chunk_remaining_ -= take;
    if (chunk_remaining_ == 0) finish_chunk();
    return take;
}

// BDAT text is binary-counted, but we relay it later with DATA, where a bare CR or LF would
// let a downstream server see a different end of message: refuse them here too.
void ServerSession::store_chunk(std::string_view part) {
    const size_t bad = find_bare_crlf(part, chunk_prev_cr_);
    if (bad != std::string_view::npos) {
        // As in DATA: the text before the offending byte is stored first, so the refusal does
        // not depend on how the chunk arrived.
        if (emit(part.data(), bad)) fail_message(Refusal::bare_crlf);
        return;
    }
    (void)emit(part.data(), part.size());
}

void ServerSession::finish_chunk() {
    if (phase_ == Phase::bdat_chunk) enter(Phase::command);
    if (chunk_refusal_ != Refusal::none) {
        if (chunk_refusal_ == Refusal::no_storage && bdat_failed_ == Refusal::none) {
            reset_transaction();  // message_begin gave no id: drop the transaction
            bdat_failed_ = chunk_last_ ? Refusal::none : Refusal::no_storage;
            put_refusal(Refusal::no_storage);
            return;
        }
        if (chunk_last_ && chunk_refusal_ == bdat_failed_) bdat_failed_ = Refusal::none;
        put_refusal(chunk_refusal_);
        return;
    }
    if (chunk_last_ && chunk_prev_cr_) fail_message(Refusal::bare_crlf);  // text ends in CR
    if (body_error_ != Refusal::none) {
        const Refusal r = body_error_;
        reset_transaction();
        bdat_failed_ = chunk_last_ ? Refusal::none : r;
        put_refusal(r);
        return;
    }
    if (!chunk_last_) {
        char n[24];
        const auto [end, ec] = std::to_chars(n, n + sizeof n, chunk_size_);
        RM_ASSERT(ec == std::errc());
        put({"250 2.0.0 ", std::string_view(n, static_cast<size_t>(end - n)), " octets received"});
        return;
    }
    RM_ASSERT(message_active_);
    message_active_ = false;
    sink_.message_end();
    enter(Phase::commit_wait);
}

}  // namespace ringmail::smtp
