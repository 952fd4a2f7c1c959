// smtp_dsn.cpp — the bounce message builder (contract in smtp_dsn.hpp).
//
// The three parts are built first, then a boundary is chosen that none of them contains
// (RFC 2046 §5.1.1), then the message is assembled. Every field goes through append_field,
// which replaces control characters and folds; every text line through append_wrapped.
#include "net/smtp/smtp_dsn.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "core/base/assert.hpp"

namespace ringmail::smtp {
namespace {

constexpr size_t kLineMaxBytes = 998;  // RFC 5322 §2.1.1, without CRLF
constexpr size_t kLineSoftBytes = 78;  // RFC 5322 §2.1.1 SHOULD
constexpr std::string_view kCrlf = "\r\n";

bool has_8bit(std::string_view s) {
    return std::any_of(s.begin(), s.end(),
                       [](char c) { return static_cast<unsigned char>(c) > 127; });
}

// CR, LF, NUL and the other controls become spaces: remote reply text and envelope data can
// then neither end a field nor start a new one (header injection).
std::string clean(std::string_view s) {
    std::string r(s);
    for (char& c : r) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) c = ' ';
    }
    return r;
}

std::string hex16(uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016" PRIx64, v);
    return b;
}

// "prefix value" as lines of at most kLineMaxBytes, folded at spaces near kLineSoftBytes; a
// word too long for one line is split. Continuation lines start with `indent` (whitespace, so
// that in a header section they are folding, RFC 5322 §2.2.3).
void append_wrapped(std::string& out, std::string_view prefix, std::string_view raw,
                    std::string_view indent) {
    RM_ASSERT(!indent.empty() && prefix.size() < kLineSoftBytes);
    const std::string value = clean(raw);
    out += prefix;
    size_t line_len = prefix.size();
    bool line_start = true;  // nothing after the prefix/indent yet: no separator needed
    std::string_view rest = value;
    while (!rest.empty()) {
        const size_t sp = rest.find(' ');
        std::string_view word = rest.substr(0, sp);
        rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
        if (word.empty()) continue;  // runs of spaces collapse
        while (!word.empty()) {
            if (!line_start && line_len + 1 + word.size() > kLineSoftBytes) {
                out.append(kCrlf).append(indent);
                line_len = indent.size();
                line_start = true;
            }
            const size_t sep = line_start ? 0 : 1;
            const size_t take = std::min(word.size(), kLineMaxBytes - line_len - sep);
            if (sep != 0) out += ' ';
            out.append(word.substr(0, take));
            line_len += sep + take;
            word.remove_prefix(take);
            line_start = false;
            if (!word.empty()) {  // the rest of an overlong word goes on the next line
                out.append(kCrlf).append(indent);
                line_len = indent.size();
                line_start = true;
            }
        }
    }
    out += kCrlf;
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
    if (value.empty()) return;
    std::string prefix(name);
    prefix += ": ";
    append_wrapped(out, prefix, value, " ");
}

// RFC 3461 §4: xtext, "+XX" is the octet 0xXX. Malformed escapes stay as they are.
std::string xtext_decode(std::string_view s) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string r;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            r += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
            continue;
        }
        r += s[i];
    }
    return r;
}

// "rfc822;a+2Bb@x" → "rfc822; a+b@x"; "" when there is no address type.
std::string original_recipient(std::string_view orcpt) {
    const size_t semi = orcpt.find(';');
    if (semi == std::string_view::npos || semi == 0) return {};
    std::string r(orcpt.substr(0, semi));
    r += "; ";
    r += xtext_decode(orcpt.substr(semi + 1));
    return r;
}

// The header section of the stored text (up to the empty line), whole lines only, each at
// most kLineMaxBytes, within max_bytes. Our Received header is its first line.
std::string header_section(std::string_view text, size_t max_bytes) {
    if (text.substr(0, 2) == kCrlf) return {};  // no header section at all
    const size_t end = text.find("\r\n\r\n");
    if (end != std::string_view::npos) text = text.substr(0, end + 2);
    std::string r;
    while (!text.empty()) {
        const size_t lf = text.find('\n');
        std::string_view line = text.substr(0, lf);
        text = lf == std::string_view::npos ? std::string_view() : text.substr(lf + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        line = line.substr(0, kLineMaxBytes);
        if (r.size() + line.size() + 2 > max_bytes) break;
        // A stray CR or NUL inside a line cannot break it here.
        for (const char c : line)
            r += (c == '\r' || c == '\0') ? ' ' : c;
        r += kCrlf;
    }
    return r;
}

std::string human_part(const DsnInput& in, bool all_delayed) {
    std::string t;
    append_wrapped(t, "This is the mail system at host ", std::string(in.reporting_mta) + ".",
                   "    ");
    t += kCrlf;
    if (all_delayed) {
        t +=
            "Your message has not been delivered yet to the recipients below." + std::string(kCrlf);
        t += "The mail system will keep trying; you do not need to send it again." +
             std::string(kCrlf);
    } else {
        t += "Your message could not be delivered to one or more recipients." + std::string(kCrlf);
        t += "The reason is given after each address below." + std::string(kCrlf);
    }
    t += kCrlf;
    for (const DsnRecipient& r : in.recipients) {
        const std::string_view why = r.diagnostic.empty() ? r.status : r.diagnostic;
        std::string line = "<" + std::string(r.address) + ">: ";
        if (!r.remote_mta.empty()) line += "host " + std::string(r.remote_mta) + " said: ";
        line += why;
        append_wrapped(t, "", line, "    ");
    }
    return t;
}

std::string status_part(const DsnInput& in) {
    std::string s;
    append_field(s, "Reporting-MTA", "dns; " + std::string(in.reporting_mta));
    append_field(s, "X-Ringmail-Queue-ID", hex16(in.queue_id));
    append_field(s, "Arrival-Date", format_rfc5322_date(in.arrival_unix_s));
    for (const DsnRecipient& r : in.recipients) {
        s += kCrlf;  // RFC 3464 §2.1: per-recipient blocks follow, each after an empty line
        append_field(s, "Final-Recipient", "rfc822; " + std::string(r.address));
        append_field(s, "Original-Recipient", original_recipient(r.orcpt));
        append_field(s, "Action", r.action == DsnAction::failed ? "failed" : "delayed");
        append_field(s, "Status", r.status);
        if (!r.remote_mta.empty())
            append_field(s, "Remote-MTA", "dns; " + std::string(r.remote_mta));
        if (!r.diagnostic.empty())
            append_field(s, "Diagnostic-Code", "smtp; " + std::string(r.diagnostic));
        if (r.last_attempt_unix_s != 0)
            append_field(s, "Last-Attempt-Date", format_rfc5322_date(r.last_attempt_unix_s));
    }
    return s;
}

std::string pick_boundary(uint64_t seed, std::initializer_list<std::string_view> parts) {
    for (uint64_t n = 0;; ++n) {
        std::string b = "=_ringmail_" + hex16(seed) + "_" + std::to_string(n);
        if (std::none_of(parts.begin(), parts.end(),
                         [&](std::string_view p) { return p.find(b) != std::string_view::npos; }))
            return b;
    }
}

void append_part(std::string& out, std::string_view boundary, std::string_view type,
                 std::string_view description, std::string_view content) {
    out.append("--").append(boundary).append(kCrlf);
    append_field(out, "Content-Description", description);
    append_field(out, "Content-Type", type);
    if (has_8bit(content)) append_field(out, "Content-Transfer-Encoding", "8bit");
    out += kCrlf;
    out += content;
    out += kCrlf;  // the delimiter's CRLF (RFC 2046 §5.1.1), after the content's own
}

}  // namespace

bool should_bounce(std::string_view mail_from) {
    return !mail_from.empty();
}

std::string format_rfc5322_date(int64_t unix_time_s) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const auto t = static_cast<time_t>(unix_time_s);
    tm g{};
    if (gmtime_r(&t, &g) == nullptr) g = tm{.tm_mday = 1, .tm_year = 70, .tm_wday = 4};
    char out[64];
    const int n = std::snprintf(out, sizeof out, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                                kDays[g.tm_wday % 7], g.tm_mday, kMonths[g.tm_mon % 12],
                                g.tm_year + 1900, g.tm_hour, g.tm_min, g.tm_sec);
    RM_ASSERT(n > 0 && static_cast<size_t>(n) < sizeof out);
    return {out, static_cast<size_t>(n)};
}

Dsn build_dsn(const DsnInput& in) {
    RM_ASSERT(!in.recipients.empty() && should_bounce(in.sender));
    const bool all_delayed =
        std::all_of(in.recipients.begin(), in.recipients.end(),
                    [](const DsnRecipient& r) { return r.action == DsnAction::delayed; });
    const std::string human = human_part(in, all_delayed);
    const std::string status = status_part(in);
    const std::string headers = header_section(in.original_text, in.headers_max_bytes);
    const std::string boundary = pick_boundary(in.dsn_id, {human, status, headers});
    const std::string host = clean(in.reporting_mta);

    Dsn d;
    std::string& m = d.text;
    append_field(m, "From", "MAILER-DAEMON@" + host + " (Mail Delivery System)");
    append_field(m, "To", "<" + std::string(in.sender) + ">");
    append_field(
        m, "Subject",
        all_delayed ? "Delayed Mail (still being retried)" : "Undelivered Mail Returned to Sender");
    append_field(m, "Date", format_rfc5322_date(in.now_unix_s));
    append_field(m, "Message-ID",
                 "<" + hex16(in.dsn_id) + "." + hex16(in.queue_id) + "@" + host + ">");
    append_field(m, "Auto-Submitted", "auto-replied");  // RFC 3834 §5: no auto-reply to this
    append_field(m, "MIME-Version", "1.0");
    m += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"";
    m += boundary;
    m += "\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n";
    append_part(m, boundary, "text/plain; charset=utf-8", "Notification", human);
    append_part(m, boundary, "message/delivery-status", "Delivery report", status);
    append_part(m, boundary, "text/rfc822-headers", "Undelivered Message Headers", headers);
    m.append("--").append(boundary).append("--").append(kCrlf);
    d.eight_bit = has_8bit(m);
    return d;
}

}  // namespace ringmail::smtp
