// auth_worker.hpp — runs crypt(3) password checks off the reactor thread.
//
// A crypt check costs milliseconds on purpose (yescrypt, SHA-512-crypt), which would stall
// every session of a core. Each reactor owns one AuthWorker: it submits (token, user,
// password) on a bounded SPSC request ring (core/base/spsc_ring.hpp), a thread verifies them
// against the shared read-only AuthUsers, and the results come back on a completion ring, announced
// by an eventfd the reactor keeps a read armed on (prep_wake_eventfd_read) — the worker has no
// io_uring of its own to send a MSG_RING from.
//
// Guarantees:
//   - Bounded: at most capacity requests are in flight (submitted, result not yet polled);
//     submit() refuses more (back-pressure: the session waits or answers 454 4.7.0), so the
//     completion ring can never overflow and the worker never blocks on it.
//   - Every accepted request yields exactly one result, with its token.
//   - No lost wake-ups in either direction: both sides drain their ring after every wake and
//     block only on an eventfd whose counter records any wake sent since their last drain.
//   - submit(), poll() and completion_fd() belong to one thread (the owning reactor).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <thread>

#include "core/base/spsc_ring.hpp"
#include "tls/auth.hpp"

namespace ringmail::tls {

inline constexpr size_t auth_worker_capacity_default = 64;  // per reactor; power of two

struct AuthRequest {
    uint64_t token;
    uint16_t user_len;
    uint16_t pass_len;
    char user[auth_field_max_bytes];
    char pass[auth_field_max_bytes];
};

struct AuthResult {
    uint64_t token;
    bool ok;
};

class AuthWorker {
  public:
    // users must outlive the worker. Check ok() before use.
    AuthWorker(const AuthUsers& users, size_t capacity = auth_worker_capacity_default);
    ~AuthWorker();  // stops and joins the thread; pending requests are dropped
    AuthWorker(const AuthWorker&) = delete;
    AuthWorker& operator=(const AuthWorker&) = delete;

    [[nodiscard]] bool ok() const noexcept { return thread_.joinable(); }

    // False when capacity requests are already in flight or a field is too long (the
    // exchange never produces one). Wakes the worker.
    [[nodiscard]] bool submit(uint64_t token, std::string_view user,
                              std::string_view password) noexcept;
    // Moves up to max results into out; returns how many.
    [[nodiscard]] size_t poll(AuthResult* out, size_t max) noexcept;
    // Readable (8-byte counter) when results may be waiting; read it, then poll() to empty.
    [[nodiscard]] int completion_fd() const noexcept { return completion_fd_; }
    [[nodiscard]] size_t in_flight() const noexcept { return in_flight_; }

  private:
    void run() noexcept;
    [[nodiscard]] bool process_batch(CryptScratch& scratch) noexcept;

    const AuthUsers& users_;
    const size_t capacity_;
    SpscRing<AuthRequest> requests_;
    SpscRing<AuthResult> results_;
    int request_fd_ = -1;     // blocking eventfd the worker waits on
    int completion_fd_ = -1;  // non-blocking eventfd the reactor watches
    size_t in_flight_ = 0;    // reactor side only
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

}  // namespace ringmail::tls
