// auth.hpp — SMTP AUTH (RFC 4954) pieces that need no I/O: strict base64, the PLAIN message
// (RFC 4616), the LOGIN exchange, and the --auth-users password file with crypt(3) checks.
//
// The SMTP server session calls AuthExchange when it sees "AUTH" (over TLS only — 538 before,
// smtp.md) and with every continuation line; when the exchange asks for verification, the
// driver hands username and password to an AuthWorker (tls/auth_worker.hpp), because a crypt
// check costs milliseconds by design and must not run on a reactor thread.
//
// Guarantees:
//   - Nothing here allocates after start-up: the exchange decodes into fixed buffers inside
//     itself; AuthUsers allocates only while loading.
//   - Every reply carries an RFC 3463 enhanced status code and ends in CRLF.
//   - Passwords are wiped from the exchange's buffers by reset() and on destruction; password
//     comparisons run in constant time, and an unknown user costs the same crypt as a known one
//     (no user enumeration by timing).
//   - A failed or cancelled exchange leaves no state behind: the next AUTH starts clean.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

struct crypt_data;

namespace ringmail::tls {

// RFC 4616 §2: servers must accept authzid, authcid and passwd of up to 255 octets each.
inline constexpr size_t auth_field_max_bytes = 255;
inline constexpr size_t auth_plain_max_bytes = 3 * auth_field_max_bytes + 2;
// RFC 4954 §4: an AUTH command line (and a continuation line) may be up to 12288 octets; the
// limit of a 512-octet command line does not apply to it.
inline constexpr size_t auth_line_max_bytes = 12288;

// --- Replies (RFC 4954 §4, §6) ---------------------------------------------------------------
inline constexpr std::string_view auth_reply_ok = "235 2.7.0 Authentication successful\r\n";
inline constexpr std::string_view auth_reply_failed =
    "535 5.7.8 Authentication credentials invalid\r\n";
inline constexpr std::string_view auth_reply_tls_required =
    "538 5.7.11 Encryption required for requested authentication mechanism\r\n";
inline constexpr std::string_view auth_reply_cancelled = "501 5.7.0 Authentication cancelled\r\n";
inline constexpr std::string_view auth_reply_bad_base64 = "501 5.5.2 Cannot decode response\r\n";
inline constexpr std::string_view auth_reply_syntax =
    "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n";
inline constexpr std::string_view auth_reply_unknown_mechanism =
    "504 5.5.4 Unrecognized authentication type\r\n";
inline constexpr std::string_view auth_reply_line_too_long =
    "500 5.5.6 Authentication exchange line is too long\r\n";
inline constexpr std::string_view auth_challenge_plain = "334 \r\n";
inline constexpr std::string_view auth_challenge_username = "334 VXNlcm5hbWU6\r\n";  // Username:
inline constexpr std::string_view auth_challenge_password = "334 UGFzc3dvcmQ6\r\n";  // Password:
// The EHLO keyword line's argument (RFC 4954 §3), once TLS is up.
inline constexpr std::string_view auth_mechanisms = "PLAIN LOGIN";

// --- Base64 (RFC 4648 §4), strict -------------------------------------------------------------

[[nodiscard]] constexpr size_t base64_encoded_bytes(size_t n) {
    return (n + 2) / 3 * 4;
}
// Writes base64_encoded_bytes(in.size()) bytes to out (cap must allow it); returns that count,
// or 0 when cap is too small.
[[nodiscard]] size_t base64_encode(std::string_view in, char* out, size_t cap) noexcept;
// Refuses anything but canonical base64: length a multiple of 4, '=' only as final padding,
// no whitespace, zero bits in the padding (RFC 4648 §3.5), output fitting cap.
[[nodiscard]] bool base64_decode(std::string_view in, char* out, size_t cap,
                                 size_t* out_len) noexcept;

// --- PLAIN (RFC 4616 §2): [authzid] NUL authcid NUL passwd ------------------------------------

enum class PlainError : uint8_t {
    ok,
    malformed,       // not exactly two NULs
    empty_authcid,   // authcid = 1*SAFE
    empty_password,  // passwd = 1*SAFE
    too_long,        // a field over 255 octets
};

struct PlainCredentials {
    std::string_view authzid;  // empty: act as authcid
    std::string_view authcid;
    std::string_view password;
};

// Splits decoded PLAIN bytes; the views point into `message`.
[[nodiscard]] PlainError parse_plain(std::string_view message, PlainCredentials* out) noexcept;

// --- The exchange ----------------------------------------------------------------------------

enum class AuthAction : uint8_t {
    challenge,  // send reply, then pass the client's next line to resume()
    verify,     // check username()/password(); reply auth_reply_ok or auth_reply_failed
    rejected,   // send reply; the exchange is over (a failed attempt for the junk/delay count,
                // except auth_reply_cancelled, which the client chose)
};

struct AuthStep {
    AuthAction action;
    std::string_view reply;  // empty for verify
};

enum class AuthMechanism : uint8_t { none, plain, login };

class AuthExchange {
  public:
    AuthExchange() = default;
    ~AuthExchange() { reset(); }
    AuthExchange(const AuthExchange&) = delete;
    AuthExchange& operator=(const AuthExchange&) = delete;

    // args: what follows "AUTH " on the command line, without CRLF:
    // "PLAIN", "PLAIN dGVzdAB0ZXN0AHBhc3M=", "LOGIN", "LOGIN dXNlcg==".
    [[nodiscard]] AuthStep start(std::string_view args) noexcept;
    // A client line after a 334 challenge, without CRLF. "*" cancels (RFC 4954 §4).
    [[nodiscard]] AuthStep resume(std::string_view line) noexcept;

    // Valid after AuthAction::verify until reset().
    [[nodiscard]] std::string_view username() const noexcept { return {user_, user_len_}; }
    [[nodiscard]] std::string_view password() const noexcept { return {pass_, pass_len_}; }
    [[nodiscard]] AuthMechanism mechanism() const noexcept { return mechanism_; }
    // True between a challenge and the client's answer.
    [[nodiscard]] bool waiting() const noexcept { return stage_ != Stage::idle; }

    // Wipes credentials and state (call after handing them to the verifier).
    void reset() noexcept;

  private:
    enum class Stage : uint8_t { idle, plain_response, login_username, login_password };

    [[nodiscard]] AuthStep on_plain(std::string_view b64) noexcept;
    [[nodiscard]] AuthStep on_login_username(std::string_view b64) noexcept;
    [[nodiscard]] AuthStep on_login_password(std::string_view b64) noexcept;
    [[nodiscard]] AuthStep reject(std::string_view reply) noexcept;
    // Decodes into scratch_; false with *reply set to what to reject with.
    [[nodiscard]] bool decode(std::string_view b64, std::string_view* reply) noexcept;

    Stage stage_ = Stage::idle;
    AuthMechanism mechanism_ = AuthMechanism::none;
    size_t user_len_ = 0;
    size_t pass_len_ = 0;
    size_t scratch_len_ = 0;
    char user_[auth_field_max_bytes];
    char pass_[auth_field_max_bytes];
    char scratch_[auth_plain_max_bytes];
};

// --- Password verification (crypt(3), libxcrypt) ----------------------------------------------

// crypt_rn's 32 KiB work area; one per verifying thread, reused for every check.
class CryptScratch {
  public:
    CryptScratch();
    ~CryptScratch();
    CryptScratch(const CryptScratch&) = delete;
    CryptScratch& operator=(const CryptScratch&) = delete;
    [[nodiscard]] crypt_data* get() noexcept { return data_.get(); }

  private:
    std::unique_ptr<crypt_data> data_;
};

// True if crypt(password, hash) == hash, compared in constant time. Slow by design.
[[nodiscard]] bool verify_password(std::string_view hash, std::string_view password,
                                   CryptScratch& scratch) noexcept;

// The users of --auth-users: one "user:hash" per line, hash a crypt(3) string ($y$ yescrypt,
// $6$ SHA-512-crypt, ...). Blank lines and lines starting with '#' are skipped. Methods that
// libxcrypt calls legacy (DES, MD5, ...) are refused at load.
class AuthUsers {
  public:
    // False with *error = "FILE:LINE: reason" (start-up only).
    [[nodiscard]] bool load_file(const std::string& path, std::string* error);
    [[nodiscard]] bool load_text(std::string_view text, std::string_view name, std::string* error);

    [[nodiscard]] bool verify(std::string_view user, std::string_view password,
                              CryptScratch& scratch) const noexcept;
    [[nodiscard]] size_t size() const noexcept { return users_.size(); }

  private:
    std::map<std::string, std::string, std::less<>> users_;
    std::string decoy_hash_;  // burned on unknown users so they cost a real crypt
};

}  // namespace ringmail::tls
