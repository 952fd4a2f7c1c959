// dkim_bench.cpp — DKIM signing costs (Google Benchmark program): the RSA-2048 private-key
// operation on OpenSSL's libcrypto (what DkimKey uses) next to wolfSSL's (Debian's build),
// Ed25519 on wolfSSL, and the streaming relaxed body hash. Run: build/bench/dkim_bench.
//
// These decide where signatures are computed: a core relaying 10,000 msg/s needs 10,000
// signatures/s, and the body hash runs over every byte a signed message carries. Both RSA
// paths sign the same DigestInfo with the same key and must give the same bytes (PKCS#1 v1.5 is
// deterministic); the benchmark stops with an error if they do not.
#include <benchmark/benchmark.h>

// This file sees wolfSSL only (OpenSSL is reached through DkimKey), like tls/dkim_wolfssl.cpp.
// clang-format off
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>
// clang-format on

#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include "tls/dkim_canon.hpp"
#include "tls/dkim_keys.hpp"
#include "tls/dkim_sign.hpp"

namespace {

using ringmail::tls::DkimAlgorithm;
using ringmail::tls::DkimDigest;
using ringmail::tls::DkimKey;

const DkimKey& key(DkimAlgorithm a) {
    static std::unique_ptr<DkimKey> rsa;
    static std::unique_ptr<DkimKey> ed;
    std::unique_ptr<DkimKey>& k = a == DkimAlgorithm::rsa_sha256 ? rsa : ed;
    if (k == nullptr) {
        std::string error;
        k = DkimKey::from_pem(DkimKey::generate_pem(a, 2048), &error);
        if (k == nullptr) std::abort();
    }
    return *k;
}

const DkimDigest digest = ringmail::tls::dkim_sha256("canonical header data");

void BM_RsaSign2048_OpenSSL(benchmark::State& state) {
    const DkimKey& k = key(DkimAlgorithm::rsa_sha256);
    uint8_t sig[ringmail::tls::dkim_signature_max_bytes];
    for (auto _ : state) {
        const size_t n = k.sign(digest, sig, sizeof sig);
        benchmark::DoNotOptimize(n);
    }
    state.counters["sign/s"] =
        benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_RsaSign2048_OpenSSL)->Unit(benchmark::kMicrosecond)->MinTime(3);

void BM_RsaSign2048_wolfSSL(benchmark::State& state) {
    const DkimKey& k = key(DkimAlgorithm::rsa_sha256);
    const std::string der = k.rsa_private_der();
    RsaKey rsa;
    WC_RNG rng;
    word32 idx = 0;
    if (wc_InitRng(&rng) != 0 || wc_InitRsaKey(&rsa, nullptr) != 0 ||
        wc_RsaPrivateKeyDecode(reinterpret_cast<const byte*>(der.data()), &idx, &rsa,
                               static_cast<word32>(der.size())) != 0 ||
        wc_RsaSetRNG(&rsa, &rng) != 0) {
        state.SkipWithError("wolfSSL could not load the key");
        return;
    }
    byte info[128];  // DigestInfo(SHA-256, digest), what PKCS#1 v1.5 signs (RFC 8017 §9.2)
    const word32 info_len = wc_EncodeSignature(
        info, digest.data(), static_cast<word32>(digest.size()), wc_GetCTC_HashOID(WC_SHA256));
    byte sig[512];
    uint8_t expect[512];
    const size_t expect_len = k.sign(digest, expect, sizeof expect);
    const int n = wc_RsaSSL_Sign(info, info_len, sig, sizeof sig, &rsa, &rng);
    if (n <= 0 || static_cast<size_t>(n) != expect_len ||
        std::memcmp(sig, expect, expect_len) != 0) {
        state.SkipWithError("wolfSSL and OpenSSL signatures differ");
    } else {
        for (auto _ : state) {
            const int len = wc_RsaSSL_Sign(info, info_len, sig, sizeof sig, &rsa, &rng);
            benchmark::DoNotOptimize(len);
        }
        state.counters["sign/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                      benchmark::Counter::kIsRate);
    }
    wc_FreeRsaKey(&rsa);
    wc_FreeRng(&rng);
}
BENCHMARK(BM_RsaSign2048_wolfSSL)->Unit(benchmark::kMicrosecond)->MinTime(3);

void BM_Ed25519Sign_wolfSSL(benchmark::State& state) {
    const DkimKey& k = key(DkimAlgorithm::ed25519_sha256);
    uint8_t sig[ringmail::tls::dkim_signature_max_bytes];
    for (auto _ : state) {
        const size_t n = k.sign(digest, sig, sizeof sig);
        benchmark::DoNotOptimize(n);
    }
    state.counters["sign/s"] =
        benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Ed25519Sign_wolfSSL)->Unit(benchmark::kMicrosecond)->MinTime(3);

// A text body of state.range(0) bytes (72-column lines, a double space now and then, some
// trailing white space), fed in 16 KiB pieces as receive buffers would bring it.
std::string text_body(size_t bytes) {
    std::string body;
    const std::string line =
        "Lorem ipsum dolor sit amet,  consectetur adipiscing elit, sed do eiusmod \r\n";
    while (body.size() < bytes)
        body += line;
    body.resize(bytes);
    return body;
}

void BM_RelaxedBodyHash(benchmark::State& state) {
    const std::string body = text_body(static_cast<size_t>(state.range(0)));
    ringmail::tls::RelaxedBodyHasher h;
    constexpr size_t piece = 16384;
    for (auto _ : state) {
        h.reset();
        for (size_t off = 0; off < body.size(); off += piece) {
            h.feed(std::string_view(body).substr(off, piece));
        }
        benchmark::DoNotOptimize(h.finish());
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_RelaxedBodyHash)->Arg(1024)->Arg(64 << 10)->Arg(1 << 20);

// SHA-256 alone over the same bytes: the floor under the body hash.
void BM_Sha256(benchmark::State& state) {
    const std::string body = text_body(static_cast<size_t>(state.range(0)));
    for (auto _ : state)
        benchmark::DoNotOptimize(ringmail::tls::dkim_sha256(body));
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Sha256)->Arg(1 << 20);

// A whole 4 KiB message through the signer up to the digests (everything a reactor does for
// one message; the signature itself is the worker's).
void BM_SignerPrepare(benchmark::State& state) {
    ringmail::tls::DkimKeyTable table;
    const std::string pem = DkimKey::generate_pem(DkimAlgorithm::ed25519_sha256);
    char path[] = "dkim-bench-key-XXXXXX";  // in the working directory, removed at once
    const int fd = mkstemp(path);
    if (fd < 0 || write(fd, pem.data(), pem.size()) != static_cast<ssize_t>(pem.size())) {
        state.SkipWithError("cannot write a key file");
        return;
    }
    close(fd);
    std::string error;
    const bool loaded =
        table.load_text(std::string("example.com s ed25519-sha256 ") + path, "bench", "", &error);
    unlink(path);
    if (!loaded) {
        state.SkipWithError(error.c_str());
        return;
    }
    const std::string message =
        "From: Joe <joe@example.com>\r\nTo: a@example.net\r\nSubject: hello\r\n"
        "Date: Tue, 8 Dec 2026 04:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n" +
        text_body(4096);
    ringmail::tls::DkimSigner signer;
    for (auto _ : state) {
        signer.reset();
        signer.feed(message);
        benchmark::DoNotOptimize(signer.prepare(table, {1700000000, 0}));
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_SignerPrepare);

}  // namespace
