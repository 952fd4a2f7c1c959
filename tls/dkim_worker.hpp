// dkim_worker.hpp — computes DKIM signatures off the reactor thread.
//
// An RSA-2048 signature costs 0.3–0.8 ms of CPU even on OpenSSL: signed inline it would stall
// every session of a core. Each reactor owns one DkimWorker: it submits (token, key, digest) —
// the digest is DkimSigner::header_digest(i), the SHA-256 of the message's canonical header
// data — on a bounded SPSC request ring (core/base/spsc_ring.hpp); a thread signs them and the
// signatures come back on a completion ring, announced by an eventfd the reactor keeps a read
// armed on. The reactor then calls DkimSigner::append_header_field with each signature.
//
// Guarantees:
//   - Bounded: at most capacity requests are in flight (submitted, result not yet polled);
//     submit() refuses more (back-pressure: the session holds its 250 until there is room), so
//     the completion ring can never overflow and the worker never blocks on it.
//   - Every accepted request yields exactly one result, with its token; a result with
//     signature_len 0 means the key failed to sign (a library error), never a lost request.
//   - No lost wake-ups in either direction: both sides drain their ring after every wake and
//     block only on an eventfd whose counter records any wake sent since their last drain.
//   - submit(), poll() and completion_fd() belong to one thread (the owning reactor).
//   - Keys are borrowed: a key must outlive every request that names it (the key table is
//     loaded before the workers start and kept until they stop).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "core/base/spsc_ring.hpp"
#include "tls/dkim_keys.hpp"

namespace ringmail::tls {

inline constexpr size_t dkim_worker_capacity_default = 64;  // per reactor; power of two

struct DkimSignRequest {
    uint64_t token;
    const DkimKey* key;
    DkimDigest digest;
};

struct DkimSignResult {
    uint64_t token;
    uint16_t signature_len;  // 0: signing failed
    uint8_t signature[dkim_signature_max_bytes];
};

class DkimWorker {
  public:
    // Check ok() before use.
    explicit DkimWorker(size_t capacity = dkim_worker_capacity_default);
    ~DkimWorker();  // stops and joins the thread; pending requests are dropped
    DkimWorker(const DkimWorker&) = delete;
    DkimWorker& operator=(const DkimWorker&) = delete;

    [[nodiscard]] bool ok() const noexcept { return thread_.joinable(); }

    // False when capacity requests are already in flight. Wakes the worker.
    [[nodiscard]] bool submit(uint64_t token, const DkimKey& key,
                              const DkimDigest& digest) noexcept;
    // Moves up to max results into out; returns how many.
    [[nodiscard]] size_t poll(DkimSignResult* out, size_t max) noexcept;
    // Readable (8-byte counter) when results may be waiting; read it, then poll() to empty.
    [[nodiscard]] int completion_fd() const noexcept { return completion_fd_; }
    [[nodiscard]] size_t in_flight() const noexcept { return in_flight_; }

  private:
    void run() noexcept;
    [[nodiscard]] bool process_batch() noexcept;

    const size_t capacity_;
    SpscRing<DkimSignRequest> requests_;
    SpscRing<DkimSignResult> results_;
    int request_fd_ = -1;     // blocking eventfd the worker waits on
    int completion_fd_ = -1;  // non-blocking eventfd the reactor watches
    size_t in_flight_ = 0;    // reactor side only
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

}  // namespace ringmail::tls
