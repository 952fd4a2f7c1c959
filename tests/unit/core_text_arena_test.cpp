// The per-core text arena of cross-core messages (core/runtime/text_arena.hpp): slots come and
// go by handle, a full arena refuses (back-pressure) instead of growing or crashing, and a
// handle returned twice aborts.
#include "core/runtime/text_arena.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <thread>

#include "core/base/spsc_ring.hpp"

namespace ringmail {
namespace {

TEST(TextArena, AllocGivesDistinctSlotsOfTheirSize) {
    TextArena a(8, 512);
    EXPECT_EQ(a.capacity(), 8u);
    EXPECT_EQ(a.slot_bytes(), 512u);
    std::set<uint32_t> seen;
    for (int i = 0; i < 8; i++) {
        uint32_t h = a.alloc();
        ASSERT_NE(h, TextArena::kNone);
        EXPECT_TRUE(seen.insert(h).second);
        // Each slot is its own 512 bytes: writing one whole does not touch another.
        memset(a.data(h), 'a' + i, a.slot_bytes());
    }
    for (uint32_t h : seen)
        for (size_t k = 0; k < a.slot_bytes(); k++)
            ASSERT_EQ(a.data(h)[k], a.data(h)[0]);
    EXPECT_EQ(a.in_use(), 8u);
}

TEST(TextArena, ExhaustionRefusesUntilAHandleReturns) {
    TextArena a(4, 64);
    uint32_t h[4];
    for (uint32_t& x : h)
        x = a.alloc();
    EXPECT_TRUE(a.full());
    // Full: refused, every time, with nothing allocated behind the caller's back.
    for (int i = 0; i < 100; i++)
        EXPECT_EQ(a.alloc(), TextArena::kNone);
    EXPECT_EQ(a.in_use(), 4u);
    a.release(h[2]);
    EXPECT_FALSE(a.full());
    EXPECT_EQ(a.alloc(), h[2]);  // the returned slot is the one given again
    EXPECT_EQ(a.alloc(), TextArena::kNone);
}

TEST(TextArena, ReturnedSlotsAreReusedWithoutGrowth) {
    TextArena a(2, 32);
    for (int round = 0; round < 10000; round++) {
        uint32_t x = a.alloc();
        uint32_t y = a.alloc();
        ASSERT_NE(x, TextArena::kNone);
        ASSERT_NE(y, TextArena::kNone);
        ASSERT_LT(x, 2u);
        ASSERT_LT(y, 2u);
        a.release(y);
        a.release(x);
    }
    EXPECT_EQ(a.in_use(), 0u);
}

TEST(TextArenaDeathTest, ReturningAHandleTwiceAborts) {
    TextArena a(2, 16);
    uint32_t h = a.alloc();
    a.release(h);
    EXPECT_DEATH(a.release(h), "");
}

TEST(TextArenaDeathTest, ReturningAHandleNeverGivenAborts) {
    TextArena a(2, 16);
    EXPECT_DEATH(a.release(7), "");
    EXPECT_DEATH(a.release(1), "");  // in range, but not out
}

// The protocol across two threads: the owner writes a slot and sends its handle on one SPSC
// ring, the reader checks the bytes and sends the handle back on another; the owner frees it.
// More messages than slots: a full arena only makes the owner wait for returns.
TEST(TextArena, HandOffBetweenTwoCoresOverSpscRings) {
    constexpr uint32_t kSlots = 8;
    constexpr uint32_t kMessages = 100000;
    TextArena a(kSlots, 64);
    SpscRing<uint32_t> to_reader(16), back(16);
    std::thread reader([&] {
        uint32_t got = 0;
        while (got < kMessages) {
            uint32_t h;
            if (!to_reader.try_pop(h)) {
                std::this_thread::yield();
                continue;
            }
            uint32_t seq;
            memcpy(&seq, a.data(h), sizeof seq);
            ASSERT_EQ(seq, got);
            got++;
            while (!back.try_push(h))
                std::this_thread::yield();
        }
    });
    uint32_t sent = 0, returned = 0;
    while (returned < kMessages) {
        uint32_t r;
        while (back.try_pop(r)) {
            a.release(r);
            returned++;
        }
        if (sent == kMessages) continue;
        uint32_t h = a.alloc();
        if (h == TextArena::kNone) continue;  // back-pressure: wait for returns
        memcpy(a.data(h), &sent, sizeof sent);
        if (!to_reader.try_push(h)) {
            a.release(h);  // the channel is full: freed by the sender on its own core
            continue;
        }
        sent++;
    }
    reader.join();
    EXPECT_EQ(a.in_use(), 0u);
}

}  // namespace
}  // namespace ringmail
