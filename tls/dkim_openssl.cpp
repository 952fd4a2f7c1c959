// dkim_openssl.cpp — the OpenSSL half of DKIM crypto: PEM parsing, the RSA private-key
// operation, RSA public-key export and key generation. See dkim_crypto.hpp for why it is alone.
//
// RSA signs here because Debian's wolfSSL runs RSA on generic big-number code while libcrypto
// uses the CPU's multiply extensions (ADX/BMI2, AVX-512 IFMA where present): 3x to 5x the
// RSA-2048 signatures per core (bench/README.md, DKIM signing); DKIM at relay rates needs that.
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <climits>

#include "tls/dkim_crypto.hpp"

namespace ringmail::tls::dkim_crypto {
namespace {

std::string last_openssl_error() {
    const unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return "no key found";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

}  // namespace

bool openssl_parse_pem(std::string_view pem, ParsedKey* out, std::string* error) {
    if (pem.size() > INT_MAX) {
        *error = "key file too large";
        return false;
    }
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (bio == nullptr) {
        *error = "out of memory";
        return false;
    }
    // A PKCS#1 "RSA PRIVATE KEY" and a PKCS#8 "PRIVATE KEY" are both read here; a passphrase
    // callback that returns nothing makes an encrypted key fail instead of prompting.
    EVP_PKEY* key = PEM_read_bio_PrivateKey(
        bio, nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
    BIO_free(bio);
    if (key == nullptr) {
        *error = "not a PEM private key (" + last_openssl_error() + ")";
        return false;
    }
    const int id = EVP_PKEY_get_base_id(key);
    if (id == EVP_PKEY_RSA) {
        out->algorithm = DkimAlgorithm::rsa_sha256;
        out->bits = static_cast<unsigned>(EVP_PKEY_get_bits(key));
        out->rsa = key;
        return true;
    }
    if (id == EVP_PKEY_ED25519) {
        size_t len = out->seed.size();
        const bool ok = EVP_PKEY_get_raw_private_key(key, out->seed.data(), &len) == 1 &&
                        len == out->seed.size();
        EVP_PKEY_free(key);
        if (!ok) {
            *error = "unreadable Ed25519 private key";
            return false;
        }
        out->algorithm = DkimAlgorithm::ed25519_sha256;
        out->bits = 256;
        return true;
    }
    EVP_PKEY_free(key);
    *error = "key is neither RSA nor Ed25519";
    return false;
}

void openssl_free(evp_pkey_st* key) noexcept {
    EVP_PKEY_free(key);
}

size_t openssl_rsa_sign(evp_pkey_st* key, const DkimDigest& digest, uint8_t* out,
                        size_t cap) noexcept {
    // A context per call: EVP_PKEY_CTX is not shareable between threads, the key is. Its cost
    // (a few allocations) is under 1% of the 0.3–0.8 ms private-key operation.
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(key, nullptr);
    if (ctx == nullptr) return 0;
    size_t len = cap;
    const bool ok = EVP_PKEY_sign_init(ctx) == 1 &&
                    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) == 1 &&
                    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1 &&
                    EVP_PKEY_sign(ctx, out, &len, digest.data(), digest.size()) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        return 0;
    }
    return len;
}

std::string openssl_rsa_public_der(evp_pkey_st* key) {
    unsigned char* der = nullptr;
    const int len = i2d_PUBKEY(key, &der);
    if (len <= 0) return {};
    std::string s(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
    return s;
}

std::string openssl_rsa_private_der(evp_pkey_st* key) {
    // i2d_PrivateKey writes the type-specific form: PKCS#1 RSAPrivateKey for RSA.
    unsigned char* der = nullptr;
    const int len = i2d_PrivateKey(key, &der);
    if (len <= 0) return {};
    std::string s(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
    OPENSSL_clear_free(der, static_cast<size_t>(len));
    return s;
}

std::string openssl_generate_pem(DkimAlgorithm algorithm, unsigned rsa_bits) {
    EVP_PKEY* key = algorithm == DkimAlgorithm::rsa_sha256
                        ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(rsa_bits))
                        : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    if (key == nullptr) return {};
    std::string pem;
    BIO* bio = BIO_new(BIO_s_mem());
    if (bio != nullptr &&
        PEM_write_bio_PKCS8PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1) {
        char* data = nullptr;
        const long len = BIO_get_mem_data(bio, &data);
        if (len > 0) pem.assign(data, static_cast<size_t>(len));
    }
    BIO_free(bio);
    EVP_PKEY_free(key);
    return pem;
}

}  // namespace ringmail::tls::dkim_crypto
