// core_scheduler_test.cpp — the scheduler's decisions on a fake clock: retry timing with
// jitter, the lifetime limit (no retry past it, a watchdog for what never reports back),
// restored state after a restart, and a destination's connection and transaction limits.
#include "core/queue/scheduler.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace ringmail::sched
