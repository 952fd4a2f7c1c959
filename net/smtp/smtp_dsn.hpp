// smtp_dsn.hpp — builds the text of a delivery status notification (RFC 3464 inside a
// multipart/report, RFC 6522, formerly 3462), the bounce ringmail sends to an envelope sender.
//
// Called by the delivery side when recipients fail for good (or, for "delayed" notices, are
// still being retried). Pure: no clock, no I/O; dates come in as unix times. Bounces are rare,
// so this allocates freely. Guarantees: CRLF line ends only, no line over 998 octets (RFC 5322
// §2.1.1), no CR/LF/NUL from remote replies or envelopes inside a field (a hostile MX must not
// be able to add headers or MIME parts to our bounce), a boundary that occurs nowhere in the
// content. The caller sends the result from the null sender <> and never to <>
// (should_bounce), so two MTAs can never bounce bounces at each other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ringmail::smtp {

inline constexpr size_t dsn_headers_max_bytes_default = 64 * 1024;

enum class DsnAction : uint8_t { failed, delayed };  // RFC 3464 §2.3.3

struct DsnRecipient {
    std::string_view address;  // the RCPT TO address (Final-Recipient)
    std::string_view orcpt;    // the RCPT's ORCPT= value as received ("rfc822;a+2Bb@x"), or ""
    DsnAction action = DsnAction::failed;
    std::string_view status;          // "5.1.1"
    std::string_view remote_mta;      // host name of the MX that answered ("mx.example.net"), or ""
    std::string_view diagnostic;      // the SMTP reply ("550 5.1.1 unknown user"), or ""
    int64_t last_attempt_unix_s = 0;  // 0: no Last-Attempt-Date
};

struct DsnInput {
    std::string_view reporting_mta;  // our host name
    std::string_view sender;         // the original envelope sender (the bounce's recipient)
    uint64_t queue_id = 0;           // of the original message
    uint64_t dsn_id = 0;             // of the bounce itself (its Message-ID)
    int64_t arrival_unix_s = 0;      // when we received the original message
    int64_t now_unix_s = 0;          // the bounce's Date
    std::span<const DsnRecipient> recipients;  // not empty
    std::string_view original_text;  // the stored message text; only its header section is used
    size_t headers_max_bytes = dsn_headers_max_bytes_default;
};

struct Dsn {
    std::string text;        // the whole message, headers and body, CRLF line ends
    bool eight_bit = false;  // contains octets > 127: send with BODY=8BITMIME
};

// No bounce to the null sender (RFC 5321 §4.5.5, §6.1): it is what bounces come from.
[[nodiscard]] bool should_bounce(std::string_view mail_from);

[[nodiscard]] Dsn build_dsn(const DsnInput& in);

// RFC 5322 §3.3 date-time in UTC, "Tue, 14 Nov 2023 22:13:20 +0000".
[[nodiscard]] std::string format_rfc5322_date(int64_t unix_time_s);

}  // namespace ringmail::smtp
