// dkim_sign.hpp — the streaming DKIM signer of one message (RFC 6376, RFC 8463).
//
// Who calls it: the inbound driver of a core, one DkimSigner per session slot, fed the message
// text as it is staged for the spool (after dot-unstuffing: the text as stored and later sent).
// Use:
//
//     signer.reset();
//     signer.feed(chunk); ...                       // any split, headers then body
//     if (signer.prepare(table, {now_s, expire_s}) == DkimSignStatus::ok)
//         for (size_t i = 0; i < signer.signature_count(); ++i)
//             worker.submit(token, signer.key(i), signer.header_digest(i));   // off the reactor
//     ... each result:  signer.append_header_field(i, signature, &prefix);     // "DKIM-Signature:
//     …\r\n"
//
// and the message is stored as prefix + text. sign_inline() does the same synchronously
// (tools and tests). What is signed: c=relaxed/relaxed, a= per key, d= the table domain that
// matched the From: domain (it or a parent), s=, t=, x= when asked, h= every present field of
// the default set below (each instance), plus From once more (over-signing: a From added later
// breaks the signature), bh=, b= folded to lines of at most 78 columns.
//
// Guarantees:
//   - One pass, no copy of the body: the body goes through RelaxedBodyHasher as it arrives;
//     only the signed header fields are kept, canonicalized, in at most
//     dkim_signed_headers_max_bytes and dkim_signed_fields_max fields (more: not signed).
//   - The output depends only on the bytes fed and the options, never on the chunk boundaries.
//   - A message with no From:, more than one From:, or no usable address in it is not signed
//     (RFC 6376 §5.4 requires From; with two, receivers cannot tell whose domain signed).
//   - After reset() and the first message the signer does not allocate for messages of the
//     same shape (buffers keep their capacity).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "tls/dkim_canon.hpp"
#include "tls/dkim_keys.hpp"

namespace ringmail::tls {

inline constexpr size_t dkim_signed_headers_max_bytes = 32 * 1024;  // canonical, all fields
inline constexpr size_t dkim_signed_fields_max = 64;
inline constexpr size_t dkim_header_name_max_bytes = 64;    // longer names are never signed ones
inline constexpr size_t dkim_signatures_max = 2;            // one RSA and one Ed25519
inline constexpr size_t dkim_header_line_max_columns = 78;  // RFC 5322 §2.1.1 "SHOULD"

// The default h= set, in the order h= lists them (names as written in h=).
inline constexpr std::array<std::string_view, 14> dkim_signed_header_names = {
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "in-reply-to",
    "references"};

enum class DkimSignStatus : uint8_t {
    ok,
    no_from,            // no From: field
    multiple_from,      // more than one From: field
    bad_from,           // no domain found in From:
    no_key,             // neither the From: domain nor a parent is in the table
    headers_too_large,  // the signed fields pass the bounds above
    sign_failed,        // sign_inline only: the key refused (library error)
};

[[nodiscard]] std::string_view dkim_sign_status_name(DkimSignStatus s) noexcept;

struct DkimSignOptions {
    int64_t now_s = 0;            // t=
    uint32_t expire_after_s = 0;  // x= t + this; 0: no x=
};

class DkimSigner {
  public:
    DkimSigner();
    void reset() noexcept;
    void feed(std::string_view chunk) noexcept;

    // Ends the message: finds the keys for the From: domain, computes bh= and, per key, the
    // DKIM-Signature field without its b= value and the SHA-256 of the canonical header data
    // (RFC 6376 §3.7) that the key signs.
    [[nodiscard]] DkimSignStatus prepare(const DkimKeyTable& table, const DkimSignOptions& options);

    [[nodiscard]] size_t signature_count() const noexcept { return count_; }
    [[nodiscard]] const DkimKey& key(size_t i) const noexcept { return *sigs_[i].entry->key; }
    [[nodiscard]] const DkimDigest& header_digest(size_t i) const noexcept {
        return sigs_[i].digest;
    }
    // Appends the complete field, "DKIM-Signature: …\r\n", with the signature of header_digest(i).
    void append_header_field(size_t i, std::span<const uint8_t> signature, std::string* out) const;

    // prepare(), then sign each digest here and append every field to *out.
    [[nodiscard]] DkimSignStatus sign_inline(const DkimKeyTable& table,
                                             const DkimSignOptions& options, std::string* out);

    [[nodiscard]] std::string_view from_domain() const noexcept { return from_domain_; }
    [[nodiscard]] const DkimDigest& body_hash() const noexcept { return body_hash_; }
    [[nodiscard]] bool in_body() const noexcept { return phase_ == Phase::body; }

  private:
    enum class Phase : uint8_t { none, name, value, skip, body };
    struct Field {
        uint8_t name;  // index into dkim_signed_header_names
        uint32_t offset;
        uint32_t length;  // canonical "name:value\r\n"
    };
    struct Signature {
        const DkimKeyEntry* entry = nullptr;
        std::string field;  // "DKIM-Signature: v=1; … b=" as emitted
        DkimDigest digest{};
        size_t column = 0;  // where the field's last line ends, after "b="
    };

    void header_byte(char c) noexcept;
    void header_char(char c) noexcept;
    void line_end() noexcept;
    void end_field() noexcept;
    void begin_field_value(size_t name) noexcept;
    void append_signed(char c) noexcept;
    [[nodiscard]] DkimSignStatus find_from_domain() noexcept;
    void build_field(Signature* s, const DkimSignOptions& options) const;
    void hash_headers(Signature* s);
    [[nodiscard]] size_t h_names(
        std::array<uint8_t, dkim_signed_fields_max + 1>* out) const noexcept;

    // Header state.
    Phase phase_ = Phase::none;
    bool at_line_start_ = true;
    bool cr_pending_ = false;
    bool value_started_ = false;
    bool space_pending_ = false;
    bool overflow_ = false;
    size_t name_len_ = 0;
    char name_[dkim_header_name_max_bytes];
    std::string signed_;  // canonical signed fields, back to back
    std::array<Field, dkim_signed_fields_max> fields_;
    size_t field_count_ = 0;
    std::array<uint16_t, dkim_signed_header_names.size()> instances_{};

    RelaxedBodyHasher body_;
    DkimDigest body_hash_{};
    std::string from_domain_;
    std::string scratch_;  // canonical form of a DKIM-Signature field
    std::array<Signature, dkim_signatures_max> sigs_;
    size_t count_ = 0;
};

}  // namespace ringmail::tls
