// tls_auth_throttle_test.cpp — AuthThrottle on a fake clock: growing delays, the refusal after
// failures_max, other addresses unaffected, forgetting after the window, bounded memory, and
// the reservation each attempt holds while its check runs (so that the owner core of an
// address counts exactly, with one round trip per attempt).
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

// One attempt that is admitted and fails; its penalty.
AuthPenalty fail(AuthThrottle& t, const AuthThrottle::Address& a, uint64_t now_ms) {
    const AuthAdmission adm = t.admit(a, now_ms);
    EXPECT_FALSE(adm.refused);
    t.finish(a, AuthEnd::failed, now_ms);
    return adm.on_failure;
}

// Whether an attempt would be refused now (an admitted one is returned at once).
bool refused(AuthThrottle& t, const AuthThrottle::Address& a, uint64_t now_ms) {
    const AuthAdmission adm = t.admit(a, now_ms);
    if (!adm.refused) t.finish(a, AuthEnd::abandoned, now_ms);
    return adm.refused;
}

TEST(AuthThrottle, DelaysGrowThenTheAddressIsRefused) {
    AuthThrottle t(settings());
    const auto a = addr(1);
    EXPECT_FALSE(refused(t, a, 0));
    const AuthPenalty p1 = fail(t, a, 0);
    const AuthPenalty p2 = fail(t, a, 10);
    const AuthPenalty p3 = fail(t, a, 20);
    EXPECT_EQ(p1.delay_ms, 100u);
    EXPECT_EQ(p2.delay_ms, 200u);
    EXPECT_EQ(p3.delay_ms, 250u);  // capped
    EXPECT_FALSE(p1.disconnect || p2.disconnect || p3.disconnect);
    EXPECT_FALSE(refused(t, a, 30));
    EXPECT_TRUE(fail(t, a, 30).disconnect);
    EXPECT_TRUE(refused(t, a, 40));
}

TEST(AuthThrottle, RefusalsDoNotExtendTheWindow) {
    AuthThrottle t(settings());
    for (int i = 0; i < 4; ++i)
        (void)fail(t, addr(1), 1000);
    const AuthAdmission adm = t.admit(addr(1), 5000);
    EXPECT_TRUE(adm.refused);
    // Refusals do not extend the window: it runs from the last failure.
    EXPECT_FALSE(refused(t, addr(1), 11'000));
}

TEST(AuthThrottle, OtherAddressesAreUnaffected) {
    AuthThrottle t(settings());
    for (int i = 0; i < 4; ++i)
        (void)fail(t, addr(1), static_cast<uint64_t>(i));
    EXPECT_TRUE(refused(t, addr(1), 5));
    EXPECT_FALSE(refused(t, addr(2), 5));
    EXPECT_EQ(fail(t, addr(2), 5).delay_ms, 100u);
}

TEST(AuthThrottle, FailuresAreForgottenAfterAQuietWindow) {
    AuthThrottle t(settings());
    for (int i = 0; i < 4; ++i)
        (void)fail(t, addr(1), 1000);
    EXPECT_TRUE(refused(t, addr(1), 10'999));
    EXPECT_FALSE(refused(t, addr(1), 11'000));
    EXPECT_EQ(fail(t, addr(1), 11'001).delay_ms, 100u) << "counting starts again";
}

// Checks that run at the same time (connections on several cores) count as failures from the
// moment they are admitted: four parallel guesses use up the address, the fifth is refused.
TEST(AuthThrottle, AttemptsBeingCheckedCountTowardTheLimit) {
    AuthThrottle t(settings());
    const auto a = addr(1);
    AuthAdmission adm[4];
    for (auto& x : adm) {
        x = t.admit(a, 0);
        EXPECT_FALSE(x.refused);
    }
    EXPECT_EQ(adm[0].on_failure.delay_ms, 100u);
    EXPECT_EQ(adm[1].on_failure.delay_ms, 200u);
    EXPECT_EQ(adm[2].on_failure.delay_ms, 250u);
    EXPECT_TRUE(adm[3].on_failure.disconnect);
    EXPECT_TRUE(t.admit(a, 1).refused);
    for (int i = 0; i < 4; ++i)
        t.finish(a, AuthEnd::failed, 2);
    EXPECT_TRUE(refused(t, a, 3));
}

TEST(AuthThrottle, ASucceededOrAbandonedAttemptIsReturned) {
    AuthThrottle t(settings());
    const auto a = addr(1);
    for (int i = 0; i < 3; ++i)
        (void)fail(t, a, 0);
    const AuthAdmission last = t.admit(a, 1);
    ASSERT_FALSE(last.refused);
    EXPECT_TRUE(last.on_failure.disconnect) << "the fourth failure would end it";
    EXPECT_TRUE(t.admit(a, 1).refused) << "while the fourth is being checked";
    t.finish(a, AuthEnd::succeeded, 2);
    const AuthAdmission again = t.admit(a, 3);
    ASSERT_FALSE(again.refused);
    EXPECT_TRUE(again.on_failure.disconnect);
    t.finish(a, AuthEnd::abandoned, 4);
    EXPECT_FALSE(refused(t, a, 5)) << "three failures, nothing being checked";
}

TEST(AuthThrottle, AnAddressThatOnlySucceedsLeavesNoEntry) {
    AuthThrottle t(settings());
    for (uint8_t i = 0; i < 100; ++i) {
        const AuthAdmission adm = t.admit(addr(i), i);
        ASSERT_FALSE(adm.refused);
        EXPECT_EQ(adm.on_failure.delay_ms, 100u);
        t.finish(addr(i), AuthEnd::succeeded, i);
    }
    EXPECT_EQ(t.tracked(), 0u);
}

TEST(AuthThrottle, MemoryIsBoundedAndTheOldestEntryGoesFirst) {
    AuthThrottle t(settings());
    for (uint8_t i = 0; i < 4; ++i)
        (void)fail(t, addr(0), i);  // address 0 is refused, failed at time 3
    for (uint8_t i = 1; i < 40; ++i)
        (void)fail(t, addr(i), 100 + i);
    EXPECT_LE(t.tracked(), 8u);
    EXPECT_FALSE(refused(t, addr(0), 200)) << "the least recently failed entry was evicted";
    EXPECT_EQ(fail(t, addr(39), 200).delay_ms, 200u) << "recent entries are kept";
}

TEST(AuthThrottle, ExpiredEntriesAreDroppedBeforeLiveOnes) {
    AuthThrottle t(settings());
    for (uint8_t i = 0; i < 8; ++i)
        (void)fail(t, addr(i), 0);
    (void)fail(t, addr(7), 5'000);  // the only live entry at 12'000
    (void)fail(t, addr(100), 12'000);
    EXPECT_EQ(t.tracked(), 2u);
    EXPECT_EQ(fail(t, addr(7), 12'001).delay_ms, 250u) << "its third failure in the window";
}

TEST(AuthThrottle, AnAttemptBeingCheckedKeepsItsEntry) {
    AuthThrottle t(settings());
    (void)fail(t, addr(0), 0);
    ASSERT_FALSE(t.admit(addr(0), 0).refused);  // still being checked at 12'000
    for (uint8_t i = 1; i < 8; ++i)
        (void)fail(t, addr(i), 0);
    (void)fail(t, addr(100), 12'000);  // full: the quiet entries go, not the one in a check
    EXPECT_EQ(t.tracked(), 2u);
    t.finish(addr(0), AuthEnd::succeeded, 12'001);
    EXPECT_EQ(t.tracked(), 1u) << "its old failure is forgotten with the reservation";
}

TEST(AuthThrottle, AFailureOfAnEvictedAttemptStillCounts) {
    AuthThrottle t(settings());
    ASSERT_FALSE(t.admit(addr(0), 0).refused);
    for (uint8_t i = 1; i < 9; ++i)
        (void)fail(t, addr(i), 10 + i);         // address 0 is the oldest live entry: evicted
    t.finish(addr(0), AuthEnd::succeeded, 50);  // nothing to return: a no-op
    t.finish(addr(0), AuthEnd::failed, 50);
    EXPECT_EQ(fail(t, addr(0), 60).delay_ms, 200u) << "its second failure";
}

}  // namespace
}  // namespace ringmail::tls
