// tls_auth_throttle_test.cpp — AuthThrottle on a fake clock: growing delays, the refusal after
// failures_max, other addresses unaffected, forgetting after the window, bounded memory.
#include "tls/auth_throttle.hpp"

#include <gtest/gtest.h>

namespace ringmail::tls {
namespace {

AuthThrottle::Address addr(uint8_t last) {
    AuthThrottle::Address a{};
    a[10] = a[11] = 0xff;
    a[12] = 192;
    a[15] = last;
    return a;
}

AuthThrottleSettings settings() {
    AuthThrottleSettings s;
    s.failures_max = 4;
    s.delay_ms = 100;
    s.delay_max_ms = 250;
    s.window_ms = 10'000;
    s.tracked_max = 8;
    return s;
}

TEST(AuthThrottle, DelaysGrowThenTheAddressIsRefused) {
    AuthThrottle t(settings());
    const auto a = addr(1);
    EXPECT_FALSE(t.blocked(a, 0));
    const AuthPenalty p1 = t.failed(a, 0);
    const AuthPenalty p2 = t.failed(a, 10);
    const AuthPenalty p3 = t.failed(a, 20);
    EXPECT_EQ(p1.delay_ms, 100u);
    EXPECT_EQ(p2.delay_ms, 200u);
    EXPECT_EQ(p3.delay_ms, 250u);  // capped
    EXPECT_FALSE(p1.disconnect || p2.disconnect || p3.disconnect);
    EXPECT_FALSE(t.blocked(a, 30));
    EXPECT_TRUE(t.failed(a, 30).disconnect);
    EXPECT_TRUE(t.blocked(a, 40));
}

TEST(AuthThrottle, OtherAddressesAreUnaffected) {
    AuthThrottle t(settings());
    for (int i = 0; i < 4; ++i)
        (void)t.failed(addr(1), static_cast<uint64_t>(i));
    EXPECT_TRUE(t.blocked(addr(1), 5));
    EXPECT_FALSE(t.blocked(addr(2), 5));
    EXPECT_EQ(t.failed(addr(2), 5).delay_ms, 100u);
}

TEST(AuthThrottle, FailuresAreForgottenAfterAQuietWindow) {
    AuthThrottle t(settings());
    for (int i = 0; i < 4; ++i)
        (void)t.failed(addr(1), 1000);
    EXPECT_TRUE(t.blocked(addr(1), 10'999));
    EXPECT_FALSE(t.blocked(addr(1), 11'000));
    EXPECT_EQ(t.failed(addr(1), 11'001).delay_ms, 100u) << "counting starts again";
}

TEST(AuthThrottle, MemoryIsBoundedAndTheOldestEntryGoesFirst) {
    AuthThrottle t(settings());
    for (uint8_t i = 0; i < 4; ++i)
        (void)t.failed(addr(0), i);  // address 0 is blocked, failed at time 3
    for (uint8_t i = 1; i < 40; ++i)
        (void)t.failed(addr(i), 100 + i);
    EXPECT_LE(t.tracked(), 8u);
    EXPECT_FALSE(t.blocked(addr(0), 200)) << "the least recently failed entry was evicted";
    EXPECT_EQ(t.failed(addr(39), 200).delay_ms, 200u) << "recent entries are kept";
}

TEST(AuthThrottle, ExpiredEntriesAreDroppedBeforeLiveOnes) {
    AuthThrottle t(settings());
    for (uint8_t i = 0; i < 8; ++i)
        (void)t.failed(addr(i), 0);
    (void)t.failed(addr(7), 5'000);  // the only live entry at 12'000
    (void)t.failed(addr(100), 12'000);
    EXPECT_EQ(t.tracked(), 2u);
    EXPECT_EQ(t.failed(addr(7), 12'001).delay_ms, 250u) << "its third failure in the window";
}

}  // namespace
}  // namespace ringmail::tls
