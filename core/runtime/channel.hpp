// channel.hpp — the only mutable state shared between cores: bounded SPSC rings and wake-ups.
//
// Each reactor thread owns one io_uring; when it has work for another core it pushes a value
// onto the SpscRing for that (from, to) pair of the ChannelMesh and wakes the target with an
// IORING_OP_MSG_RING sent through its own ring (or, where MSG_RING is missing, a write to an
// eventfd that the target keeps a read armed on). Called by the reactor loops (core/) and the
// scheduler's cross-core hand-offs.
//
// Guarantees:
//   - A ring never grows: capacity is fixed at construction and a full ring makes try_push
//     return false (back-pressure). No allocation after construction.
//   - Values come out in the order they went in, each exactly once.
//   - Producer and consumer synchronise with acquire/release on two indices only: no locks,
//     no CAS, no seq_cst. Debug builds abort if a second thread acts as producer or consumer.
//
// Wake protocol (no lost wake-ups, no wake storms):
//   1. During one loop iteration the producer pushes everything it has for a target, then —
//      only if it pushed at least one value — prepares exactly one wake for that target, and
//      submits once at the end of the iteration. The push's release store precedes the
//      io_uring_enter that sends the wake, so the values are visible before the wake CQE.
//   2. The consumer, on every loop iteration (it is a couple of loads when idle) and in any
//      case after reaping a wake CQE, drains each inbound ring until it is empty. It only
//      blocks in io_uring_enter after a drain found every inbound ring empty; a value pushed
//      after that drain has its wake sent after it, so the wait returns and the value is seen.
//   3. A wake that fails (target CQ gone, bad fd) posts a CQE on the sender's ring (prep_wake
//      asks for completions on failure only); the sender must re-send it next iteration,
//      otherwise the values it announced wait for the target's next unrelated wake-up.
//   4. Back-pressure has no wake: a producer facing a full ring keeps the value and retries on
//      a later iteration while still draining its own inbound rings, so two cores that fill
//      each other's rings cannot deadlock.
//
// MSG_RING and ring flags: the target ring may be created with SINGLE_ISSUER|DEFER_TASKRUN
// while the wake is sent from another thread's ring. The kernel posts the CQE to the target
// itself (since 6.1 via task work on the target's submitter task when it uses DEFER_TASKRUN),
// and it becomes visible when the target calls io_uring_enter with GETEVENTS — which
// io_uring_wait_cqe*, io_uring_submit_and_wait and io_uring_get_events all do. A plain
// io_uring_peek_cqe on a DEFER_TASKRUN ring does not enter the kernel and will not see it.
// tests/unit/channel_spsc_test.cpp checks this on the running kernel.
#pragma once

#include <liburing.h>

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
#include <vector>

#include "core/base/spsc_ring.hpp"

namespace ringmail {

// All channels of a process: ring(from, to) carries values from core `from` to core `to`.
// Sized once at start (cores × (cores − 1) rings of `capacity` each); a core never sends to
// itself, so the diagonal has no ring.
template <typename T>
class ChannelMesh {
  public:
    ChannelMesh(uint32_t cores, size_t capacity) : cores_(cores), rings_(size_t{cores} * cores) {
        channel_detail::require(cores != 0, "ChannelMesh needs at least one core");
        for (uint32_t from = 0; from < cores; ++from) {
            for (uint32_t to = 0; to < cores; ++to) {
                if (from != to) rings_[index(from, to)] = std::make_unique<SpscRing<T>>(capacity);
            }
        }
    }

    [[nodiscard]] SpscRing<T>& ring(uint32_t from, uint32_t to) noexcept {
        channel_detail::require(from < cores_ && to < cores_, "ChannelMesh core out of range");
        channel_detail::require(from != to, "a core has no channel to itself");
        return *rings_[index(from, to)];
    }

    [[nodiscard]] uint32_t cores() const noexcept { return cores_; }

  private:
    size_t index(uint32_t from, uint32_t to) const noexcept { return size_t{from} * cores_ + to; }

    const uint32_t cores_;
    std::vector<std::unique_ptr<SpscRing<T>>> rings_;
};

// --- Wake-ups ----------------------------------------------------------------------------------

// Prepares a wake of the ring whose fd is target_ring_fd: the target gets a CQE with
// user_data == user_data, res == 0, flags == 0. Sent through the producer's own ring
// (IORING_OP_MSG_RING, kernel ≥ 5.18). The sender gets a CQE only if the wake fails
// (IOSQE_CQE_SKIP_SUCCESS, kernel ≥ 5.17), so wakes do not double the CQ traffic; that CQE
// carries user_data 0 unless the caller sets its own after this call.
inline void prep_wake(io_uring_sqe* sqe, int target_ring_fd, uint64_t user_data) noexcept {
    io_uring_prep_msg_ring(sqe, target_ring_fd, 0, user_data, 0);
    io_uring_sqe_set_data64(sqe, 0);
    io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
}

// Fallback when MSG_RING is missing: writes the 8-byte counter increment *one (which must
// stay valid until the write completes — point it at a static) to the target's eventfd through
// the producer's ring. Completes on the sender only on failure, like prep_wake. Unlike
// MSG_RING (executed inline at submit), the eventfd write is not finished inline when the
// producer's ring uses DEFER_TASKRUN (seen on 6.18): the kernel completes it through task work
// that runs only when the producer next enters io_uring with GETEVENTS. A reactor does that on
// every iteration, so the wake is late by at most one iteration — but a producer that parks
// outside io_uring, or tears its ring down, delays or cancels it.
inline void prep_wake_eventfd(io_uring_sqe* sqe, int efd, const uint64_t* one) noexcept {
    io_uring_prep_write(sqe, efd, one, sizeof(*one), 0);
    io_uring_sqe_set_data64(sqe, 0);
    io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
}

// The target side of the eventfd fallback: a read of the counter into *counter, whose CQE
// (res == 8) is the wake. The consumer re-arms it after each completion, then drains.
inline void prep_wake_eventfd_read(io_uring_sqe* sqe, int efd, uint64_t* counter,
                                   uint64_t user_data) noexcept {
    io_uring_prep_read(sqe, efd, counter, sizeof(*counter), 0);
    io_uring_sqe_set_data64(sqe, user_data);
}

// True when the kernel behind `ring` supports IORING_OP_MSG_RING. Allocates a probe: call it
// at start-up, not on the data path.
[[nodiscard]] inline bool msg_ring_supported(io_uring* ring) noexcept {
    io_uring_probe* probe = io_uring_get_probe_ring(ring);
    if (probe == nullptr) return false;
    const bool supported = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
    io_uring_free_probe(probe);
    return supported;
}

}  // namespace ringmail
