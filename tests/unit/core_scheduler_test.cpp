// core_scheduler_test.cpp — the scheduler's decisions on a fake clock: retry timing with
// jitter, the lifetime limit (no retry past it, a watchdog for what never reports back),
// restored state after a restart, and a destination's connection and transaction limits.
#include "core/queue/scheduler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

namespace ringmail::sched {
namespace {

constexpr uint64_t kMin = 60'000;
constexpr uint64_t kHour = 60 * kMin;

TEST(Durations, ParseUnits) {
    uint64_t v = 0;
    EXPECT_TRUE(parse_duration_ms("300", &v));
    EXPECT_EQ(v, 300'000u);
    EXPECT_TRUE(parse_duration_ms("250ms", &v));
    EXPECT_EQ(v, 250u);
    EXPECT_TRUE(parse_duration_ms("5m", &v));
    EXPECT_EQ(v, 5 * kMin);
    EXPECT_TRUE(parse_duration_ms("5d", &v));
    EXPECT_EQ(v, 5 * 24 * kHour);
    EXPECT_FALSE(parse_duration_ms("", &v));
    EXPECT_FALSE(parse_duration_ms("5w", &v));
    EXPECT_FALSE(parse_duration_ms("m", &v));
    EXPECT_FALSE(parse_duration_ms("-5m", &v));
    RetryPolicy p;
    EXPECT_TRUE(parse_retry_schedule("1s:10s", &p));
    EXPECT_EQ(p.first_ms, 1000u);
    EXPECT_EQ(p.max_ms, 10'000u);
    EXPECT_FALSE(parse_retry_schedule("10s:1s", &p)) << "max below first";
    EXPECT_FALSE(parse_retry_schedule("0s:1s", &p));
    EXPECT_FALSE(parse_retry_schedule("5m", &p));
}

TEST(RetryDelay, ExponentialFromFirstCappedAtMax) {
    RetryPolicy p;  // 5 min doubling, capped at 1 h
    p.jitter_percent = 0;
    EXPECT_EQ(retry_delay_ms(p, 1, 0), 5 * kMin);
    EXPECT_EQ(retry_delay_ms(p, 2, 0), 10 * kMin);
    EXPECT_EQ(retry_delay_ms(p, 3, 0), 20 * kMin);
    EXPECT_EQ(retry_delay_ms(p, 4, 0), 40 * kMin);
    EXPECT_EQ(retry_delay_ms(p, 5, 0), kHour);
    EXPECT_EQ(retry_delay_ms(p, 500, 0), kHour) << "no overflow with many attempts";
}

TEST(RetryDelay, JitterStaysWithinTenPercentAndSpreads) {
    RetryPolicy p;
    uint64_t lo = UINT64_MAX, hi = 0;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t d = retry_delay_ms(p, 1, x);
        lo = std::min(lo, d), hi = std::max(hi, d);
        ASSERT_GE(d, 5 * kMin * 90 / 100);
        ASSERT_LE(d, 5 * kMin * 110 / 100);
    }
    EXPECT_LT(lo, 5 * kMin * 92 / 100) << "jitter must actually spread retries";
    EXPECT_GT(hi, 5 * kMin * 108 / 100);
}

RetryPolicy no_jitter(uint64_t lifetime_ms = 5 * 24 * kHour) {
    RetryPolicy p;
    p.jitter_percent = 0;
    p.lifetime_ms = lifetime_ms;
    return p;
}

TEST(MessageTable, NewMessageIsDueAtOnceAndOnlyOnce) {
    MessageTable t(no_jitter());
    MessageRef m = t.add(42, 1000, 2, 1000);
    std::vector<MessageRef> due;
    t.take_due(1000, due);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(t.id(due[0]), 42u);
    std::vector<uint32_t> rcpts;
    t.due_rcpts(m, 1000, rcpts);
    EXPECT_EQ(rcpts, (std::vector<uint32_t>{0, 1}));
    rcpts.clear();
    t.due_rcpts(m, 1000, rcpts);
    EXPECT_TRUE(rcpts.empty()) << "recipients in an attempt are not handed out twice";
    due.clear();
    t.take_due(1000, due);
    EXPECT_TRUE(due.empty());
}

// The active-queue limit: take_due hands out at most `max` messages; the others stay due,
// earliest first, and come out on later calls as room frees.
TEST(MessageTable, TakeDueHandsOutAtMostMaxAndKeepsTheRest) {
    MessageTable t(RetryPolicy{});
    std::vector<MessageRef> refs;
    for (uint64_t i = 0; i < 10; i++)
        refs.push_back(t.add(100 + i, 0, 1, i));  // due at 0, 1, ..., 9
    std::vector<MessageRef> due;
    t.take_due(50, due, 3);
    ASSERT_EQ(due.size(), 3u);
    for (size_t i = 0; i < 3; i++)
        EXPECT_EQ(t.id(due[i]), 100 + i) << "earliest first";
    due.clear();
    t.take_due(50, due, 0);
    EXPECT_TRUE(due.empty());
    t.take_due(50, due, 100);
    ASSERT_EQ(due.size(), 7u) << "the rest stayed due";
    EXPECT_EQ(t.id(due[0]), 103u);
    due.clear();
    t.take_due(50, due, 100);
    EXPECT_TRUE(due.empty()) << "each handed out once";
}

TEST(MessageTable, DeferredRecipientComesBackAtItsRetryTime) {
    MessageTable t(no_jitter());
    MessageRef m = t.add(1, 0, 2, 0);
    std::vector<MessageRef> due;
    std::vector<uint32_t> rcpts;
    t.take_due(0, due);
    t.due_rcpts(m, 0, rcpts);
    EXPECT_EQ(t.outcome(m, 0, Outcome::delivered, 10, 0).state, RcptState::delivered);
    Decision d = t.outcome(m, 1, Outcome::deferred, 10, 0);
    EXPECT_EQ(d.state, RcptState::pending);
    EXPECT_EQ(d.next_attempt_ms, 10 + 5 * kMin);
    EXPECT_EQ(t.next_due_ms(), 10 + 5 * kMin);
    due.clear();
    t.take_due(10 + 5 * kMin - 1, due);
    EXPECT_TRUE(due.empty()) << "not before its time";
    t.take_due(10 + 5 * kMin, due);
    ASSERT_EQ(due.size(), 1u);
    rcpts.clear();
    t.due_rcpts(m, 10 + 5 * kMin, rcpts);
    EXPECT_EQ(rcpts, (std::vector<uint32_t>{1})) << "the delivered one is never retried";
    d = t.outcome(m, 1, Outcome::deferred, 10 + 5 * kMin, 0);
    EXPECT_EQ(d.next_attempt_ms, 10 + 5 * kMin + 10 * kMin) << "second delay doubles";
    EXPECT_EQ(t.attempts(m, 1), 2u);
    EXPECT_EQ(t.outcome(m, 1, Outcome::bounced, 20 * kMin, 0).state, RcptState::bounced);
    EXPECT_TRUE(t.final(m));
    t.remove(m);
    EXPECT_FALSE(t.valid(m));
    EXPECT_EQ(t.size(), 0u);
}

TEST(MessageTable, NoRetryIsScheduledPastTheLifetime) {
    MessageTable t(no_jitter(2 * kHour));
    MessageRef m = t.add(1, 0, 1, 0);
    uint64_t now = 0;
    std::vector<MessageRef> due;
    std::vector<uint32_t> rcpts;
    int attempts = 0;
    for (;;) {
        due.clear();
        t.take_due(now, due);
        ASSERT_EQ(due.size(), 1u) << "at " << now;
        rcpts.clear();
        t.due_rcpts(m, now, rcpts);
        ASSERT_EQ(rcpts.size(), 1u);
        Decision d = t.outcome(m, 0, Outcome::deferred, now, 0);
        attempts++;
        ASSERT_LT(attempts, 100);
        if (d.state == RcptState::bounced) {
            EXPECT_TRUE(d.expired) << "a message that outlives its lifetime bounces as expired";
            EXPECT_EQ(now, 2 * kHour) << "the last attempt is at the deadline";
            break;
        }
        EXPECT_LE(d.next_attempt_ms, 2 * kHour);
        now = t.next_due_ms();
    }
    EXPECT_TRUE(t.final(m));
}

TEST(MessageTable, WatchdogBouncesWhatNeverGetsAnAttempt) {
    MessageTable t(no_jitter(kHour));
    MessageRef a = t.add(1, 0, 2, 0);
    MessageRef b = t.add(2, 30 * kMin, 1, 30 * kMin);
    std::vector<uint32_t> rcpts;
    t.due_rcpts(a, 0, rcpts);  // both of a's recipients go into an attempt...
    EXPECT_EQ(t.outcome(a, 0, Outcome::deferred, 1, 0).state, RcptState::pending);
    // ...rcpt 1's attempt never reports back; rcpt 0 waits for its retry; nothing runs.
    std::vector<std::pair<MessageRef, uint32_t>> expired;
    t.expire(kHour - 1, expired);
    EXPECT_TRUE(expired.empty());
    t.expire(kHour, expired);
    ASSERT_EQ(expired.size(), 1u) << "only the recipient not in an attempt";
    EXPECT_EQ(expired[0].second, 0u);
    EXPECT_EQ(t.rcpt_state(a, 0), RcptState::bounced);
    // The one in flight is decided by its outcome: a deferral after the deadline bounces.
    Decision d = t.outcome(a, 1, Outcome::deferred, kHour + 5, 0);
    EXPECT_EQ(d.state, RcptState::bounced);
    EXPECT_TRUE(d.expired);
    EXPECT_TRUE(t.final(a));
    EXPECT_FALSE(t.final(b)) << "a younger message is untouched";
    expired.clear();
    t.expire(kHour + 30 * kMin, expired);
    EXPECT_EQ(expired.size(), 1u);
    EXPECT_TRUE(t.final(b));
}

TEST(MessageTable, RestoredStateAfterRestart) {
    MessageTable t(no_jitter());
    MessageRef m = t.add(7, 0, 3, 1000);
    t.restore(m, 0, RcptState::delivered, 1, 0);
    t.restore(m, 1, RcptState::pending, 3, 5000);
    EXPECT_EQ(t.pending(m), 2u);
    std::vector<MessageRef> due;
    std::vector<uint32_t> rcpts;
    t.take_due(1000, due);
    ASSERT_EQ(due.size(), 1u);
    t.due_rcpts(m, 1000, rcpts);
    EXPECT_EQ(rcpts, (std::vector<uint32_t>{2})) << "rcpt 1 waits for its retry time";
    due.clear();
    t.take_due(5000, due);
    ASSERT_EQ(due.size(), 1u);
    rcpts.clear();
    t.due_rcpts(m, 5000, rcpts);
    EXPECT_EQ(rcpts, (std::vector<uint32_t>{1}));
    EXPECT_EQ(t.outcome(m, 1, Outcome::deferred, 5000, 0).next_attempt_ms, 5000 + 40 * kMin)
        << "attempts restored: the 4th failure waits 40 minutes";
}

TEST(MessageTable, StaleReferencesAreInvalidAfterReuse) {
    MessageTable t(no_jitter());
    MessageRef a = t.add(1, 0, 1, 0);
    std::vector<uint32_t> rcpts;
    t.due_rcpts(a, 0, rcpts);
    t.outcome(a, 0, Outcome::delivered, 0, 0);
    t.remove(a);
    MessageRef b = t.add(2, 0, 1, 0);
    EXPECT_EQ(a.index, b.index) << "slots are reused";
    EXPECT_FALSE(t.valid(a));
    EXPECT_TRUE(t.valid(b));
    std::vector<MessageRef> due;
    t.take_due(0, due);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(t.id(due[0]), 2u);
}

TEST(DestinationQueue, ConnectionsFollowTheWorkUpToTheLimit) {
    DestinationLimits l;
    l.connections_max = 2;
    l.messages_per_connection = 3;
    DestinationQueue q(l);
    EXPECT_FALSE(q.wants_connection(0)) << "no work, no connection";
    q.push(Job{1, 0, {0, 1}, 0, 1});
    EXPECT_TRUE(q.wants_connection(0));
    q.connection_opened();
    EXPECT_FALSE(q.wants_connection(0)) << "one job, one connection on its way";
    for (uint64_t i = 2; i <= 6; i++)
        q.push(Job{i, 0, {0, 1}, 0, 1});
    EXPECT_TRUE(q.wants_connection(0));
    q.connection_opened();
    EXPECT_FALSE(q.wants_connection(0)) << "at --max-connections-per-destination";
    q.connection_ready();
    Job j;
    uint32_t sent = 0;
    std::vector<uint64_t> got;
    while (q.next(sent, &j)) {
        got.push_back(j.message_id);
        sent++;
    }
    EXPECT_EQ(got, (std::vector<uint64_t>{1, 2, 3})) << "--max-messages-per-connection";
    q.connection_closed(true);
    EXPECT_EQ(q.ready(), 3u);
    q.back_off(1000);
    EXPECT_FALSE(q.wants_connection(999)) << "a destination backing off opens nothing";
    std::vector<Job> back;
    q.drain(back);
    EXPECT_EQ(back.size(), 3u);
    EXPECT_EQ(q.ready(), 0u);
}

// The rest of a job the server cut short (452 after some RCPTs) goes before every other job.
TEST(DestinationQueue, TheRestOfACutShortJobGoesNext) {
    DestinationQueue q(DestinationLimits{});
    for (uint64_t i = 1; i <= 3; i++)
        q.push(Job{i, 0, {0, 1}, 0, 1});
    Job j;
    ASSERT_TRUE(q.next(0, &j));
    EXPECT_EQ(j.message_id, 1u);
    q.push_front(Job{10, 0, {0, 1}, 0, 1});  // into the slot the taken job left
    ASSERT_TRUE(q.next(1, &j));
    EXPECT_EQ(j.message_id, 10u);
    ASSERT_TRUE(q.next(2, &j));
    EXPECT_EQ(j.message_id, 2u);
    ASSERT_TRUE(q.next(3, &j));
    EXPECT_EQ(j.message_id, 3u);
    q.push_front(Job{11, 0, {0, 1}, 0, 1});  // into an empty queue
    q.push_front(Job{12, 0, {0, 1}, 0, 1});
    ASSERT_TRUE(q.next(4, &j));
    EXPECT_EQ(j.message_id, 12u);
    ASSERT_TRUE(q.next(5, &j));
    EXPECT_EQ(j.message_id, 11u);
    EXPECT_EQ(q.ready(), 0u);
}

// --- the destination table ---------------------------------------------------------------

struct FakeDestination {
    uint64_t hash = 0;
    bool in_use = false;         // a job waits or a connection is open
    uint64_t resting_until = 0;  // backing off after every host failed
    [[nodiscard]] bool evictable(uint64_t now) const { return !in_use && resting_until <= now; }
};

std::unique_ptr<FakeDestination> make_fake(uint64_t hash) {
    auto d = std::make_unique<FakeDestination>();
    d->hash = hash;
    return d;
}

// A run that meets 100,000 distinct destination domains (each its own MX host set) keeps at
// most the bound in memory: idle destinations are forgotten, least recently used first.
TEST(DestinationTable, HundredThousandDestinationsStayWithinTheBound) {
    constexpr size_t kMax = 1000;
    DestinationTable<FakeDestination> t(kMax);
    uint64_t x = 88172645463325252ull;
    size_t most = 0;
    for (uint64_t i = 0; i < 100'000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        FakeDestination& d = t.get_or_add(x, i, [&] { return make_fake(x); });
        EXPECT_EQ(d.hash, x);
        // A job goes through it and it falls idle.
        d.in_use = true;
        d.in_use = false;
        most = std::max(most, t.size());
    }
    EXPECT_LE(most, kMax);
    EXPECT_EQ(t.size(), kMax);
}

TEST(DestinationTable, DestinationsInUseOrRestingAreKept) {
    DestinationTable<FakeDestination> t(4);
    for (uint64_t h = 1; h <= 4; h++)
        t.get_or_add(h, 0, [&] { return make_fake(h); });
    t.find(1)->in_use = true;         // oldest, but a connection points at it
    t.find(2)->resting_until = 1000;  // backing off
    EXPECT_NE(t.find(3), nullptr);    // used again: now more recent than 4
    t.get_or_add(5, 10, [&] { return make_fake(5); });
    EXPECT_EQ(t.size(), 4u);
    EXPECT_NE(t.find(1), nullptr);
    EXPECT_NE(t.find(2), nullptr);
    EXPECT_NE(t.find(3), nullptr);
    EXPECT_EQ(t.find(4), nullptr) << "the least recently used idle one goes";
    EXPECT_NE(t.find(5), nullptr);

    // Every destination in use: the table goes over the bound rather than drop one, and comes
    // back under it once they fall idle.
    for (uint64_t h : {1, 2, 3, 5})
        t.find(h)->in_use = true;
    t.get_or_add(6, 20, [&] { return make_fake(6); });
    t.find(6)->in_use = true;
    EXPECT_EQ(t.size(), 5u);
    for (uint64_t h : {1, 2, 3, 5, 6})
        t.find(h)->in_use = false;
    t.trim(20);
    EXPECT_EQ(t.size(), 4u);
    EXPECT_NE(t.find(2), nullptr) << "resting until 1000: kept";
}

}  // namespace
}  // namespace ringmail::sched
