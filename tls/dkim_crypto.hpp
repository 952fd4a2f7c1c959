// dkim_crypto.hpp — the two crypto back ends of DKIM, internal to tls/dkim_*.cpp.
//
// OpenSSL's libcrypto and wolfSSL both define names like RSA, SHA256 and EVP_*, and wolfSSL's
// OpenSSL compatibility layer redefines them as macros: one translation unit must never see both.
// tls/dkim_openssl.cpp includes only OpenSSL and implements openssl_*; tls/dkim_wolfssl.cpp
// includes only wolfSSL and implements wolf_* and DkimSha256. Everything else talks to these.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tls/dkim_keys.hpp"

namespace ringmail::tls::dkim_crypto {

// --- OpenSSL (tls/dkim_openssl.cpp) ---------------------------------------------------------

struct ParsedKey {
    DkimAlgorithm algorithm = DkimAlgorithm::rsa_sha256;
    unsigned bits = 0;
    evp_pkey_st* rsa = nullptr;                           // owned by the caller on success (RSA)
    std::array<uint8_t, dkim_ed25519_seed_bytes> seed{};  // Ed25519
};

// Any PEM private key OpenSSL reads; refuses types other than RSA and Ed25519.
[[nodiscard]] bool openssl_parse_pem(std::string_view pem, ParsedKey* out, std::string* error);
void openssl_free(evp_pkey_st* key) noexcept;
// RSASSA-PKCS1-v1_5 over a SHA-256 digest (EVP_PKEY_sign wraps it in the DigestInfo).
[[nodiscard]] size_t openssl_rsa_sign(evp_pkey_st* key, const DkimDigest& digest, uint8_t* out,
                                      size_t cap) noexcept;
[[nodiscard]] std::string openssl_rsa_public_der(evp_pkey_st* key);   // SubjectPublicKeyInfo
[[nodiscard]] std::string openssl_rsa_private_der(evp_pkey_st* key);  // PKCS#1 RSAPrivateKey
[[nodiscard]] std::string openssl_generate_pem(DkimAlgorithm algorithm, unsigned rsa_bits);

// --- wolfSSL (tls/dkim_wolfssl.cpp) ---------------------------------------------------------

[[nodiscard]] bool wolf_ed25519_public(
    const std::array<uint8_t, dkim_ed25519_seed_bytes>& seed,
    std::array<uint8_t, dkim_ed25519_public_bytes>* out) noexcept;
// Ed25519 (RFC 8032) over msg; returns 64, or 0 on failure.
[[nodiscard]] size_t wolf_ed25519_sign(const std::array<uint8_t, dkim_ed25519_seed_bytes>& seed,
                                       const std::array<uint8_t, dkim_ed25519_public_bytes>& pub,
                                       const uint8_t* msg, size_t len, uint8_t* out,
                                       size_t cap) noexcept;

}  // namespace ringmail::tls::dkim_crypto
