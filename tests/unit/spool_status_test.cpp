// spool_status_test.cpp — status records: round trip, strict decoding, and recovery reporting
// them in log order between the messages they follow.
#include "spool/status.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "spool/recovery.hpp"

namespace ringmail::spool {
namespace {

Status sample() {
    Status s;
    s.message_id = 0x0123456789abcdefull;
    s.rcpt = 7;
    s.state = StatusState::deferred;
    s.attempts = 3;
    s.at_unix_us = 1'700'000'000'000'000;
    s.next_attempt_unix_us = 1'700'000'300'000'000;
    s.remote = "mx.example.net[192.0.2.1]";
    s.reply = "451 4.7.1 try again later";
    return s;
}

TEST(SpoolStatus, RoundTripThroughARecord) {
    char buf[status_record_max_bytes];
    size_t n = encode_status(sample(), 99, buf);
    size_t got = 0;
    auto rec = decode_record(std::string_view(buf, n), 99, &got);
    ASSERT_TRUE(rec);
    EXPECT_EQ(got, n);
    EXPECT_EQ(rec->type, RecordType::status);
    auto s = decode_status(rec->payload);
    ASSERT_TRUE(s);
    Status e = sample();
    EXPECT_EQ(s->message_id, e.message_id);
    EXPECT_EQ(s->rcpt, e.rcpt);
    EXPECT_EQ(s->state, e.state);
    EXPECT_EQ(s->attempts, e.attempts);
    EXPECT_EQ(s->at_unix_us, e.at_unix_us);
    EXPECT_EQ(s->next_attempt_unix_us, e.next_attempt_unix_us);
    EXPECT_EQ(s->remote, e.remote);
    EXPECT_EQ(s->reply, e.reply);
    EXPECT_FALSE(decode_record(std::string_view(buf, n), 98, nullptr)) << "salted crc";
}

TEST(SpoolStatus, LongTextsAreCutNotOverflowed) {
    Status s = sample();
    std::string huge(5000, 'r');
    s.reply = huge;
    s.remote = huge;
    char buf[status_record_max_bytes];
    size_t n = encode_status(s, 1, buf);
    EXPECT_LE(n, status_record_max_bytes);
    auto rec = decode_record(std::string_view(buf, n), 1, nullptr);
    ASSERT_TRUE(rec);
    auto d = decode_status(rec->payload);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->reply.size(), status_text_max_bytes);
}

TEST(SpoolStatus, EveryTruncationAndBadStateIsRejected) {
    char buf[status_record_max_bytes];
    size_t n = encode_status(sample(), 1, buf);
    std::string payload(buf + record_header_bytes, n - record_header_bytes);
    ASSERT_TRUE(decode_status(payload));
    for (size_t k = 0; k < payload.size(); k++)
        EXPECT_FALSE(decode_status(std::string_view(payload).substr(0, k))) << k;
    std::string extra = payload + "x";
    EXPECT_FALSE(decode_status(extra)) << "trailing bytes";
    for (uint8_t bad : {0, 5, 255}) {
        std::string p = payload;
        p[10] = static_cast<char>(bad);
        EXPECT_FALSE(decode_status(p)) << int(bad);
    }
}

TEST(SpoolStatus, RecoveryReportsStatusesInLogOrder) {
    char tmpl[] = "/tmp/ringmail-status-XXXXXX";
    std::filesystem::path dir(mkdtemp(tmpl));
    const uint64_t salt = 0x5eed;
    std::string seg(4096, '\0');
    size_t pos = encode_segment_header({1, 0, 1, salt, 0}, std::span<char>(seg));
    ChunkPool pool(16384, 1 << 20);
    auto add_message = [&](uint64_t id) {
        MessageBuilder b;
        RcptField r{"b@example.net", ""};
        ASSERT_TRUE(
            b.begin(pool, id, 0, {"h", "127.0.0.1", "ESMTP", "a@example.com", "", {&r, 1}}));
        ASSERT_TRUE(b.append("text\r\n"));
        ASSERT_TRUE(b.seal(salt));
        std::vector<iovec> iov;
        b.iovecs(iov);
        for (auto& v : iov) {
            memcpy(&seg[pos], v.iov_base, v.iov_len);
            pos += v.iov_len;
        }
    };
    auto add_status = [&](uint64_t id, StatusState st) {
        Status s = sample();
        s.message_id = id;
        s.rcpt = 0;
        s.state = st;
        pos += encode_status(s, salt, std::span<char>(&seg[pos], seg.size() - pos));
    };
    add_message(1);
    add_status(1, StatusState::deferred);
    add_message(2);
    add_status(1, StatusState::delivered);
    add_status(2, StatusState::bounced);
    std::filesystem::create_directories(dir / "core-0");
    std::ofstream(dir / "core-0" / segment_file_name(1), std::ios::binary) << seg;

    std::vector<std::string> order;
    RecoveryStats stats;
    std::string err;
    ASSERT_TRUE(recover_dir(
        (dir / "core-0").string(), "",
        [&](const RecoveredMessage& m) { order.push_back("m" + std::to_string(m.message->id)); },
        [&](const Status& s, uint64_t seq) {
            EXPECT_EQ(seq, 1u);
            order.push_back("s" + std::to_string(s.message_id) + ":" +
                            std::to_string(static_cast<int>(s.state)));
        },
        stats, &err))
        << err;
    EXPECT_EQ(order, (std::vector<std::string>{"m1", "s1:2", "m2", "s1:1", "s2:3"}));
    EXPECT_EQ(stats.statuses, 3u);
    EXPECT_EQ(stats.quarantined, 0u);
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ringmail::spool
