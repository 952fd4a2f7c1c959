// dkim_canon.hpp — DKIM "relaxed" canonicalization (RFC 6376 §3.4.2, §3.4.4) and SHA-256.
//
// Pure code over bytes, used by DkimSigner (tls/dkim_sign.hpp) and by its tests.
//
// Guarantees:
//   - RelaxedBodyHasher takes the body in chunks split anywhere (even inside a CRLF or a run of
//     white space) and hashes exactly what one pass over the whole body would: white-space runs
//     become one SP, white space at line ends is dropped, empty lines at the end are dropped, a
//     last line without CRLF gets one, an empty body hashes as the empty string.
//   - Its state is bounded: a 4 KiB staging buffer, a SHA-256 state and a count of pending empty
//     lines; it never allocates and never copies a body run longer than the buffer.
//   - Lines end at LF; a CR directly before an LF belongs to the line end, any other CR is an
//     ordinary byte (the spool holds CRLF text, so this only decides odd inputs consistently).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tls/dkim_keys.hpp"

namespace ringmail::tls {

inline constexpr size_t dkim_sha256_state_bytes = 256;  // >= sizeof(wc_Sha256), checked in .cpp
inline constexpr size_t dkim_body_stage_bytes = 4096;

// SHA-256 on wolfSSL, with its state inline (no allocation).
class DkimSha256 {
  public:
    DkimSha256() noexcept;
    ~DkimSha256();
    DkimSha256(const DkimSha256&) = delete;
    DkimSha256& operator=(const DkimSha256&) = delete;

    void update(const void* data, size_t len) noexcept;
    // The digest of everything since construction or the last finish(); starts afresh.
    [[nodiscard]] DkimDigest finish() noexcept;

  private:
    alignas(16) unsigned char state_[dkim_sha256_state_bytes];
};

[[nodiscard]] DkimDigest dkim_sha256(std::string_view data) noexcept;

// Appends the relaxed form of one header field (`Name: value`, possibly folded, with or
// without its final CRLF): name lower-cased, line breaks removed, white-space runs to one SP,
// white space around the colon and at the end removed. No CRLF is appended.
void dkim_canon_header_relaxed(std::string_view field, std::string* out);

class RelaxedBodyHasher {
  public:
    RelaxedBodyHasher() noexcept = default;
    void reset() noexcept;
    void feed(std::string_view chunk) noexcept;
    // The bh= digest; the hasher must be reset() before the next body.
    [[nodiscard]] DkimDigest finish() noexcept;
    [[nodiscard]] uint64_t canonical_bytes() const noexcept { return canonical_bytes_; }
    // Tests: also append every canonical byte to *tee (nullptr: off).
    void set_tee(std::string* tee) noexcept { tee_ = tee; }

  private:
    void content(const char* p, size_t n) noexcept;  // non-WSP bytes of a line
    void line_end() noexcept;
    void put(const char* p, size_t n) noexcept;
    void flush() noexcept;

    DkimSha256 sha_;
    uint64_t empty_lines_pending_ = 0;  // empty lines seen since the last line with content
    uint64_t canonical_bytes_ = 0;
    std::string* tee_ = nullptr;
    size_t stage_len_ = 0;
    bool wsp_pending_ = false;  // white space since the last content byte of this line
    bool line_has_content_ = false;
    bool cr_pending_ = false;  // a CR that ends the chunk: line end if an LF follows
    char stage_[dkim_body_stage_bytes];
};

}  // namespace ringmail::tls
