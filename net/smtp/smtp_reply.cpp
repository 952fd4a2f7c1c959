// smtp_reply.cpp — the SMTP reply parser (contract in smtp_reply.hpp).
//
// Bytes of a line are appended to buf_ as they arrive; a line is checked when its LF arrives.
// Every cap is checked before a byte is stored, so buf_ can never overflow.
#include "net/smtp/smtp_reply.hpp"

#include <cstring>

#include "core/base/assert.hpp"

namespace ringmail::smtp {
namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// 1 to 3 digits then '.' or the end; returns the length consumed (0: no match).
size_t digits_upto3(std::string_view s) {
    size_t n = 0;
    while (n < s.size() && n < 3 && is_digit(s[n]))
        ++n;
    return n;
}

}  // namespace

std::string_view parse_enhanced_status(uint16_t code, std::string_view text) {
    if (text.size() < 5 || text[1] != '.') return {};
    if (text[0] != static_cast<char>('0' + code / 100)) return {};  // RFC 3463 §3: class agrees
    size_t at = 2;
    const size_t subject = digits_upto3(text.substr(at));
    if (subject == 0 || at + subject >= text.size() || text[at + subject] != '.') return {};
    at += subject + 1;
    const size_t detail = digits_upto3(text.substr(at));
    if (detail == 0) return {};
    at += detail;
    if (at < text.size() && text[at] != ' ') return {};
    return text.substr(0, at);
}

void ReplyParser::reset() {
    status_ = Status::need_more;
    error_ = "";
    code_ = 0;
    line_count_ = 0;
    line_start_ = 0;
    used_ = 0;
    wire_bytes_ = 0;
}

void ReplyParser::fail(const char* why) {
    status_ = Status::error;
    error_ = why;
}

ReplyParser::Status ReplyParser::feed(std::string_view in, size_t& consumed) {
    consumed = 0;
    if (status_ == Status::error) return status_;
    if (status_ == Status::complete) reset();
    while (consumed < in.size() && status_ == Status::need_more) {
        const char* from = in.data() + consumed;
        const size_t avail = in.size() - consumed;
        const auto* lf = static_cast<const char*>(std::memchr(from, '\n', avail));
        const size_t take = lf != nullptr ? static_cast<size_t>(lf - from) : avail;
        const size_t line_len = used_ - line_start_ + take;
        // The CR before LF is stored too and stripped at end_line, hence the +1.
        if (line_len > reply_line_max_bytes + 1) {
            fail("reply line too long");
            break;
        }
        if (wire_bytes_ + take + 1 > reply_max_bytes) {
            fail("reply too long");
            break;
        }
        std::memcpy(buf_ + used_, from, take);
        used_ += take;
        wire_bytes_ += take;
        consumed += take;
        if (lf == nullptr) break;
        ++consumed;  // the LF
        ++wire_bytes_;
        end_line();
    }
    return status_;
}

void ReplyParser::end_line() {
    size_t len = used_ - line_start_;
    if (len > 0 && buf_[line_start_ + len - 1] == '\r') --len;
    used_ = line_start_ + len;
    const std::string_view line(buf_ + line_start_, len);
    // RFC 5321 §4.2: three digits, first 2-5 (1yz is not used by SMTP), second 0-5.
    if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' ||
        !is_digit(line[2]))
        return fail("reply code is not numeric");
    const auto code =
        static_cast<uint16_t>((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
    if (line_count_ > 0 && code != code_) return fail("reply code changes between lines");
    if (len > 3 && line[3] != ' ' && line[3] != '-') return fail("bad reply separator");
    if (line_count_ == reply_lines_max) return fail("too many reply lines");
    code_ = code;
    const size_t text_off = len > 3 ? 4 : 3;
    line_off_[line_count_] = static_cast<uint32_t>(line_start_ + text_off);
    line_len_[line_count_] = static_cast<uint32_t>(len - text_off);
    ++line_count_;
    line_start_ = used_;
    // "250" alone is a last line; only '-' continues (a ' ' line ends the reply even after
    // '-' lines, which is the grammar: any mix other than that never completes).
    if (len == 3 || line[3] == ' ') status_ = Status::complete;
}

std::string_view ReplyParser::text(size_t i) const {
    RM_ASSERT(i < line_count_);
    return {buf_ + line_off_[i], line_len_[i]};
}

std::string_view ReplyParser::enhanced() const {
    RM_ASSERT(status_ == Status::complete);
    return parse_enhanced_status(code_, text(0));
}

}  // namespace ringmail::smtp
