// spool_lifecycle_test.cpp — segment deletion and compaction decisions (SegmentTracker), the
// recovery fold of message copies and statuses (MessageFold), and the recipient states that
// ringmail-spool prints from a segment written here.

// The tool's functions (json_line, list_line, status_text, scan_core), without its main; its
// cmd_* entry points are unused here (GCC reports that at the end of the unit, so no pop).
#pragma GCC diagnostic ignored "-Wunused-function"
#define RINGMAIL_SPOOL_TOOL_NO_MAIN
#include "tools/spool_main.cpp"
#undef RINGMAIL_SPOOL_TOOL_NO_MAIN

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "spool/lifecycle.hpp"

namespace ringmail::spool {
namespace {

std::vector<uint64_t> seqs(std::initializer_list<uint64_t> l) {
    return l;
}

std::vector<uint64_t> live_ids(const SegmentTracker& t, uint64_t seq) {
    std::vector<LiveMessage> live;
    t.live_messages(seq, live);
    std::vector<uint64_t> ids;
    for (const LiveMessage& m : live)
        ids.push_back(m.id);
    return ids;
}

// ---- SegmentTracker ---------------------------------------------------------------------------

TEST(SpoolLifecycleTracker, DeletesOnlyOldestFirst) {
    SegmentTracker t;
    for (uint64_t s = 1; s <= 4; ++s)
        t.add_segment(s, 0);
    const SegmentSlot a = t.message_added(1, 10);
    const SegmentSlot b = t.message_added(2, 20);
    const SegmentSlot c = t.message_added(3, 30);
    t.message_final(b, 20);
    EXPECT_EQ(t.deletable(4), seqs({})) << "segment 2 is empty but segment 1 still holds a";
    t.message_final(a, 10);
    EXPECT_EQ(t.deletable(4), seqs({1, 2}));
    t.message_final(c, 30);
    EXPECT_EQ(t.deletable(4), seqs({1, 2, 3}));
}

TEST(SpoolLifecycleTracker, OneLiveMessageBlocksEveryNewerSegment) {
    SegmentTracker t;
    for (uint64_t s = 1; s <= 6; ++s)
        t.add_segment(s, 0);
    const SegmentSlot m = t.message_added(2, 7);
    EXPECT_EQ(t.deletable(6), seqs({1}));
    t.message_final(m, 7);
    EXPECT_EQ(t.deletable(6), seqs({1, 2, 3, 4, 5}));
}

TEST(SpoolLifecycleTracker, CurrentSegmentIsNeverDeletable) {
    SegmentTracker t;
    t.add_segment(1, 0);
    EXPECT_EQ(t.deletable(1), seqs({})) << "the only segment is the current one";
    t.add_segment(2, 0);
    t.add_segment(3, 0);  // prepared ahead, not yet current
    EXPECT_EQ(t.deletable(2), seqs({1})) << "neither current nor newer segments";
}

TEST(SpoolLifecycleTracker, DeletionInFlightIsNotOfferedTwiceAndCompletesOldestFirst) {
    SegmentTracker t;
    for (uint64_t s = 1; s <= 3; ++s)
        t.add_segment(s, 0);
    t.delete_started(1);
    EXPECT_EQ(t.deletable(3), seqs({2}));
    t.delete_started(2);
    EXPECT_EQ(t.deletable(3), seqs({}));
    t.segment_deleted(1);
    t.segment_deleted(2);
    EXPECT_FALSE(t.has_segment(1));
    EXPECT_FALSE(t.has_segment(2));
    EXPECT_EQ(t.segment_count(), 1u);
    // A new segment after deletions reuses an id vector and starts empty.
    t.add_segment(4, 0);
    EXPECT_EQ(live_ids(t, 4), seqs({}));
}

TEST(SpoolLifecycleTrackerDeathTest, BrokenOrderAndDoubleFinalAbort) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    SegmentTracker t;
    for (uint64_t s = 1; s <= 3; ++s)
        t.add_segment(s, 0);
    const SegmentSlot m = t.message_added(1, 5);
    EXPECT_DEATH(t.delete_started(2), "older segment");
    EXPECT_DEATH(t.delete_started(1), "live messages");
    EXPECT_DEATH(t.segment_deleted(1), "without delete_started");
    t.message_final(m, 5);
    EXPECT_DEATH(t.message_final(m, 5), "already final");
    EXPECT_DEATH(t.add_segment(2, 0), "out of order");
}

TEST(SpoolLifecycleTracker, CompactionCandidateIsTheOldestLiveSegmentPastItsAge) {
    SegmentTracker t(1000);
    t.add_segment(1, 0);
    t.add_segment(2, 500);
    t.add_segment(3, 900);
    t.add_segment(4, 5000);  // current
    const SegmentSlot a = t.message_added(2, 1);
    (void)t.message_added(3, 2);
    EXPECT_EQ(t.compaction_candidate(1499, 4), std::nullopt) << "segment 2 is 999 ms old";
    EXPECT_EQ(t.compaction_candidate(1500, 4), 2u) << "empty segment 1 is for deletion";
    EXPECT_EQ(live_ids(t, 2), seqs({1}));

    const std::optional<SegmentSlot> moved = t.message_moved(a, 4, 1);
    ASSERT_TRUE(moved);
    EXPECT_EQ(moved->segment_seq, 4u);
    EXPECT_EQ(live_ids(t, 4), seqs({1}));
    EXPECT_EQ(t.deletable(4), seqs({1, 2}));
    EXPECT_EQ(t.compaction_candidate(1500, 4), std::nullopt) << "segment 3 is 600 ms old";
    EXPECT_EQ(t.compaction_candidate(1900, 4), 3u);
    EXPECT_EQ(t.compaction_candidate(1'000'000, 3), std::nullopt) << "never the current one";
}

TEST(SpoolLifecycleTracker, MoveOfAMessageThatBecameFinalRegistersNothing) {
    SegmentTracker t;
    t.add_segment(1, 0);
    t.add_segment(2, 0);
    const SegmentSlot m = t.message_added(1, 9);
    t.message_final(m, 9);  // delivered while its forward copy was in flight (rule C3)
    EXPECT_EQ(t.message_moved(m, 2, 9), std::nullopt);
    EXPECT_EQ(t.live_count(2), 0u);
    EXPECT_EQ(t.deletable(2), seqs({1}));
}

TEST(SpoolLifecycleTracker, LiveMessagesSkipFinalOnesAndKeepTheirSlots) {
    SegmentTracker t;
    t.add_segment(1, 0);
    const SegmentSlot a = t.message_added(1, 100);
    const SegmentSlot b = t.message_added(1, 200);
    const SegmentSlot c = t.message_added(1, 300);
    t.message_final(b, 200);
    std::vector<LiveMessage> live;
    t.live_messages(1, live);
    ASSERT_EQ(live.size(), 2u);
    EXPECT_EQ(live[0].id, 100u);
    EXPECT_EQ(live[0].slot.index, a.index);
    EXPECT_EQ(live[1].id, 300u);
    EXPECT_EQ(live[1].slot.index, c.index);
    EXPECT_EQ(t.live_count(1), 2u);
}

// ---- MessageFold ------------------------------------------------------------------------------

Status st(uint64_t id, uint16_t rcpt, StatusState s, uint16_t attempts = 1, int64_t next = 0) {
    Status out;
    out.message_id = id;
    out.rcpt = rcpt;
    out.state = s;
    out.attempts = attempts;
    out.at_unix_us = 1000 * attempts;
    out.next_attempt_unix_us = next;
    return out;
}

TEST(SpoolLifecycleFold, DeferredThenDeliveredIsDelivered) {
    MessageFold f;
    f.message(1, {1, 64, 500}, 1);
    EXPECT_EQ(f.status(st(1, 0, StatusState::deferred, 1, 9000)), StatusEffect::changed);
    EXPECT_EQ(f.status(st(1, 0, StatusState::delivered, 2)), StatusEffect::changed);
    const FoldedMessage* m = f.find(1);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->rcpts[0].fate, RcptFate::delivered);
    EXPECT_EQ(m->rcpts[0].attempts, 2);
    EXPECT_TRUE(m->is_final());
}

TEST(SpoolLifecycleFold, DeferredOnlyIsPendingWithItsNextAttempt) {
    MessageFold f;
    f.message(1, {1, 64, 500}, 2);
    (void)f.status(st(1, 1, StatusState::deferred, 1, 5000));
    (void)f.status(st(1, 1, StatusState::deferred, 2, 7000));
    const FoldedMessage* m = f.find(1);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->pending_count(), 2u);
    EXPECT_EQ(m->rcpts[0].fate, RcptFate::pending);
    EXPECT_FALSE(m->rcpts[0].deferred) << "never tried";
    EXPECT_TRUE(m->rcpts[1].deferred);
    EXPECT_EQ(m->rcpts[1].attempts, 2);
    EXPECT_EQ(m->rcpts[1].next_attempt_unix_us, 7000) << "the later deferral wins";
}

TEST(SpoolLifecycleFold, FinalStateIsNeverRevertedByALaterStatus) {
    MessageFold f;
    f.message(1, {1, 64, 500}, 1);
    (void)f.status(st(1, 0, StatusState::bounced));
    EXPECT_EQ(f.status(st(1, 0, StatusState::deferred, 2, 9)), StatusEffect::unchanged);
    EXPECT_EQ(f.status(st(1, 0, StatusState::delivered, 3)), StatusEffect::unchanged);
    EXPECT_EQ(f.find(1)->rcpts[0].fate, RcptFate::bounced) << "no second bounce, no delivery";
}

TEST(SpoolLifecycleFold, CompactedCopyWithStatusesBeforeAndAfterTheMove) {
    MessageFold f;
    f.message(1, {1, 64, 500}, 3);                            // first copy, segment 1
    (void)f.status(st(1, 0, StatusState::deferred, 1, 100));  // segment 1
    (void)f.status(st(1, 1, StatusState::delivered, 1));      // segment 2
    f.message(1, {5, 128, 500}, 3);                           // compacted copy, segment 5
    (void)f.status(st(1, 0, StatusState::deferred, 1, 100));  // re-stated with the copy
    (void)f.status(st(1, 1, StatusState::delivered, 1));
    EXPECT_EQ(f.find(1)->pending_count(), 2u);
    (void)f.status(st(1, 0, StatusState::delivered, 2));  // after the move, segment 6
    (void)f.status(st(1, 2, StatusState::expired, 4));
    const FoldedMessage* m = f.find(1);
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->copies, 2u);
    EXPECT_EQ(m->latest.segment_seq, 5u) << "the newer copy is the one to use";
    EXPECT_EQ(m->latest.offset, 128u);
    EXPECT_EQ(m->rcpts[0].fate, RcptFate::delivered);
    EXPECT_EQ(m->rcpts[1].fate, RcptFate::delivered);
    EXPECT_EQ(m->rcpts[2].fate, RcptFate::expired);
    EXPECT_TRUE(m->is_final());
}

TEST(SpoolLifecycleFold, StatesBeforeTheCopyCarryOverWhenTheRestatementIsTorn) {
    MessageFold f;
    f.message(1, {1, 64, 500}, 2);
    (void)f.status(st(1, 0, StatusState::delivered));
    (void)f.status(st(1, 1, StatusState::deferred, 1, 777));
    f.message(1, {4, 64, 500}, 2);  // the re-stated statuses after it were torn off
    const FoldedMessage* m = f.find(1);
    EXPECT_EQ(m->rcpts[0].fate, RcptFate::delivered) << "a copy never resets a state";
    EXPECT_EQ(m->rcpts[1].next_attempt_unix_us, 777);
    EXPECT_EQ(m->pin_seq(), 1u) << "its states still live in segment 1: keep it (rule F4)";
    (void)f.status(st(1, 0, StatusState::delivered));
    EXPECT_EQ(m->pin_seq(), 1u) << "recipient 1 is not re-stated yet";
    (void)f.status(st(1, 1, StatusState::deferred, 1, 777));
    EXPECT_EQ(m->pin_seq(), 4u) << "self-contained after the copy";
}

TEST(SpoolLifecycleFold, StatusWithoutAPrecedingCopyIsIgnored) {
    MessageFold f;
    EXPECT_EQ(f.status(st(42, 0, StatusState::delivered)), StatusEffect::ignored)
        << "its message's segment was deleted";
    f.message(42, {3, 64, 500}, 1);
    EXPECT_EQ(f.find(42)->rcpts[0].fate, RcptFate::pending)
        << "a status before the copy (a reused id) does not apply";
    EXPECT_EQ(f.status(st(42, 1, StatusState::delivered)), StatusEffect::ignored)
        << "no recipient 1";
    EXPECT_EQ(f.status(st(7, 0, StatusState::bounced)), StatusEffect::ignored);
    EXPECT_EQ(f.ignored_statuses(), 3u);
    EXPECT_EQ(f.find(7), nullptr);
    EXPECT_EQ(f.size(), 1u);
}

TEST(SpoolLifecycleFold, LogOrderFollowsTheLatestCopy) {
    MessageFold f;
    f.message(1, {1, 64, 10}, 1);
    f.message(2, {2, 64, 10}, 1);
    f.message(3, {2, 900, 10}, 1);
    f.message(1, {3, 64, 10}, 1);
    std::vector<uint64_t> order;
    for (const FoldedMessage* m : f.in_log_order())
        order.push_back(m->id);
    EXPECT_EQ(order, seqs({2, 3, 1}));
}

TEST(SpoolLifecycleFold, RebuiltTrackerDeletesWhatTheFoldNoLongerNeeds) {
    // Segment 1: A (final), B (moved to 3); segment 2: C pending; segment 3: B's copy.
    MessageFold f;
    f.message(0xa, {1, 64, 10}, 1);
    f.message(0xb, {1, 128, 10}, 1);
    (void)f.status(st(0xa, 0, StatusState::delivered));
    f.message(0xc, {2, 64, 10}, 1);
    f.message(0xb, {3, 64, 10}, 1);
    SegmentTracker t;
    for (uint64_t s = 1; s <= 4; ++s)
        t.add_segment(s, 0);
    for (const FoldedMessage* m : f.in_log_order())
        if (!m->is_final()) (void)t.message_added(m->pin_seq(), m->id);
    EXPECT_EQ(live_ids(t, 1), seqs({}));
    EXPECT_EQ(live_ids(t, 2), seqs({0xc}));
    EXPECT_EQ(live_ids(t, 3), seqs({0xb}));
    EXPECT_EQ(t.deletable(4), seqs({1}));
}

// ---- ringmail-spool: recipient states from a real segment ------------------------------------

class SpoolToolStates : public ::testing::Test {
  protected:
    static constexpr uint64_t salt = 0x5a17;

    void SetUp() override {
        char tmpl[] = "/tmp/ringmail-lifecycle-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        std::filesystem::create_directories(dir_ / "core-0");
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    void begin_segment(uint64_t seq) {
        seg_.assign(1 << 16, '\0');
        pos_ = encode_segment_header({1, 0, seq, salt, 0}, std::span<char>(seg_));
        seq_ = seq;
    }
    void end_segment() {
        std::ofstream(dir_ / "core-0" / segment_file_name(seq_), std::ios::binary) << seg_;
    }
    uint64_t add_message(uint64_t id, std::span<const RcptField> rcpts) {
        const uint64_t at = pos_;
        MessageBuilder b;
        EXPECT_TRUE(b.begin(pool_, id, 0, {"h", "127.0.0.1", "ESMTP", "a@example.com", "", rcpts}));
        EXPECT_TRUE(b.append("text\r\n"));
        EXPECT_TRUE(b.seal(salt));
        std::vector<iovec> iov;
        b.iovecs(iov);
        for (const iovec& v : iov) {
            memcpy(&seg_[pos_], v.iov_base, v.iov_len);
            pos_ += v.iov_len;
        }
        return at;
    }
    void add_status(Status s, std::string_view reply) {
        s.remote = "mx.example.net[192.0.2.1]";
        s.reply = reply;
        pos_ += encode_status(s, salt, std::span<char>(&seg_[pos_], seg_.size() - pos_));
    }
    bool scan(const RenderFn& render, CoreScan& out) {
        RecoveryStats stats;
        std::string err;
        const bool ok = scan_core((dir_ / "core-0").string(), render, out, stats, &err);
        EXPECT_TRUE(ok) << err;
        EXPECT_EQ(stats.quarantined, 0u);
        return ok;
    }

    std::filesystem::path dir_;
    std::string seg_;
    size_t pos_ = 0;
    uint64_t seq_ = 0;
    ChunkPool pool_{16384, 1 << 20};
};

TEST_F(SpoolToolStates, JsonListAndStatusShowEachRecipientsLatestState) {
    const RcptField rcpts[] = {
        {"one@example.net", ""}, {"two@example.net", ""}, {"three@example.net", ""}};
    begin_segment(1);
    add_message(0x11, rcpts);
    add_status(st(0x11, 0, StatusState::deferred, 1, 5'000'000), "451 4.7.1 later");
    add_status(st(0x11, 1, StatusState::delivered, 1), "250 2.0.0 ok queued");
    add_status(st(0x99, 0, StatusState::delivered, 1), "250 for a message long gone");
    end_segment();
    begin_segment(2);  // the compacted copy with its re-stated states, then a bounce
    const uint64_t copy_at = add_message(0x11, rcpts);
    add_status(st(0x11, 0, StatusState::deferred, 1, 5'000'000), "451 4.7.1 later");
    add_status(st(0x11, 1, StatusState::delivered, 1), "250 2.0.0 ok queued");
    add_status(st(0x11, 2, StatusState::bounced, 1), "550 5.1.1 no such user");
    end_segment();

    CoreScan js;
    ASSERT_TRUE(scan(render_json, js));
    const auto order = js.fold.in_log_order();
    ASSERT_EQ(order.size(), 1u) << "one message, however many copies";
    const std::string line = json_line(*order[0], js.entries.at(0x11));
    EXPECT_NE(line.find("\"id\":\"0000000000000011\""), std::string::npos) << line;
    EXPECT_NE(line.find("\"segment\":2,\"offset\":" + std::to_string(copy_at)), std::string::npos)
        << line;
    EXPECT_NE(line.find("\"copies\":2"), std::string::npos) << line;
    // log_index: each record's rank in its core's log (the latest copy of the message, each
    // status), so a reader can tell what was written before what.
    EXPECT_NE(line.find("\"copies\":2,\"log_index\":4,"), std::string::npos) << line;
    EXPECT_NE(line.find("\"rcpt_states\":[{\"state\":\"deferred\",\"attempts\":1,\"at_unix_us\":"
                        "1000,\"next_attempt_unix_us\":5000000,\"remote\":\"mx.example.net["
                        "192.0.2.1]\",\"reply\":\"451 4.7.1 later\",\"log_index\":5},{\"state\":"
                        "\"delivered\""),
              std::string::npos)
        << line;
    EXPECT_NE(line.find("{\"state\":\"bounced\",\"attempts\":1,\"at_unix_us\":1000,\"remote\":"
                        "\"mx.example.net[192.0.2.1]\",\"reply\":\"550 5.1.1 no such user\","
                        "\"log_index\":7}]}\n"),
              std::string::npos)
        << line;

    CoreScan ls;
    ASSERT_TRUE(scan(render_list, ls));
    EXPECT_EQ(list_line(*ls.fold.find(0x11), ls.entries.at(0x11)),
              "0000000000000011  6  a@example.com  3 rcpts  1/3 pending\n");

    CoreScan ss;
    const auto render_status = [](const RecoveredMessage& r, Entry& e) {
        e.addresses.clear();
        for (const RcptField& f : r.message->rcpts)
            e.addresses.emplace_back(f.address);
    };
    ASSERT_TRUE(scan(render_status, ss));
    const std::string text = status_text(*ss.fold.find(0x11), ss.entries.at(0x11));
    EXPECT_NE(text.find("pending: 1/3\n"), std::string::npos) << text;
    EXPECT_NE(text.find("<one@example.net> deferred attempts=1 next_attempt_unix_us=5000000 "
                        "remote=mx.example.net[192.0.2.1] reply: 451 4.7.1 later\n"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("<three@example.net> bounced attempts=1 "
                        "remote=mx.example.net[192.0.2.1] reply: 550 5.1.1 no such user\n"),
              std::string::npos)
        << text;
}

TEST_F(SpoolToolStates, AMessageWithoutStatusesIsAllPending) {
    const RcptField rcpts[] = {{"x@example.org", "NOTIFY=NEVER"}};
    begin_segment(1);
    add_message(0x22, rcpts);
    end_segment();
    CoreScan js;
    ASSERT_TRUE(scan(render_json, js));
    const std::string line = json_line(*js.fold.find(0x22), js.entries.at(0x22));
    EXPECT_NE(line.find("\"copies\":1,\"log_index\":0,\"rcpt_states\":[{\"state\":\"pending\","
                        "\"attempts\":0}]}\n"),
              std::string::npos)
        << line;
}

}  // namespace
}  // namespace ringmail::spool
