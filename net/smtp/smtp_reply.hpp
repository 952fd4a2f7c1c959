// smtp_reply.hpp — incremental parser of SMTP replies received by the client (RFC 5321 §4.2).
//
// Used by net/smtp/smtp_client.cpp on the bytes an MX host sends. It keeps one reply at a time in a
// fixed buffer, so a hostile server cannot make it grow (OpenSMTPD CVE-2020-8794 was a client
// that trusted reply lines): lines per reply, bytes per line and bytes per reply are capped,
// and any deviation from the grammar — a non-numeric code, a code that changes between lines, a
// separator other than '-' or ' ' — is a terminal error with a reason, never a guess.
// Lines end in LF with an optional CR before it (lenient on input, as Postfix is).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringmail::smtp {

// RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers sometimes send more, so
// accept up to a text line, never more.
inline constexpr size_t reply_line_max_bytes = 1000;  // excluding CRLF
inline constexpr size_t reply_lines_max = 100;        // an EHLO reply has about 15
inline constexpr size_t reply_max_bytes = 8192;       // all lines, including CRLFs

// "d.ddd.ddd" at the start of a reply text (RFC 3463 §2), whose class matches the reply code's
// first digit; "" when absent.
[[nodiscard]] std::string_view parse_enhanced_status(uint16_t code, std::string_view text);

class ReplyParser {
  public:
    enum class Status : uint8_t { need_more, complete, error };

    // Consumes bytes up to the end of one reply (or until an error) and says how many in
    // `consumed`. After `complete`, the reply is readable until the next feed(), which starts
    // a new one. After `error`, the parser stays in error until reset().
    [[nodiscard]] Status feed(std::string_view in, size_t& consumed);
    void reset();

    // Bytes of an unfinished reply are held (a close now cuts a reply in half).
    [[nodiscard]] bool mid_reply() const { return status_ == Status::need_more && used_ > 0; }
    [[nodiscard]] Status status() const { return status_; }
    [[nodiscard]] const char* error() const { return error_; }  // static text

    // The complete reply: its code, its lines' text (after "ddd-" / "ddd "), and the enhanced
    // status code of its first line.
    [[nodiscard]] uint16_t code() const { return code_; }
    [[nodiscard]] size_t line_count() const { return line_count_; }
    [[nodiscard]] std::string_view text(size_t i) const;
    [[nodiscard]] std::string_view enhanced() const;

  private:
    void fail(const char* why);
    void end_line();

    Status status_ = Status::need_more;
    const char* error_ = "";
    uint16_t code_ = 0;
    size_t line_count_ = 0;
    size_t line_start_ = 0;  // in buf_, of the line being received
    size_t used_ = 0;        // bytes of buf_ in use
    size_t wire_bytes_ = 0;  // the reply's bytes as received, CRLFs included
    uint32_t line_off_[reply_lines_max];
    uint32_t line_len_[reply_lines_max];
    char buf_[reply_max_bytes];
};

}  // namespace ringmail::smtp
