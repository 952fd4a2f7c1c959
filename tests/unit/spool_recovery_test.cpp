// spool_recovery_test.cpp — recovery of segment files after crashes and corruption.
//
// Pins the promises of recovery.hpp: a crash at any byte loses only the record being written
// (a torn tail, not corruption); a damaged byte anywhere costs only the record that holds it; a
// record-shaped text inside a body is never taken for a record; segments come back in order;
// a segment whose header is bad is set aside whole without stopping the others.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "core/base/limits.hpp"
#include "spool/record.hpp"
#include "spool/recovery.hpp"

namespace ringmail::spool {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t salt_a = 0x9e3779b97f4a7c15ULL;
constexpr uint64_t salt_b = 0xc2b2ae3d27d4eb4fULL;

struct Msg {
    uint64_t id;
    std::string mail_from;
    std::string body;
    size_t rcpt_count;
};

struct Got {
    uint64_t id;
    std::string mail_from;
    std::string body;
    size_t rcpt_count;
    uint64_t segment_seq;
    uint64_t offset;
    uint64_t record_bytes;
};

// A segment's bytes and where each record starts and ends.
struct Segment {
    std::string bytes;
    size_t header_end = 0;
    std::vector<std::pair<size_t, size_t>> records;  // [begin, end)
};

std::string make_record(ChunkPool& pool, const Msg& m, uint64_t salt) {
    std::vector<std::string> addrs;
    std::vector<RcptField> rcpts;
    for (size_t i = 0; i < m.rcpt_count; ++i)
        addrs.push_back("r" + std::to_string(i) + "@b.test");
    for (const std::string& a : addrs)
        rcpts.push_back({a, ""});
    const EnvelopeFields env{"helo.test", "198.51.100.1", "ESMTP", m.mail_from, "", rcpts};
    MessageBuilder b;
    EXPECT_TRUE(b.begin(pool, m.id, 1700000000000000 + static_cast<int64_t>(m.id), env));
    EXPECT_TRUE(b.append(m.body));
    EXPECT_TRUE(b.seal(salt));
    std::vector<iovec> iov;
    b.iovecs(iov);
    std::string out;
    for (const iovec& v : iov)
        out.append(static_cast<const char*>(v.iov_base), v.iov_len);
    return out;
}

Segment make_segment(uint64_t seq, uint64_t salt, const std::vector<Msg>& msgs,
                     size_t zero_padding) {
    ChunkPool pool(limits::staging_chunk_bytes, 1ull << 24);
    SegmentHeader h;
    h.segment_seq = seq;
    h.salt = salt;
    char buf[128];
    Segment s;
    s.bytes.assign(buf, encode_segment_header(h, buf));
    s.header_end = s.bytes.size();
    for (const Msg& m : msgs) {
        const size_t at = s.bytes.size();
        s.bytes += make_record(pool, m, salt);
        s.records.emplace_back(at, s.bytes.size());
    }
    s.bytes.append(zero_padding, '\0');
    return s;
}

std::vector<Msg> small_messages() {
    return {{1, "a@x.test", "", 1},
            {2, "", "x", 2},
            {3, "c@x.test", "Subject: hi\r\n\r\nbody line\r\n", 3},
            {4, "d@x.test", std::string(300, 'q'), 1}};
}

class SpoolRecovery : public testing::Test {
  protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "ringmail-recovery-XXXXXX").string();
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        root_ = tmpl;
        core_ = core_dir_path(root_, 0);
        quarantine_ = root_ + "/quarantine";
        fs::create_directory(core_);
    }
    void TearDown() override { fs::remove_all(root_); }

    void write_segment(uint64_t seq, std::string_view bytes) {
        std::ofstream f(core_ + "/" + segment_file_name(seq), std::ios::binary | std::ios::trunc);
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        ASSERT_TRUE(f.good());
    }

    std::vector<Got> recover(const std::string& quarantine_dir) {
        stats_ = RecoveryStats{};
        std::vector<Got> got;
        std::string error;
        const bool ok = recover_dir(
            core_, quarantine_dir,
            [&got](const RecoveredMessage& r) {
                const MessageView& m = *r.message;
                got.push_back({m.id, std::string(m.mail_from), std::string(m.body), m.rcpts.size(),
                               r.segment_seq, r.offset, r.record_bytes});
            },
            stats_, &error);
        EXPECT_TRUE(ok) << error;
        return got;
    }

    std::vector<Got> recover() { return recover(quarantine_); }

    static std::string read(const std::string& path) {
        std::ifstream f(path, std::ios::binary);
        return {std::istreambuf_iterator<char>(f), {}};
    }

    std::string root_, core_, quarantine_;
    RecoveryStats stats_;
};

void expect_same(const Got& g, const Msg& m) {
    EXPECT_EQ(g.id, m.id);
    EXPECT_EQ(g.mail_from, m.mail_from);
    EXPECT_EQ(g.body, m.body);
    EXPECT_EQ(g.rcpt_count, m.rcpt_count);
}

TEST(SpoolLayout, Names) {
    EXPECT_EQ(segment_file_name(42), "000000000000002a.seg");
    EXPECT_EQ(segment_file_name(~0ull), "ffffffffffffffff.seg");
    EXPECT_EQ(core_dir_path("var/spool", 3), "var/spool/core-3");
}

TEST_F(SpoolRecovery, CleanSegmentRecoversEveryMessageWithPositions) {
    const auto msgs = small_messages();
    const Segment seg = make_segment(7, salt_a, msgs, 4096);
    write_segment(7, seg.bytes);
    const auto got = recover();
    ASSERT_EQ(got.size(), msgs.size());
    uint64_t bytes = 0;
    for (size_t i = 0; i < msgs.size(); ++i) {
        expect_same(got[i], msgs[i]);
        EXPECT_EQ(got[i].segment_seq, 7u);
        EXPECT_EQ(got[i].offset, seg.records[i].first);
        EXPECT_EQ(got[i].record_bytes, seg.records[i].second - seg.records[i].first);
        bytes += got[i].record_bytes;
    }
    EXPECT_EQ(stats_.segments, 1u);
    EXPECT_EQ(stats_.messages, msgs.size());
    EXPECT_EQ(stats_.bytes, bytes);
    EXPECT_EQ(stats_.torn_tails, 0u);
    EXPECT_EQ(stats_.quarantined, 0u);
    EXPECT_EQ(stats_.max_segment_seq, 7u);
    EXPECT_EQ(stats_.max_message_id, 4u);
    EXPECT_FALSE(fs::exists(quarantine_));
}

// (a) A crash can stop the file at any byte — cut short, or with the preallocated zeros after
// the cut. What comes back is exactly the records that were whole, and nothing is corrupt.
TEST_F(SpoolRecovery, TruncationAtEveryOffsetRecoversExactlyThePrefix) {
    const auto msgs = small_messages();
    const Segment seg = make_segment(1, salt_a, msgs, 64);
    for (bool zero_fill : {false, true}) {
        for (size_t cut = 0; cut <= seg.bytes.size(); ++cut) {
            SCOPED_TRACE(testing::Message() << "cut " << cut << " zero_fill " << zero_fill);
            std::string bytes = seg.bytes.substr(0, cut);
            if (zero_fill) bytes.resize(seg.bytes.size(), '\0');
            write_segment(1, bytes);
            const auto got = recover("");

            size_t whole = 0;
            bool inside_record = false;
            for (const auto& [b, e] : seg.records) {
                whole += e <= cut ? 1 : 0;
                inside_record |= b < cut && cut < e;
            }
            // Zero-filled, a cut in the header's last zero bytes leaves it intact.
            const bool header_ok =
                bytes.compare(0, seg.header_end, seg.bytes, 0, seg.header_end) == 0;
            if (!header_ok) whole = 0;
            ASSERT_EQ(got.size(), whole);
            for (size_t i = 0; i < whole; ++i)
                expect_same(got[i], msgs[i]);
            if (header_ok) {
                EXPECT_EQ(stats_.quarantined, 0u);
                EXPECT_EQ(stats_.torn_tails, inside_record ? 1u : 0u);
            } else {
                // A header cut short: nothing of that file can be verified. Empty (all zero) is a
                // segment created just before the crash, not damage.
                EXPECT_EQ(stats_.quarantined, cut == 0 ? 0u : 1u);
            }
        }
    }
}

// (b) One damaged byte anywhere costs only the record that holds it; its neighbours come back
// intact, and damage inside a record before the last one is quarantined.
TEST_F(SpoolRecovery, FlippedByteAtEveryOffsetLosesOnlyItsRecord) {
    const auto msgs = small_messages();
    const Segment seg = make_segment(2, salt_a, msgs, 64);
    for (size_t at = seg.header_end; at < seg.bytes.size(); ++at) {
        SCOPED_TRACE(testing::Message() << "offset " << at);
        std::string bytes = seg.bytes;
        bytes[at] = static_cast<char>(bytes[at] ^ 0x20);
        write_segment(2, bytes);
        const auto got = recover("");  // read-only: the quarantine files are checked below

        size_t damaged = msgs.size();  // none: the damage is in the zero padding
        for (size_t i = 0; i < seg.records.size(); ++i) {
            if (seg.records[i].first <= at && at < seg.records[i].second) damaged = i;
        }
        std::vector<size_t> expected;
        for (size_t i = 0; i < msgs.size(); ++i) {
            if (i != damaged) expected.push_back(i);
        }
        ASSERT_EQ(got.size(), expected.size());
        for (size_t k = 0; k < expected.size(); ++k) {
            expect_same(got[k], msgs[expected[k]]);
            EXPECT_EQ(got[k].offset, seg.records[expected[k]].first);
        }
        if (damaged == msgs.size()) {
            EXPECT_EQ(stats_.quarantined, 0u);
        } else if (damaged + 1 < msgs.size()) {
            EXPECT_EQ(stats_.quarantined, 1u);
            EXPECT_EQ(stats_.torn_tails, 0u);
        } else {
            // The last record, damaged, is indistinguishable from one cut by a crash.
            EXPECT_EQ(stats_.quarantined + stats_.torn_tails, 1u);
        }
    }
}

TEST_F(SpoolRecovery, QuarantinedRecordIsCopiedWhole) {
    const Segment seg = make_segment(2, salt_a, small_messages(), 64);
    const auto [b, e] = seg.records[2];
    std::string bytes = seg.bytes;
    bytes[b + 30] ^= 0x01;
    write_segment(2, bytes);
    const auto got = recover();
    EXPECT_EQ(got.size(), 3u);
    EXPECT_EQ(stats_.quarantined, 1u);
    EXPECT_EQ(read(quarantine_ + "/0000000000000002-" + std::to_string(b) + ".bad"),
              bytes.substr(b, e - b));
    EXPECT_EQ(read(core_ + "/" + segment_file_name(2)), bytes);  // the segment stays as it was
}

TEST_F(SpoolRecovery, FlippedByteInSegmentHeaderQuarantinesTheFile) {
    const Segment seg = make_segment(3, salt_a, small_messages(), 64);
    for (size_t at = 0; at < seg.header_end; ++at) {
        SCOPED_TRACE(testing::Message() << "offset " << at);
        std::string bytes = seg.bytes;
        bytes[at] = static_cast<char>(bytes[at] ^ 0x01);
        fs::remove_all(quarantine_);
        write_segment(3, bytes);
        EXPECT_TRUE(recover().empty());
        EXPECT_EQ(stats_.quarantined, 1u);
        EXPECT_EQ(stats_.segments, 0u);
        EXPECT_FALSE(fs::exists(core_ + "/" + segment_file_name(3)));
        EXPECT_EQ(read(quarantine_ + "/" + segment_file_name(3)), bytes);
    }
}

// (c) A client can put record-shaped bytes in a body, but without the segment's salt they never
// verify — not even while recovery resynchronises through that body after damage.
TEST_F(SpoolRecovery, ForgedRecordInsideABodyIsNeverReturned) {
    ChunkPool pool(limits::staging_chunk_bytes, 1ull << 20);
    const uint64_t forged_id = 0xbadbadbad;
    const std::string forged = make_record(pool, {forged_id, "evil@x.test", "pwned", 1}, salt_b);
    const std::vector<Msg> msgs = {{1, "a@x.test", "first body\r\n", 1},
                                   {2, "b@x.test", "before\r\n" + forged + "after\r\n", 1},
                                   {3, "c@x.test", "third body\r\n", 2}};
    const Segment seg = make_segment(4, salt_a, msgs, 64);
    const size_t damage_end = seg.records[1].second;
    for (size_t at = seg.header_end; at < damage_end; ++at) {
        SCOPED_TRACE(testing::Message() << "offset " << at);
        std::string bytes = seg.bytes;
        bytes[at] = static_cast<char>(bytes[at] ^ 0x04);
        write_segment(4, bytes);
        const auto got = recover("");
        for (const Got& g : got)
            ASSERT_NE(g.id, forged_id);
        ASSERT_FALSE(got.empty());
        expect_same(got.back(), msgs[2]);
        EXPECT_EQ(got.size(), 2u);
    }
    // Undamaged, the forged bytes are just part of message 2's body.
    write_segment(4, seg.bytes);
    const auto got = recover("");
    ASSERT_EQ(got.size(), 3u);
    expect_same(got[1], msgs[1]);
}

// Damage in the record holding the forgery, with nothing after it: still never returned.
TEST_F(SpoolRecovery, ForgedRecordAfterDamageAtTheTailIsNotReturned) {
    ChunkPool pool(limits::staging_chunk_bytes, 1ull << 20);
    const std::string forged = make_record(pool, {99, "evil@x.test", "pwned", 1}, salt_b);
    const Segment seg = make_segment(5, salt_a, {{1, "a@x.test", "x" + forged, 1}}, 64);
    std::string bytes = seg.bytes;
    bytes[seg.records[0].first] ^= 0x01;
    write_segment(5, bytes);
    EXPECT_TRUE(recover("").empty());
    EXPECT_EQ(stats_.torn_tails, 1u);
}

// (d) Segments come back in sequence order, whatever order the directory lists them in.
TEST_F(SpoolRecovery, MultipleSegmentsInSequenceOrder) {
    const std::vector<Msg> m1 = {{10, "a@x.test", "one", 1}, {11, "b@x.test", "two", 1}};
    const std::vector<Msg> m2 = {{12, "c@x.test", "three", 2}};
    const std::vector<Msg> m3 = {{13, "d@x.test", "four", 1}, {14, "e@x.test", "five", 3}};
    write_segment(0x30, make_segment(0x30, salt_b, m3, 32).bytes);
    write_segment(0x1, make_segment(0x1, salt_a, m1, 32).bytes);
    write_segment(0x2a, make_segment(0x2a, salt_a ^ salt_b, m2, 0).bytes);
    std::ofstream(core_ + "/notes.txt") << "not a segment";
    std::ofstream(core_ + "/0000000000000099.seg.tmp") << "not a segment either";

    const auto got = recover();
    ASSERT_EQ(got.size(), 5u);
    const std::vector<uint64_t> seqs = {1, 1, 0x2a, 0x30, 0x30};
    for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].id, 10 + i);
        EXPECT_EQ(got[i].segment_seq, seqs[i]);
    }
    expect_same(got[4], m3[1]);
    EXPECT_EQ(stats_.segments, 3u);
    EXPECT_EQ(stats_.max_segment_seq, 0x30u);
    EXPECT_EQ(stats_.max_message_id, 14u);
    EXPECT_EQ(stats_.quarantined, 0u);
}

// (e) A segment whose header is bad is moved aside; the others are recovered.
TEST_F(SpoolRecovery, BadSegmentHeaderQuarantinesOnlyThatFile) {
    const std::vector<Msg> m1 = {{1, "a@x.test", "one", 1}};
    const std::vector<Msg> m2 = {{2, "b@x.test", "two", 1}};
    const std::vector<Msg> m3 = {{3, "c@x.test", "three", 1}};
    write_segment(1, make_segment(1, salt_a, m1, 16).bytes);
    std::string bad = make_segment(2, salt_a, m2, 16).bytes;
    bad[20] ^= 0x10;
    write_segment(2, bad);
    write_segment(3, make_segment(3, salt_b, m3, 16).bytes);

    // Read-only first (the tool's mode): counted, nothing moved.
    auto got = recover("");
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(stats_.quarantined, 1u);
    EXPECT_TRUE(fs::exists(core_ + "/" + segment_file_name(2)));
    EXPECT_FALSE(fs::exists(quarantine_));

    got = recover();
    ASSERT_EQ(got.size(), 2u);
    expect_same(got[0], m1[0]);
    expect_same(got[1], m3[0]);
    EXPECT_EQ(stats_.quarantined, 1u);
    EXPECT_EQ(stats_.segments, 2u);
    EXPECT_EQ(stats_.max_segment_seq, 3u);
    EXPECT_FALSE(fs::exists(core_ + "/" + segment_file_name(2)));
    EXPECT_EQ(read(quarantine_ + "/" + segment_file_name(2)), bad);
}

// A header that verifies but names another sequence than its file: a misplaced or copied file.
TEST_F(SpoolRecovery, HeaderSequenceMustMatchFileName) {
    write_segment(5, make_segment(6, salt_a, {{1, "a@x.test", "one", 1}}, 16).bytes);
    EXPECT_TRUE(recover().empty());
    EXPECT_EQ(stats_.quarantined, 1u);
    EXPECT_TRUE(fs::exists(quarantine_ + "/" + segment_file_name(5)));
}

// Read-only mode must not write anything, even with a damaged record in the middle.
TEST_F(SpoolRecovery, ReadOnlyScanWritesNothing) {
    const Segment seg = make_segment(8, salt_a, small_messages(), 64);
    std::string bytes = seg.bytes;
    bytes[seg.records[1].first + 20] ^= 0x01;
    bytes[seg.bytes.size() - 10] = 'z';  // garbage in the padding: a torn tail
    write_segment(8, bytes);
    const auto got = recover("");
    EXPECT_EQ(got.size(), 3u);
    EXPECT_EQ(stats_.quarantined, 1u);
    EXPECT_EQ(stats_.torn_tails, 1u);
    EXPECT_FALSE(fs::exists(quarantine_));
    EXPECT_EQ(std::distance(fs::directory_iterator(core_), fs::directory_iterator()), 1);
    EXPECT_EQ(read(core_ + "/" + segment_file_name(8)), bytes);
}

// A torn tail is not corruption, but its bytes are kept for the operator when quarantine is on.
TEST_F(SpoolRecovery, TornTailBytesAreKeptApart) {
    const Segment seg = make_segment(9, salt_a, small_messages(), 64);
    const auto [b, e] = seg.records.back();
    std::string bytes = seg.bytes.substr(0, e - 5);
    bytes.resize(seg.bytes.size(), '\0');
    write_segment(9, bytes);
    EXPECT_EQ(recover().size(), 3u);
    EXPECT_EQ(stats_.torn_tails, 1u);
    EXPECT_EQ(stats_.quarantined, 0u);
    const std::string kept = read(quarantine_ + "/0000000000000009-" + std::to_string(b) + ".torn");
    // Up to the last non-zero byte: the zeros after it are the preallocated end.
    std::string expected = seg.bytes.substr(b, e - 5 - b);
    expected.resize(expected.find_last_not_of('\0') + 1);
    EXPECT_EQ(kept, expected);
}

TEST_F(SpoolRecovery, MissingDirectoryIsAnEmptySpool) {
    RecoveryStats stats;
    std::string error;
    int calls = 0;
    EXPECT_TRUE(recover_dir(
        root_ + "/core-7", "", [&calls](const RecoveredMessage&) { ++calls; }, stats, &error));
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(stats.segments, 0u);
}

TEST_F(SpoolRecovery, PreallocatedSegmentWithoutHeaderIsEmptyNotCorrupt) {
    write_segment(1, std::string(8192, '\0'));
    EXPECT_TRUE(recover().empty());
    EXPECT_EQ(stats_.quarantined, 0u);
    EXPECT_EQ(stats_.max_segment_seq, 1u);
    EXPECT_TRUE(fs::exists(core_ + "/" + segment_file_name(1)));
}

}  // namespace
}  // namespace ringmail::spool
