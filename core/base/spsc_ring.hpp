// spsc_ring.hpp — a bounded single-producer single-consumer ring of trivially copyable
// values: the one structure through which threads of ringmail share mutable state (cores'
// channels in core/runtime/channel.hpp, the AUTH worker's requests and results in tls/).
//
// Guarantees: a ring never grows (capacity fixed at construction; a full ring makes try_push
// return false: back-pressure); values come out in order, each once; producer and consumer
// synchronise with acquire/release on two indices only (no locks, no CAS). Debug builds abort
// if a second thread acts as producer or consumer. Includes nothing of ours.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <type_traits>

namespace ringmail {

inline constexpr size_t cache_line_bytes = 64;

namespace channel_detail {

[[noreturn]] inline void die(const char* what) noexcept {
    std::fprintf(stderr, "ringmail: channel invariant broken: %s\n", what);
    std::abort();
}

inline void require(bool ok, const char* what) noexcept {
    if (!ok) die(what);
}

// Records the first thread to act in a role and aborts if another one ever does: two
// producers (or two consumers) on one SPSC ring would silently corrupt it.
class RoleOwner {
  public:
    void check([[maybe_unused]] const char* role) noexcept {
#ifndef NDEBUG
        const std::thread::id self = std::this_thread::get_id();
        std::thread::id seen = owner_.load(std::memory_order_relaxed);
        if (seen == self) return;
        if (seen == std::thread::id{} &&
            owner_.compare_exchange_strong(seen, self, std::memory_order_relaxed)) {
            return;
        }
        die(role);
#endif
    }

  private:
#ifndef NDEBUG
    std::atomic<std::thread::id> owner_{};
#endif
};

struct FreeAligned {
    size_t align;
    void operator()(void* p) const noexcept { ::operator delete (p, std::align_val_t{align}); }
};

}  // namespace channel_detail

// Bounded single-producer single-consumer ring of trivially copyable values.
//
// Indices run freely (64-bit, never wrap in practice) and are masked on access, so "full" is
// tail - head == capacity with no wasted slot. Each side keeps a private copy of the other
// side's index and reloads it only when its copy says full/empty: in the steady state the
// producer touches only its own cache line and the slots, and so does the consumer.
template <typename T>
class SpscRing {
    static_assert(std::is_trivially_copyable_v<T>, "values cross cores by memcpy");

  public:
    explicit SpscRing(size_t capacity)
        : mask_(capacity - 1),
          slots_(allocate(capacity), channel_detail::FreeAligned{slot_align()}) {
        channel_detail::require(capacity != 0 && (capacity & (capacity - 1)) == 0,
                                "SpscRing capacity must be a power of two");
    }

    SpscRing(const SpscRing&) = delete;
    SpscRing& operator=(const SpscRing&) = delete;

    // Producer side. False when full: the caller keeps the value (back-pressure).
    [[nodiscard]] bool try_push(const T& value) noexcept {
        producer_.check("second producer thread on an SpscRing");
        const uint64_t tail = tail_.load(std::memory_order_relaxed);
        if (tail - cached_head_ > mask_) {
            cached_head_ = head_.load(std::memory_order_acquire);
            if (tail - cached_head_ > mask_) return false;
        }
        std::memcpy(slot(tail), &value, sizeof(T));
        tail_.store(tail + 1, std::memory_order_release);
        return true;
    }

    // Producer side. Pushes as many of values[0..count) as fit, in order, with one release
    // store; returns how many went in (the rest stay with the caller).
    [[nodiscard]] size_t try_push_batch(const T* values, size_t count) noexcept {
        producer_.check("second producer thread on an SpscRing");
        const uint64_t tail = tail_.load(std::memory_order_relaxed);
        size_t room = capacity() - static_cast<size_t>(tail - cached_head_);
        if (room < count) {
            cached_head_ = head_.load(std::memory_order_acquire);
            room = capacity() - static_cast<size_t>(tail - cached_head_);
        }
        const size_t n = count < room ? count : room;
        for (size_t i = 0; i < n; ++i)
            std::memcpy(slot(tail + i), &values[i], sizeof(T));
        if (n != 0) tail_.store(tail + n, std::memory_order_release);
        return n;
    }

    // Consumer side. False when empty.
    [[nodiscard]] bool try_pop(T& out) noexcept { return pop_batch(&out, 1) == 1; }

    // Consumer side. Moves up to max values into out[0..n) in FIFO order, freeing their slots
    // with one release store; returns n (0 when empty).
    [[nodiscard]] size_t pop_batch(T* out, size_t max) noexcept {
        consumer_.check("second consumer thread on an SpscRing");
        const uint64_t head = head_.load(std::memory_order_relaxed);
        size_t ready = static_cast<size_t>(cached_tail_ - head);
        if (ready < max) {
            cached_tail_ = tail_.load(std::memory_order_acquire);
            ready = static_cast<size_t>(cached_tail_ - head);
        }
        channel_detail::require(ready <= capacity(), "SpscRing holds more than its capacity");
        const size_t n = max < ready ? max : ready;
        for (size_t i = 0; i < n; ++i)
            std::memcpy(&out[i], slot(head + i), sizeof(T));
        if (n != 0) head_.store(head + n, std::memory_order_release);
        return n;
    }

    // Exact when called by the consumer (nothing can disappear behind its back) or the
    // producer (nothing can appear); from any other thread it is a snapshot.
    [[nodiscard]] bool empty() const noexcept {
        return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
    }

    [[nodiscard]] size_t capacity() const noexcept { return mask_ + 1; }

  private:
    static constexpr size_t slot_align() noexcept {
        return alignof(T) > cache_line_bytes ? alignof(T) : cache_line_bytes;
    }

    static T* allocate(size_t capacity) {
        // operator new implicitly creates the T objects (trivially copyable ⇒ implicit-lifetime
        // type), so memcpy into and out of the slots is well defined.
        return static_cast<T*>(
            ::operator new (capacity * sizeof(T), std::align_val_t{slot_align()}));
    }

    T* slot(uint64_t index) const noexcept { return slots_.get() + (index & mask_); }

    // Producer's cache line: written by the producer, read by the consumer only when its
    // cached copy says empty.
    alignas(cache_line_bytes) std::atomic<uint64_t> tail_{0};
    uint64_t cached_head_ = 0;
    channel_detail::RoleOwner producer_;

    // Consumer's cache line, the mirror image.
    alignas(cache_line_bytes) std::atomic<uint64_t> head_{0};
    uint64_t cached_tail_ = 0;
    channel_detail::RoleOwner consumer_;

    // Read-only after construction, shared by both sides without bouncing.
    alignas(cache_line_bytes) const uint64_t mask_;
    const std::unique_ptr<T, channel_detail::FreeAligned> slots_;
};

}  // namespace ringmail
