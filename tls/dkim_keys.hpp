// dkim_keys.hpp — DKIM private keys and the key table (--dkim-keys FILE).
//
// The table maps a signing domain (d=) to at most one RSA and one Ed25519 key, each with its
// selector (s=). Lines are `DOMAIN SELECTOR ALGORITHM KEYFILE`, algorithm `rsa-sha256` or
// `ed25519-sha256`; `#` starts a comment; blank lines are skipped. A relative KEYFILE is read
// relative to the table's own directory. Keys are PEM: RSA as PKCS#1 ("RSA PRIVATE KEY") or
// PKCS#8 ("PRIVATE KEY"), Ed25519 as PKCS#8 (what `openssl genpkey -algorithm ed25519` writes).
//
// Who calls it: the program loads the table at start; DkimSigner (tls/dkim_sign.hpp) looks up
// the From: domain; the DkimWorker (tls/dkim_worker.hpp) calls DkimKey::sign off the reactor.
//
// Guarantees:
//   - A table that loaded is complete: every line named a readable key of the stated type;
//     any fault refuses the whole table with one line naming the file, line and cause.
//   - RSA keys under 1024 bits are refused (RFC 8301 §3.2: verifiers must not accept them);
//     keys over 4096 bits too (the signature would not fit dkim_signature_max_bytes).
//   - Keys are immutable after loading; DkimKey::sign is safe from any number of threads.
//   - Crypto split (measured side by side, bench/README.md "DKIM signing"): the RSA private-key
//     operation runs on OpenSSL's libcrypto (3x wolfSSL's Debian build without AVX-512 IFMA,
//     5x with it), Ed25519 on wolfSSL (faster than libcrypto's). OpenSSL and wolfSSL headers never
//     meet in one translation unit: tls/dkim_openssl.cpp and tls/dkim_wolfssl.cpp each include one
//     of them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, opaque here

namespace ringmail::tls {

enum class DkimAlgorithm : uint8_t { rsa_sha256, ed25519_sha256 };

inline constexpr size_t dkim_digest_bytes = 32;          // SHA-256
inline constexpr size_t dkim_signature_max_bytes = 512;  // RSA-4096
inline constexpr size_t dkim_ed25519_seed_bytes = 32;    // RFC 8032 private key
inline constexpr size_t dkim_ed25519_public_bytes = 32;  // RFC 8032 public key
inline constexpr size_t dkim_ed25519_signature_bytes = 64;
inline constexpr unsigned dkim_rsa_bits_min = 1024;  // RFC 8301 §3.2
inline constexpr unsigned dkim_rsa_bits_max = 4096;
inline constexpr size_t dkim_key_file_max_bytes = 64 * 1024;
inline constexpr size_t dkim_key_table_max_bytes = 16 * 1024 * 1024;
inline constexpr size_t dkim_key_table_entries_max = 10000;
static_assert(dkim_rsa_bits_max / 8 <= dkim_signature_max_bytes);

using DkimDigest = std::array<uint8_t, dkim_digest_bytes>;

[[nodiscard]] std::string_view dkim_algorithm_name(DkimAlgorithm a) noexcept;

class DkimKey {
  public:
    // Parses a PEM private key (RSA PKCS#1/PKCS#8, Ed25519 PKCS#8). nullptr and *error (one
    // line, no trailing newline) when it is not one, or an RSA key outside the size bounds.
    [[nodiscard]] static std::unique_ptr<DkimKey> from_pem(std::string_view pem,
                                                           std::string* error);
    // A fresh key as PKCS#8 PEM (tests, benchmarks, `ringmail-dkim genkey`); empty on failure.
    [[nodiscard]] static std::string generate_pem(DkimAlgorithm algorithm,
                                                  unsigned rsa_bits = 2048);
    ~DkimKey();
    DkimKey(const DkimKey&) = delete;
    DkimKey& operator=(const DkimKey&) = delete;

    [[nodiscard]] DkimAlgorithm algorithm() const noexcept { return algorithm_; }
    [[nodiscard]] unsigned bits() const noexcept { return bits_; }  // RSA modulus; 256 for Ed25519
    [[nodiscard]] size_t signature_bytes() const noexcept;

    // Signs the SHA-256 digest of the canonical header data: RSASSA-PKCS1-v1_5 over it
    // (RFC 6376 §3.3.1), or Ed25519 with the 32 digest bytes as the message (RFC 8463 §3).
    // Returns the signature's length, 0 on failure (cap too small, library error).
    [[nodiscard]] size_t sign(const DkimDigest& digest, uint8_t* out, size_t cap) const noexcept;

    // The p= value of the key's DNS record: base64 of the SubjectPublicKeyInfo DER for RSA
    // (RFC 6376 §3.6.1), of the raw 32-byte public key for Ed25519 (RFC 8463 §4).
    [[nodiscard]] std::string public_key_base64() const;
    // The whole TXT record, "v=DKIM1; k=rsa; p=…".
    [[nodiscard]] std::string dns_record() const;

    // For the benchmark's side-by-side: PKCS#1 DER of an RSA key (empty for Ed25519).
    [[nodiscard]] std::string rsa_private_der() const;

  private:
    DkimKey() = default;
    DkimAlgorithm algorithm_ = DkimAlgorithm::rsa_sha256;
    unsigned bits_ = 0;
    evp_pkey_st* rsa_ = nullptr;  // owned; RSA only
    std::array<uint8_t, dkim_ed25519_seed_bytes> seed_{};
    std::array<uint8_t, dkim_ed25519_public_bytes> public_{};
};

struct DkimKeyEntry {
    std::string domain;  // lower case, no trailing dot
    std::string selector;
    DkimAlgorithm algorithm;
    std::shared_ptr<const DkimKey> key;
};

// What a domain signs with: the entries of the most specific listed domain (RSA first).
struct DkimKeyMatch {
    std::array<const DkimKeyEntry*, 2> entries{};
    size_t count = 0;
};

class DkimKeyTable {
  public:
    // Reads the table file and every key it names. False and *error (one line) on any fault.
    [[nodiscard]] bool load_file(const std::string& path, std::string* error);
    // The same from text; relative key paths are read relative to base_dir ("" = as given).
    // source names the table in error messages.
    [[nodiscard]] bool load_text(std::string_view text, std::string_view source,
                                 const std::string& base_dir, std::string* error);

    // Keys for a From: domain: the domain itself or its nearest listed parent (d= may be the
    // organizational domain). Case-insensitive; a trailing dot is ignored.
    [[nodiscard]] DkimKeyMatch find(std::string_view domain) const noexcept;
    [[nodiscard]] size_t size() const noexcept { return entries_.size(); }
    [[nodiscard]] const std::vector<DkimKeyEntry>& entries() const noexcept { return entries_; }

  private:
    std::vector<DkimKeyEntry> entries_;  // sorted by domain, RSA before Ed25519
};

// Reads a whole file of at most max_bytes; false and *error otherwise.
[[nodiscard]] bool dkim_read_file(const std::string& path, size_t max_bytes, std::string* out,
                                  std::string* error);

}  // namespace ringmail::tls
