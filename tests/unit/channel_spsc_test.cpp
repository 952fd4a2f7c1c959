// channel_spsc_test.cpp — pins the core-to-core channel (core/runtime/channel.hpp): SpscRing
// semantics, the mesh layout, and the io_uring wake-ups on the running kernel, including MSG_RING
// into a SINGLE_ISSUER|DEFER_TASKRUN ring owned by another thread and a two-way contention run that
// follows the documented wake protocol. Every wait is bounded by a deadline; nothing sleeps.
#include "core/runtime/channel.hpp"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <latch>
#include <thread>
#include <vector>

namespace ringmail {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kWakeTag = 0x57414b45'00000000ull;  // "WAKE" in the high half

// --- Single-thread semantics ----------------------------------------------------------------

TEST(SpscRing, RefusesPushAtCapacityAndAcceptsAgainAfterPop) {
    SpscRing<uint32_t> ring(8);
    EXPECT_EQ(ring.capacity(), 8u);
    for (uint32_t i = 0; i < 8; ++i)
        ASSERT_TRUE(ring.try_push(i));
    EXPECT_FALSE(ring.try_push(99));
    uint32_t v = 0;
    ASSERT_TRUE(ring.try_pop(v));
    EXPECT_EQ(v, 0u);
    EXPECT_TRUE(ring.try_push(8));
    EXPECT_FALSE(ring.try_push(100));
}

TEST(SpscRing, PopsInFifoOrderAndReportsEmpty) {
    SpscRing<uint64_t> ring(4);
    EXPECT_TRUE(ring.empty());
    uint64_t v = 7;
    EXPECT_FALSE(ring.try_pop(v));
    EXPECT_EQ(v, 7u) << "a failed pop must not touch the output";
    ASSERT_TRUE(ring.try_push(10));
    ASSERT_TRUE(ring.try_push(20));
    EXPECT_FALSE(ring.empty());
    ASSERT_TRUE(ring.try_pop(v));
    EXPECT_EQ(v, 10u);
    ASSERT_TRUE(ring.try_pop(v));
    EXPECT_EQ(v, 20u);
    EXPECT_TRUE(ring.empty());
}

TEST(SpscRing, KeepsOrderAcrossManyWrapArounds) {
    SpscRing<uint64_t> ring(8);
    uint64_t next_in = 0;
    uint64_t next_out = 0;
    // Uneven fill/drain sizes so head and tail cross the wrap point at every offset.
    for (int round = 0; round < 10000; ++round) {
        const int fill = 1 + round % 8;
        for (int i = 0; i < fill; ++i) {
            if (!ring.try_push(next_in)) break;
            ++next_in;
        }
        const int drain = 1 + (round * 5) % 7;
        for (int i = 0; i < drain; ++i) {
            uint64_t v = 0;
            if (!ring.try_pop(v)) break;
            ASSERT_EQ(v, next_out);
            ++next_out;
        }
    }
    EXPECT_GT(next_out, 8u * 1000) << "the ring wrapped far fewer times than intended";
    uint64_t v = 0;
    while (ring.try_pop(v))
        ASSERT_EQ(v, next_out++);
    EXPECT_EQ(next_out, next_in);
}

TEST(SpscRing, PopBatchTakesAtMostMaxInOrderAcrossTheWrap) {
    SpscRing<uint32_t> ring(8);
    uint32_t out[8] = {};
    for (uint32_t i = 0; i < 6; ++i)
        ASSERT_TRUE(ring.try_push(i));
    ASSERT_EQ(ring.pop_batch(out, 4), 4u);  // head now at 4: the next batch wraps
    for (uint32_t i = 0; i < 4; ++i)
        EXPECT_EQ(out[i], i);
    for (uint32_t i = 6; i < 12; ++i)
        ASSERT_TRUE(ring.try_push(i));
    EXPECT_FALSE(ring.try_push(12));
    ASSERT_EQ(ring.pop_batch(out, 8), 8u);
    for (uint32_t i = 0; i < 8; ++i)
        EXPECT_EQ(out[i], 4 + i);
    EXPECT_EQ(ring.pop_batch(out, 8), 0u);
    EXPECT_TRUE(ring.empty());
}

TEST(SpscRing, PushBatchStopsAtCapacity) {
    SpscRing<uint32_t> ring(4);
    const uint32_t in[6] = {1, 2, 3, 4, 5, 6};
    EXPECT_EQ(ring.try_push_batch(in, 6), 4u);
    EXPECT_EQ(ring.try_push_batch(in + 4, 2), 0u);
    uint32_t out[4] = {};
    ASSERT_EQ(ring.pop_batch(out, 4), 4u);
    for (uint32_t i = 0; i < 4; ++i)
        EXPECT_EQ(out[i], in[i]);
}

TEST(SpscRing, CarriesTriviallyCopyableStructsWithoutDefaultConstructor) {
    struct Handoff {
        Handoff(uint32_t m, uint16_t r) : message(m), recipient(r) {}
        uint32_t message;
        uint16_t recipient;
    };
    SpscRing<Handoff> ring(2);
    ASSERT_TRUE(ring.try_push(Handoff(42, 3)));
    Handoff out(0, 0);
    ASSERT_TRUE(ring.try_pop(out));
    EXPECT_EQ(out.message, 42u);
    EXPECT_EQ(out.recipient, 3u);
}

TEST(SpscRingDeathTest, RejectsCapacityNotAPowerOfTwo) {
    EXPECT_DEATH({ SpscRing<int> ring(6); }, "power of two");
    EXPECT_DEATH({ SpscRing<int> ring(0); }, "power of two");
}

#ifndef NDEBUG
TEST(SpscRingDeathTest, AbortsOnASecondProducerThread) {
    EXPECT_DEATH(
        {
            SpscRing<int> ring(4);
            (void)ring.try_push(1);
            std::thread other([&] { (void)ring.try_push(2); });
            other.join();
        },
        "second producer");
}
#endif

TEST(ChannelMesh, HasOneDistinctRingPerOrderedPairOfCores) {
    ChannelMesh<uint64_t> mesh(3, 16);
    EXPECT_EQ(mesh.cores(), 3u);
    // Tag each ring with its pair, then read every tag back from the same pair only.
    for (uint32_t from = 0; from < 3; ++from) {
        for (uint32_t to = 0; to < 3; ++to) {
            if (from == to) continue;
            ASSERT_TRUE(mesh.ring(from, to).try_push(from * 10 + to));
        }
    }
    for (uint32_t from = 0; from < 3; ++from) {
        for (uint32_t to = 0; to < 3; ++to) {
            if (from == to) continue;
            uint64_t v = 0;
            ASSERT_TRUE(mesh.ring(from, to).try_pop(v));
            EXPECT_EQ(v, from * 10 + to);
            EXPECT_TRUE(mesh.ring(from, to).empty());
            EXPECT_EQ(mesh.ring(from, to).capacity(), 16u);
        }
    }
}

TEST(ChannelMeshDeathTest, HasNoRingFromACoreToItself) {
    ChannelMesh<uint64_t> mesh(2, 4);
    EXPECT_DEATH((void)mesh.ring(1, 1), "itself");
    EXPECT_DEATH((void)mesh.ring(0, 2), "out of range");
}

// --- io_uring wake-ups ----------------------------------------------------------------------

// A reactor-style ring: SINGLE_ISSUER|DEFER_TASKRUN, or plain where the kernel lacks them.
// Must be created on the thread that will submit to it (SINGLE_ISSUER binds it).
struct ReactorRing {
    ReactorRing() {
        init_error = io_uring_queue_init(256, &ring,
                                         IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
        if (init_error == -EINVAL) init_error = io_uring_queue_init(256, &ring, 0);
    }
    ~ReactorRing() {
        if (init_error == 0) io_uring_queue_exit(&ring);
    }
    ReactorRing(const ReactorRing&) = delete;
    ReactorRing& operator=(const ReactorRing&) = delete;

    int fd() const { return ring.ring_fd; }

    io_uring ring{};
    int init_error = 0;
};

__kernel_timespec until(Clock::time_point deadline) {
    const auto left = deadline - Clock::now();
    const auto ns =
        left.count() > 0 ? std::chrono::duration_cast<std::chrono::nanoseconds>(left).count() : 0;
    return {.tv_sec = ns / 1'000'000'000, .tv_nsec = ns % 1'000'000'000};
}

TEST(Wake, MsgRingIsSupportedOnThisKernel) {
    ReactorRing r;
    ASSERT_EQ(r.init_error, 0);
    EXPECT_TRUE(msg_ring_supported(&r.ring));
}

// The target ring is SINGLE_ISSUER|DEFER_TASKRUN and owned by another thread; the wake must
// arrive there with our user_data, and nothing must come back to the sender on success.
TEST(Wake, MsgRingDeliversUserDataToAnotherThreadsDeferTaskrunRing) {
    constexpr uint64_t kData = 0xfeedface'cafef00dull;
    std::atomic<int> target_fd{-1};
    std::latch target_ready(1);
    io_uring_cqe seen{};
    int wait_result = 1;

    std::thread target([&] {
        ReactorRing r;
        target_fd = r.init_error == 0 ? r.fd() : -1;
        target_ready.count_down();
        if (r.init_error != 0) return;
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec ts = until(Clock::now() + std::chrono::seconds(10));
        wait_result = io_uring_wait_cqe_timeout(&r.ring, &cqe, &ts);
        if (wait_result == 0) {
            seen = *cqe;
            io_uring_cqe_seen(&r.ring, cqe);
        }
    });

    ReactorRing sender;
    target_ready.wait();
    ASSERT_EQ(sender.init_error, 0);
    ASSERT_GE(target_fd.load(), 0);
    prep_wake(io_uring_get_sqe(&sender.ring), target_fd, kData);
    EXPECT_EQ(io_uring_submit_and_get_events(&sender.ring), 1);
    target.join();

    ASSERT_EQ(wait_result, 0) << "no wake CQE on the target within 10 s";
    EXPECT_EQ(seen.user_data, kData);
    EXPECT_EQ(seen.res, 0);
    io_uring_cqe* cqe = nullptr;
    EXPECT_EQ(io_uring_peek_cqe(&sender.ring, &cqe), -EAGAIN)
        << "a successful wake must not post a CQE on the sender";
}

// A failed wake must not vanish: the sender hears about it and can re-send.
TEST(Wake, FailedWakeCompletesOnTheSender) {
    ReactorRing sender;
    ASSERT_EQ(sender.init_error, 0);
    const int not_a_ring = eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(not_a_ring, 0);
    io_uring_sqe* sqe = io_uring_get_sqe(&sender.ring);
    prep_wake(sqe, not_a_ring, 1);
    io_uring_sqe_set_data64(sqe, 77);
    ASSERT_EQ(io_uring_submit(&sender.ring), 1);
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts = until(Clock::now() + std::chrono::seconds(10));
    ASSERT_EQ(io_uring_wait_cqe_timeout(&sender.ring, &cqe, &ts), 0);
    EXPECT_EQ(cqe->user_data, 77u);
    EXPECT_LT(cqe->res, 0);
    io_uring_cqe_seen(&sender.ring, cqe);
    close(not_a_ring);
}

// The producer behaves as a reactor: after submitting the wake it blocks in its own ring's
// wait. That matters: on a DEFER_TASKRUN ring the eventfd write is not finished inline (the
// kernel retries it through task work that only runs when the producer enters io_uring with
// GETEVENTS), so a producer parked anywhere else would never deliver it. The consumer releases
// the producer with a MSG_RING ack once the wake has landed.
TEST(Wake, EventfdFallbackWakesAnArmedRead) {
    static const uint64_t kOne = 1;
    constexpr uint64_t kAck = 0xacc;
    ReactorRing consumer;
    ASSERT_EQ(consumer.init_error, 0);
    const int efd = eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    uint64_t counter = 0;
    prep_wake_eventfd_read(io_uring_get_sqe(&consumer.ring), efd, &counter, kWakeTag);
    ASSERT_EQ(io_uring_submit(&consumer.ring), 1);

    std::atomic<int> producer_fd{-1};
    std::latch producer_ready(1);
    uint64_t producer_saw = 0;
    std::thread producer([&] {
        ReactorRing r;
        producer_fd = r.init_error == 0 ? r.fd() : -1;
        producer_ready.count_down();
        if (r.init_error != 0) return;
        prep_wake_eventfd(io_uring_get_sqe(&r.ring), efd, &kOne);
        (void)io_uring_submit_and_get_events(&r.ring);
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec ts = until(Clock::now() + std::chrono::seconds(10));
        if (io_uring_wait_cqe_timeout(&r.ring, &cqe, &ts) == 0) producer_saw = cqe->user_data;
    });

    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts = until(Clock::now() + std::chrono::seconds(10));
    const int rc = io_uring_wait_cqe_timeout(&consumer.ring, &cqe, &ts);
    producer_ready.wait();
    if (producer_fd >= 0) {
        prep_wake(io_uring_get_sqe(&consumer.ring), producer_fd, kAck);
        EXPECT_EQ(io_uring_submit(&consumer.ring), 1);
    }
    producer.join();
    EXPECT_EQ(producer_saw, kAck) << "the producer's only CQE is the ack: its write succeeded";
    ASSERT_EQ(rc, 0) << "no eventfd wake within 10 s";
    EXPECT_EQ(cqe->user_data, kWakeTag);
    EXPECT_EQ(cqe->res, 8);
    EXPECT_EQ(counter, 1u);
    io_uring_cqe_seen(&consumer.ring, cqe);
    close(efd);
}

// --- Contention: two cores, both producer and consumer, following the wake protocol ---------

constexpr uint64_t kItems = 2'000'000;
constexpr size_t kChannelCapacity = 1024;
constexpr size_t kBatchMax = 64;

struct PeerResult {
    int init_error = 0;
    uint64_t received = 0;
    uint64_t first_out_of_order = UINT64_MAX;  // index of the first value out of sequence
    uint64_t wakes_sent = 0;
    uint64_t wakes_received = 0;
    uint64_t failed_wakes = 0;
    uint64_t foreign_cqes = 0;
    uint64_t blocking_waits = 0;  // times the loop slept in io_uring_enter on an empty ring
    bool timed_out = false;
};

// What the two peers share: the test's only cross-thread state apart from the rings.
struct Rendezvous {
    std::array<std::atomic<int>, 2> ring_fd{-1, -1};
    std::array<std::atomic<uint64_t>, 2> wakes_sent_final{0, 0};
    std::latch started{2};
    std::latch finished{2};  // after it, nobody sends another wake
    std::atomic<bool> abort{false};
    Clock::time_point deadline;
};

// One reactor loop iteration at a time: push a batch (one wake if anything went in), drain
// the inbound ring, and block on the ring only when there is nothing left to send and nothing
// arrived. Values are their own sequence numbers, so order and exactly-once are checked as
// they arrive.
class Peer {
  public:
    Peer(int self, uint64_t to_send, uint64_t to_receive, SpscRing<uint64_t>& out,
         SpscRing<uint64_t>& in, Rendezvous& rv)
        : self_(self), to_send_(to_send), to_receive_(to_receive), out_(out), in_(in), rv_(rv) {}

    PeerResult run() {
        ReactorRing r;
        result_.init_error = r.init_error;
        rv_.ring_fd[self_] = r.init_error == 0 ? r.fd() : -1;
        rv_.started.arrive_and_wait();
        peer_fd_ = rv_.ring_fd[1 - self_];
        ring_ = &r.ring;
        if (r.init_error == 0 && peer_fd_ >= 0) loop();
        rv_.wakes_sent_final[self_] = result_.wakes_sent;
        rv_.finished.arrive_and_wait();
        if (r.init_error == 0 && !rv_.abort) collect_wakes(rv_.wakes_sent_final[1 - self_]);
        return result_;
    }

  private:
    void loop() {
        while (!done() && !rv_.abort) {
            if (Clock::now() > rv_.deadline) return fail_timeout();
            const size_t pushed = push_some();
            const size_t popped = drain();
            if (pushed == 0 && popped == 0) wait_if_idle();
        }
    }

    bool done() const { return sent_ == to_send_ && result_.received == to_receive_; }

    void fail_timeout() {
        result_.timed_out = true;
        rv_.abort = true;
    }

    size_t push_some() {
        if (sent_ == to_send_) return 0;
        std::array<uint64_t, kBatchMax> batch;
        const size_t want = std::min<uint64_t>(kBatchMax, to_send_ - sent_);
        for (size_t i = 0; i < want; ++i)
            batch[i] = sent_ + i;
        const size_t n = out_.try_push_batch(batch.data(), want);
        sent_ += n;
        if (n != 0) send_wake();
        return n;
    }

    // Every iteration submits before preparing, so the SQ always has room.
    void send_wake() {
        io_uring_sqe* sqe = io_uring_get_sqe(ring_);
        if (sqe == nullptr) return fail_timeout();
        prep_wake(sqe, peer_fd_, kWakeTag);
        // Entering with GETEVENTS also runs our deferred task work: inbound wakes get posted.
        if (io_uring_submit_and_get_events(ring_) != 1) return fail_timeout();
        ++result_.wakes_sent;
        reap();
    }

    size_t drain() {
        size_t total = 0;
        std::array<uint64_t, kBatchMax> got;
        for (size_t n; (n = in_.pop_batch(got.data(), got.size())) != 0;) {
            for (size_t i = 0; i < n; ++i)
                check_next(got[i]);
            total += n;
        }
        return total;
    }

    void check_next(uint64_t v) {
        if (v != result_.received && result_.first_out_of_order == UINT64_MAX) {
            result_.first_out_of_order = result_.received;
        }
        ++result_.received;
    }

    // A full outbound ring has no wake (back-pressure): yield and retry. With nothing left to
    // send, block until a wake or the deadline: under the protocol only a lost wake can keep us
    // here that long, so the deadline is a failure, not a retry.
    void wait_if_idle() {
        if (sent_ != to_send_) return std::this_thread::yield();
        ++result_.blocking_waits;
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec ts = until(rv_.deadline);
        const int rc = io_uring_wait_cqe_timeout(ring_, &cqe, &ts);
        if (rc == -ETIME && !rv_.abort) return fail_timeout();
        reap();
    }

    void reap() {
        io_uring_cqe* cqe = nullptr;
        unsigned head = 0;
        unsigned count = 0;
        io_uring_for_each_cqe(ring_, head, cqe) {
            ++count;
            if (cqe->user_data == kWakeTag && cqe->res == 0) {
                ++result_.wakes_received;
            } else if (cqe->user_data == 0 && cqe->res < 0) {
                ++result_.failed_wakes;
            } else {
                ++result_.foreign_cqes;
            }
        }
        io_uring_cq_advance(ring_, count);
    }

    // Both peers have stopped sending: every wake the peer sent must reach us exactly once.
    void collect_wakes(uint64_t expected) {
        while (result_.wakes_received < expected) {
            io_uring_cqe* cqe = nullptr;
            __kernel_timespec ts = until(rv_.deadline);
            if (io_uring_wait_cqe_timeout(ring_, &cqe, &ts) != 0) return fail_timeout();
            reap();
        }
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec zero{};
        if (io_uring_wait_cqe_timeout(ring_, &cqe, &zero) == 0) reap();  // any extra is a bug
    }

    const int self_;
    const uint64_t to_send_;
    const uint64_t to_receive_;
    SpscRing<uint64_t>& out_;
    SpscRing<uint64_t>& in_;
    Rendezvous& rv_;
    io_uring* ring_ = nullptr;
    int peer_fd_ = -1;
    uint64_t sent_ = 0;
    PeerResult result_;
};

void expect_clean(const PeerResult& r, uint64_t expected, uint64_t peer_wakes_sent,
                  const char* who) {
    SCOPED_TRACE(who);
    ASSERT_EQ(r.init_error, 0);
    EXPECT_FALSE(r.timed_out) << "deadline passed: a wake was lost or progress stalled";
    EXPECT_EQ(r.received, expected);
    EXPECT_EQ(r.first_out_of_order, UINT64_MAX) << "value out of sequence";
    EXPECT_EQ(r.wakes_received, peer_wakes_sent) << "every wake arrives exactly once";
    EXPECT_EQ(r.failed_wakes, 0u);
    EXPECT_EQ(r.foreign_cqes, 0u);
    std::printf("%s: received %llu, wakes sent %llu received %llu, blocking waits %llu\n", who,
                static_cast<unsigned long long>(r.received),
                static_cast<unsigned long long>(r.wakes_sent),
                static_cast<unsigned long long>(r.wakes_received),
                static_cast<unsigned long long>(r.blocking_waits));
}

// Runs core 0 and core 1 as peers over a two-core mesh and checks both sides.
void run_pair(uint64_t zero_to_one, uint64_t one_to_zero) {
    ChannelMesh<uint64_t> mesh(2, kChannelCapacity);
    Rendezvous rv;
    rv.deadline = Clock::now() + std::chrono::seconds(60);
    PeerResult results[2];
    std::thread core1([&] {
        results[1] = Peer(1, one_to_zero, zero_to_one, mesh.ring(1, 0), mesh.ring(0, 1), rv).run();
    });
    results[0] = Peer(0, zero_to_one, one_to_zero, mesh.ring(0, 1), mesh.ring(1, 0), rv).run();
    core1.join();

    expect_clean(results[0], one_to_zero, results[1].wakes_sent, "core 0");
    expect_clean(results[1], zero_to_one, results[0].wakes_sent, "core 1");
    EXPECT_EQ(results[0].wakes_sent > 0, zero_to_one > 0);
    EXPECT_EQ(results[1].wakes_sent > 0, one_to_zero > 0);
    EXPECT_TRUE(mesh.ring(0, 1).empty());
    EXPECT_TRUE(mesh.ring(1, 0).empty());
}

// Both cores produce and consume at once and fill each other's rings: back-pressure must not
// deadlock, and every value must arrive once, in order.
TEST(ChannelContention, TwoCoresExchangeTwoMillionValuesEachWayInOrder) {
    run_pair(kItems, kItems);
}

// Core 1 only consumes, so it blocks in io_uring_enter every time it finds its ring empty: a
// single lost wake would leave it asleep until the deadline.
TEST(ChannelContention, ConsumerThatSleepsWhenEmptyMissesNoWake) {
    run_pair(kItems, 0);
}

// Ping-pong: each round one value goes 0 → 1 and back, and each side blocks in io_uring_enter
// until the wake for it arrives. No later wake can cover for a lost one, so a lost wake stalls
// the run until the deadline; and the value must already be visible when its wake is reaped
// (the push's release precedes the MSG_RING submit).
struct PingPongResult {
    int init_error = 0;
    uint64_t rounds = 0;
    uint64_t empty_after_wake = 0;
    uint64_t wrong_value = 0;
    bool timed_out = false;
};

class PingPong {
  public:
    PingPong(int self, SpscRing<uint64_t>& out, SpscRing<uint64_t>& in, Rendezvous& rv)
        : self_(self), out_(out), in_(in), rv_(rv) {}

    PingPongResult run(uint64_t rounds) {
        ReactorRing r;
        result_.init_error = r.init_error;
        rv_.ring_fd[self_] = r.init_error == 0 ? r.fd() : -1;
        rv_.started.arrive_and_wait();
        ring_ = &r.ring;
        peer_fd_ = rv_.ring_fd[1 - self_];
        if (r.init_error != 0 || peer_fd_ < 0) return result_;
        for (uint64_t round = 0; round < rounds && !rv_.abort; ++round) {
            if (self_ == 0) send(round);
            if (!await_wake()) break;
            receive(round);
            if (self_ == 1) send(round);
            ++result_.rounds;
        }
        return result_;
    }

  private:
    void send(uint64_t value) {
        if (!out_.try_push(value)) ++result_.wrong_value;  // never full: one value in flight
        prep_wake(io_uring_get_sqe(ring_), peer_fd_, kWakeTag);
        (void)io_uring_submit(ring_);
    }

    bool await_wake() {
        io_uring_cqe* cqe = nullptr;
        __kernel_timespec ts = until(rv_.deadline);
        if (io_uring_wait_cqe_timeout(ring_, &cqe, &ts) != 0) {
            result_.timed_out = true;
            rv_.abort = true;
            return false;
        }
        if (cqe->user_data != kWakeTag) ++result_.wrong_value;
        io_uring_cqe_seen(ring_, cqe);
        return true;
    }

    void receive(uint64_t round) {
        uint64_t v = 0;
        if (!in_.try_pop(v)) {
            ++result_.empty_after_wake;
        } else if (v != round) {
            ++result_.wrong_value;
        }
    }

    const int self_;
    SpscRing<uint64_t>& out_;
    SpscRing<uint64_t>& in_;
    Rendezvous& rv_;
    io_uring* ring_ = nullptr;
    int peer_fd_ = -1;
    PingPongResult result_;
};

TEST(ChannelContention, EveryWakeIsDeliveredAfterItsValueInPingPong) {
    constexpr uint64_t kRounds = 20'000;
    ChannelMesh<uint64_t> mesh(2, 4);
    Rendezvous rv;
    rv.deadline = Clock::now() + std::chrono::seconds(60);
    PingPongResult results[2];
    std::thread core1(
        [&] { results[1] = PingPong(1, mesh.ring(1, 0), mesh.ring(0, 1), rv).run(kRounds); });
    results[0] = PingPong(0, mesh.ring(0, 1), mesh.ring(1, 0), rv).run(kRounds);
    core1.join();
    for (const PingPongResult& r : results) {
        ASSERT_EQ(r.init_error, 0);
        EXPECT_FALSE(r.timed_out) << "a wake was lost";
        EXPECT_EQ(r.rounds, kRounds);
        EXPECT_EQ(r.empty_after_wake, 0u) << "a wake overtook the value it announced";
        EXPECT_EQ(r.wrong_value, 0u);
    }
}

}  // namespace
}  // namespace ringmail
