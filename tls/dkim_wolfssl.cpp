// dkim_wolfssl.cpp — the wolfSSL half of DKIM crypto: SHA-256 and Ed25519 (RFC 8463).
// See dkim_crypto.hpp for why it is alone.
#include "tls/dkim_canon.hpp"
#include "tls/dkim_crypto.hpp"

// options.h must come first: it carries the feature macros Debian's wolfSSL was built with.
// clang-format off
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/ed25519.h>
#include <wolfssl/wolfcrypt/sha256.h>
// clang-format on

#include <cstdio>
#include <cstdlib>
#include <new>

namespace ringmail::tls {
namespace {

static_assert(sizeof(wc_Sha256) <= dkim_sha256_state_bytes);
static_assert(alignof(wc_Sha256) <= 16);

wc_Sha256* as_sha(unsigned char* state) noexcept {
    return std::launder(reinterpret_cast<wc_Sha256*>(state));
}

void require(bool ok, const char* what) noexcept {
    if (ok) return;
    std::fprintf(stderr, "ringmail: dkim invariant broken: %s\n", what);
    std::abort();
}

}  // namespace

DkimSha256::DkimSha256() noexcept {
    require(wc_InitSha256(new (state_) wc_Sha256) == 0, "wc_InitSha256");
}

DkimSha256::~DkimSha256() {
    wc_Sha256Free(as_sha(state_));
}

void DkimSha256::update(const void* data, size_t len) noexcept {
    // wolfSSL takes word32 lengths; split anything longer.
    const auto* p = static_cast<const byte*>(data);
    while (len != 0) {
        const word32 n = len > 0x40000000u ? 0x40000000u : static_cast<word32>(len);
        require(wc_Sha256Update(as_sha(state_), p, n) == 0, "wc_Sha256Update");
        p += n;
        len -= n;
    }
}

DkimDigest DkimSha256::finish() noexcept {
    DkimDigest d;
    // wc_Sha256Final resets the state for the next use.
    require(wc_Sha256Final(as_sha(state_), d.data()) == 0, "wc_Sha256Final");
    return d;
}

namespace dkim_crypto {

bool wolf_ed25519_public(const std::array<uint8_t, dkim_ed25519_seed_bytes>& seed,
                         std::array<uint8_t, dkim_ed25519_public_bytes>* out) noexcept {
    ed25519_key key;
    if (wc_ed25519_init(&key) != 0) return false;
    const bool ok =
        wc_ed25519_import_private_only(seed.data(), seed.size(), &key) == 0 &&
        wc_ed25519_make_public(&key, out->data(), static_cast<word32>(out->size())) == 0;
    wc_ed25519_free(&key);
    return ok;
}

size_t wolf_ed25519_sign(const std::array<uint8_t, dkim_ed25519_seed_bytes>& seed,
                         const std::array<uint8_t, dkim_ed25519_public_bytes>& pub,
                         const uint8_t* msg, size_t len, uint8_t* out, size_t cap) noexcept {
    if (cap < dkim_ed25519_signature_bytes) return 0;
    // A key object per call: Debian builds wolfSSL with WOLFSSL_ED25519_PERSISTENT_SHA, so an
    // ed25519_key carries hash state and must not be shared by signing threads. The import is
    // "trusted" (the public half was derived from the seed at load): the untrusted import
    // re-derives it, a scalar multiplication that halved the signing rate.
    ed25519_key key;
    if (wc_ed25519_init(&key) != 0) return 0;
    word32 out_len = static_cast<word32>(cap);
    const bool ok = wc_ed25519_import_private_key_ex(seed.data(), seed.size(), pub.data(),
                                                     pub.size(), &key, /*trusted=*/1) == 0 &&
                    wc_ed25519_sign_msg(msg, static_cast<word32>(len), out, &out_len, &key) == 0;
    wc_ed25519_free(&key);
    return ok ? out_len : 0;
}

}  // namespace dkim_crypto
}  // namespace ringmail::tls
