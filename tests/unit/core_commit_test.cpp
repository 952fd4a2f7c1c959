// core_commit_test.cpp — group commit through a real io_uring on a real file system:
// one write + one fdatasync per batch, results only after the fdatasync, records readable by
// recovery, and a full disk answered with no_space (then accepted again once space is back).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <malloc.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "spool/io/commit.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"

namespace ringmail {
namespace {

namespace fs = std::filesystem;

struct Waiter final : CommitWaiter {
    bool done = false;
    smtp::CommitResult result = smtp::CommitResult::failed;
    std::vector<Waiter*>* answered = nullptr;  // the order of the answers, when set
    void commit_finished(smtp::CommitResult r) override {
        done = true;
        result = r;
        if (answered) answered->push_back(this);
    }
};

struct Fixture {
    fs::path dir;
    Config cfg;
    Reactor reactor;
    Queue queue;
    std::unique_ptr<Committer> committer;

    explicit Fixture(const fs::path& spool, uint64_t segment_bytes = 4 << 20, uint32_t depth = 1) {
        dir = spool;
        cfg.spool_dir = spool.string();
        cfg.segment_bytes = segment_bytes;
        cfg.commit_depth = depth;
        cfg.staging_memory_max_bytes = 64 << 20;
        std::string err;
        EXPECT_TRUE(reactor.init(256, 4096, 64, &err)) << err;
        committer = std::make_unique<Committer>(reactor, cfg, 0, queue);
        EXPECT_TRUE(committer->open(1, 1000, &err)) << err;
    }

    bool stage(Waiter& w, const std::string& body) { return stage_into(w, body); }
    bool stage_into(CommitWaiter& w, const std::string& body) {
        spool::RcptField r{"bob@example.net", ""};
        spool::EnvelopeFields env{"client.example",    "127.0.0.1", "ESMTP",
                                  "alice@example.com", "",          {&r, 1}};
        if (!w.builder.begin(committer->pool(), committer->next_id(), 1, env)) return false;
        return w.builder.append(body);
    }

    // Runs the loop until pred() holds, with a deadline.
    template <typename Pred>
    bool run_until(Pred pred, int seconds = 20) {
        auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
        while (!pred()) {
            if (std::chrono::steady_clock::now() > end) return false;
            committer->flush(
                static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count()));
            if (pred()) break;
            reactor.run_once([](uint64_t, int) {});
        }
        return true;
    }

    std::map<uint64_t, std::string> recovered() {
        std::map<uint64_t, std::string> out;
        spool::RecoveryStats st;
        std::string err;
        EXPECT_TRUE(spool::recover_dir(
            spool::core_dir_path(cfg.spool_dir, 0), "",
            [&](const spool::RecoveredMessage& m) {
                out[m.message->id] = std::string(m.message->body);
            },
            st, &err))
            << err;
        return out;
    }
};

fs::path temp_dir() {
    char tmpl[] = "/tmp/ringmail-commit-XXXXXX";
    return fs::path(mkdtemp(tmpl));
}

TEST(GroupCommit, ManyMessagesOneWriteOneFdatasync) {
    fs::path d = temp_dir();
    {
        Fixture f(d);
        std::vector<Waiter> ws(50);
        for (size_t i = 0; i < ws.size(); i++) {
            ASSERT_TRUE(f.stage(ws[i], "message " + std::to_string(i) + "\r\n"));
            f.committer->submit(&ws[i]);
        }
        ASSERT_TRUE(f.run_until([&] {
            for (auto& w : ws)
                if (!w.done) return false;
            return true;
        }));
        for (auto& w : ws)
            EXPECT_EQ(w.result, smtp::CommitResult::ok);
        EXPECT_EQ(f.committer->stats().commits, 1u) << "50 waiting messages, one fdatasync";
        EXPECT_EQ(f.committer->stats().messages, 50u);
        EXPECT_EQ(f.queue.size(), 50u);
        auto rec = f.recovered();
        ASSERT_EQ(rec.size(), 50u);
        size_t i = 0;
        for (auto& [id, body] : rec) {
            EXPECT_EQ(id & 0xff, 0u) << "core 0 in the low byte";
            EXPECT_EQ(body, "message " + std::to_string(i++) + "\r\n");
        }
    }
    fs::remove_all(d);
}

TEST(GroupCommit, ResultOnlyAfterTheBatchCompletes) {
    fs::path d = temp_dir();
    {
        Fixture f(d);
        Waiter a, b;
        ASSERT_TRUE(f.stage(a, "a\r\n"));
        f.committer->submit(&a);
        // Wait for the segment, start the batch, and check nothing is answered synchronously.
        ASSERT_TRUE(f.run_until([&] { return a.done; }));
        ASSERT_TRUE(f.stage(b, "b\r\n"));
        f.committer->submit(&b);
        f.committer->flush(0);
        EXPECT_FALSE(b.done) << "answered before its write and fdatasync completed";
        ASSERT_TRUE(f.run_until([&] { return b.done; }));
        EXPECT_EQ(b.result, smtp::CommitResult::ok);
        EXPECT_EQ(f.committer->stats().commits, 2u);
    }
    fs::remove_all(d);
}

TEST(GroupCommit, RotatesSegmentsWhenFull) {
    fs::path d = temp_dir();
    {
        Fixture f(d, 1 << 20);
        std::string body(200 * 1024, 'x');
        std::vector<Waiter> ws(12);  // 2.4 MiB over 1 MiB segments
        for (auto& w : ws) {
            ASSERT_TRUE(f.stage(w, body));
            f.committer->submit(&w);
        }
        ASSERT_TRUE(f.run_until([&] {
            for (auto& w : ws)
                if (!w.done) return false;
            return true;
        }));
        for (auto& w : ws)
            EXPECT_EQ(w.result, smtp::CommitResult::ok);
        EXPECT_GE(f.committer->stats().segments, 3u);
        EXPECT_EQ(f.recovered().size(), 12u);
    }
    fs::remove_all(d);
}

// Bytes of the file's extents that are written (not "unwritten" preallocation), by FIEMAP.
// -1 when the file system cannot tell.
int64_t written_extent_bytes(const fs::path& file) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    constexpr unsigned kMax = 512;
    std::vector<char> buf(sizeof(fiemap) + kMax * sizeof(fiemap_extent));
    auto* fm = reinterpret_cast<fiemap*>(buf.data());
    fm->fm_start = 0;
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = kMax;
    int rc = ioctl(fd, FS_IOC_FIEMAP, fm);
    ::close(fd);
    if (rc != 0) return -1;
    int64_t written = 0;
    for (unsigned i = 0; i < fm->fm_mapped_extents; i++)
        if (!(fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN))
            written += static_cast<int64_t>(fm->fm_extents[i].fe_length);
    return written;
}

// Segments are zero-filled before use (an fdatasync over unwritten extents costs a journal
// commit each time): the first at once, the next ones a chunk at a time while the current
// segment takes commits. Either way every byte of a ready segment is written.
TEST(GroupCommit, PreparedSegmentsAreWrittenThrough) {
    fs::path d = temp_dir();
    {
        constexpr uint64_t kSeg = 4 << 20;
        Fixture f(d, kSeg);
        Waiter a;
        ASSERT_TRUE(f.stage(a, "a\r\n"));
        f.committer->submit(&a);
        ASSERT_TRUE(f.run_until([&] { return a.done; }));
        ASSERT_EQ(a.result, smtp::CommitResult::ok);
        // Segment 2 is prepared while segment 1 is current: the paced fill.
        ASSERT_TRUE(f.run_until([&] { return f.committer->stats().segments >= 2; }));
        std::string dir = spool::core_dir_path(f.cfg.spool_dir, 0);
        for (uint64_t seq : {1, 2}) {
            fs::path seg = fs::path(dir) / spool::segment_file_name(seq);
            EXPECT_EQ(fs::file_size(seg), kSeg);
            int64_t written = written_extent_bytes(seg);
            ASSERT_GE(written, 0) << "FIEMAP unsupported on the file system of " << d;
            EXPECT_EQ(written, static_cast<int64_t>(kSeg)) << seg << " has unwritten extents";
        }
    }
    fs::remove_all(d);
}

// With --commit-depth 2 a second batch is written and synced while the first is in flight;
// the answers still come in batch order, and both are durable.
TEST(GroupCommit, OverlappingBatchesAnswerInOrder) {
    fs::path d = temp_dir();
    {
        Fixture f(d, 4 << 20, 2);
        Waiter first, a, b;
        ASSERT_TRUE(f.stage(first, "first\r\n"));
        f.committer->submit(&first);
        ASSERT_TRUE(f.run_until([&] { return first.done; }));  // the segment is ready
        std::vector<Waiter*> answered;
        a.answered = b.answered = &answered;
        ASSERT_TRUE(f.stage(a, "a\r\n"));
        f.committer->submit(&a);
        f.committer->flush(1);
        ASSERT_EQ(f.committer->batches_inflight(), 1u);
        ASSERT_TRUE(f.stage(b, "b\r\n"));
        f.committer->submit(&b);
        f.committer->flush(2);
        EXPECT_EQ(f.committer->batches_inflight(), 2u) << "the second batch waited for the first";
        EXPECT_FALSE(a.done || b.done);
        ASSERT_TRUE(f.run_until([&] { return a.done && b.done; }));
        EXPECT_EQ(a.result, smtp::CommitResult::ok);
        EXPECT_EQ(b.result, smtp::CommitResult::ok);
        ASSERT_EQ(answered.size(), 2u);
        EXPECT_EQ(answered[0], &a);
        EXPECT_EQ(answered[1], &b);
        EXPECT_EQ(f.committer->stats().commits, 3u);
        ASSERT_TRUE(f.run_until([&] { return f.committer->quiescent(); }));
        auto rec = f.recovered();
        ASSERT_EQ(rec.size(), 3u);
        auto it = rec.begin();
        EXPECT_EQ((it++)->second, "first\r\n");
        EXPECT_EQ((it++)->second, "a\r\n");
        EXPECT_EQ(it->second, "b\r\n");
    }
    fs::remove_all(d);
}

// A batch that fails fails the batch written after it, although that one's own write and
// fdatasync succeeded (recovery would stop at the failed one's hole), then fences the segment:
// the next message goes to a new segment and is accepted.
TEST(GroupCommit, AFailedBatchFailsTheBatchesAfterIt) {
    fs::path d = temp_dir();
    {
        Fixture f(d, 4 << 20, 2);
        Waiter first, a, b, c;
        ASSERT_TRUE(f.stage(first, "first\r\n"));
        f.committer->submit(&first);
        ASSERT_TRUE(f.run_until([&] { return first.done; }));
        const uint64_t seg = f.committer->current_segment_seq();
        f.committer->inject_batch_failure(2);  // the batch of a
        ASSERT_TRUE(f.stage(a, "a\r\n"));
        f.committer->submit(&a);
        f.committer->flush(1);
        ASSERT_TRUE(f.stage(b, "b\r\n"));
        f.committer->submit(&b);
        f.committer->flush(2);
        ASSERT_EQ(f.committer->batches_inflight(), 2u);
        ASSERT_TRUE(f.run_until([&] { return a.done && b.done; }));
        EXPECT_EQ(a.result, smtp::CommitResult::failed);
        EXPECT_EQ(b.result, smtp::CommitResult::failed) << "answered 250 behind a failed batch";
        EXPECT_EQ(f.committer->stats().failed, 2u);
        ASSERT_TRUE(f.stage(c, "c\r\n"));
        f.committer->submit(&c);
        ASSERT_TRUE(f.run_until([&] { return c.done; }));
        EXPECT_EQ(c.result, smtp::CommitResult::ok);
        EXPECT_GT(f.committer->current_segment_seq(), seg) << "the failed segment was not fenced";
        ASSERT_FALSE(f.queue.size() == 0);
    }
    fs::remove_all(d);
}

// The core's Queue counts the messages made durable and keeps nothing per message: it used to
// hold a 32-byte entry for every message accepted in the life of the process.
TEST(GroupCommit, DurableMessagesCostNoMemoryPerMessage) {
    fs::path d = temp_dir();
    {
        Fixture f(d, 4 << 20);
        std::vector<Waiter> ws(1000);
        // In use: the heap's allocated chunks and the large blocks glibc maps on their own.
        auto heap = [] {
            struct mallinfo2 m = mallinfo2();
            return m.uordblks + m.hblkhd;
        };
        auto round = [&] {
            for (auto& w : ws) {
                w.done = false;
                if (!f.stage(w, "m\r\n")) return false;
                f.committer->submit(&w);
            }
            return f.run_until([&] {
                for (auto& w : ws)
                    if (!w.done) return false;
                return true;
            });
        };
        // Warm-up: the staging pool, the batch vectors and a segment rotation take their size.
        for (int i = 0; i < 5; i++)
            ASSERT_TRUE(round());
        const size_t before = heap();
        for (int i = 0; i < 45; i++)
            ASSERT_TRUE(round());
        const size_t after = heap();
        EXPECT_EQ(f.queue.size(), 50000u);
        EXPECT_EQ(f.committer->stats().messages, 50000u);
        // 45,000 more messages: a list of them would take ≥ 1.4 MB.
        EXPECT_LT(after, before + (256u << 10)) << "heap grew by " << (after - before) << " B";
    }
    fs::remove_all(d);
}

TEST(GroupCommit, StatusRecordsRideWithTheNextBatchAfterTheirMessage) {
    fs::path d = temp_dir();
    {
        Fixture f(d);
        Waiter a;
        ASSERT_TRUE(f.stage(a, "a\r\n"));
        f.committer->submit(&a);
        ASSERT_TRUE(f.run_until([&] { return a.done; }));
        // A status alone makes a batch of its own (one write, one fdatasync).
        spool::Status st;
        st.message_id = f.queue.last().id;
        st.state = spool::StatusState::deferred;
        st.reply = "451 4.7.1 later";
        f.committer->append_status(st);
        EXPECT_FALSE(f.committer->idle());
        ASSERT_TRUE(f.run_until([&] { return f.committer->idle(); }));
        EXPECT_EQ(f.committer->stats().commits, 2u);
        // A status with a message: one batch for both, the message first.
        Waiter b;
        ASSERT_TRUE(f.stage(b, "b\r\n"));
        f.committer->submit(&b);
        st.state = spool::StatusState::delivered;
        st.reply = "250 ok";
        f.committer->append_status(st);
        ASSERT_TRUE(f.run_until([&] { return b.done && f.committer->idle(); }));
        EXPECT_EQ(f.committer->stats().commits, 3u);

        std::vector<std::string> order;
        spool::RecoveryStats rs;
        std::string err;
        ASSERT_TRUE(spool::recover_dir(
            spool::core_dir_path(f.cfg.spool_dir, 0), "",
            [&](const spool::RecoveredMessage& m) {
                order.push_back(std::string(m.message->body));
            },
            [&](const spool::Status& s, uint64_t) { order.push_back(std::string(s.reply)); }, rs,
            &err))
            << err;
        EXPECT_EQ(order, (std::vector<std::string>{"a\r\n", "451 4.7.1 later", "b\r\n", "250 ok"}));
    }
    fs::remove_all(d);
}

// A small tmpfs as the spool: the disk fills, messages get no_space (452 4.3.1), never ok;
// after space comes back, messages are accepted again. Needs root for mount(2), which the
// test suite has (it runs as root on the project's machines).
TEST(GroupCommit, FullDiskGivesNoSpaceThenRecovers) {
    ASSERT_EQ(geteuid(), 0u) << "this test mounts a tmpfs and must run as root";
    fs::path d = temp_dir();
    ASSERT_EQ(mount("tmpfs", d.c_str(), "tmpfs", 0, "size=3m"), 0) << strerror(errno);
    {
        Fixture f(d, 1 << 20);
        std::string body(300 * 1024, 'y');
        Waiter first;
        ASSERT_TRUE(f.stage(first, body));
        f.committer->submit(&first);
        ASSERT_TRUE(f.run_until([&] { return first.done; }));
        ASSERT_EQ(first.result, smtp::CommitResult::ok);
        // Fill what is left of the file system.
        {
            std::ofstream filler(d / "filler", std::ios::binary);
            std::string mb(1 << 16, 'f');
            while (filler.write(mb.data(), mb.size())) {
            }
        }
        std::vector<Waiter> ws(10);  // 3 MiB: more than the two preallocated segments hold
        int ok = 0, no_space = 0;
        for (auto& w : ws) {
            ASSERT_TRUE(f.stage(w, body));
            f.committer->submit(&w);
            ASSERT_TRUE(f.run_until([&] { return w.done; }));
            if (w.result == smtp::CommitResult::ok) ok++;
            if (w.result == smtp::CommitResult::no_space) no_space++;
        }
        EXPECT_GT(ok, 0) << "the preallocated segments still take messages";
        EXPECT_GT(no_space, 0) << "a full disk must answer no_space";
        EXPECT_EQ(ok + no_space, 10);
        size_t stored = f.recovered().size();
        EXPECT_EQ(stored, static_cast<size_t>(1 + ok)) << "exactly the ok messages are stored";

        fs::remove(d / "filler");
        // The committer retries segment creation (after its back-off) and accepts again.
        Waiter again;
        bool accepted = false;
        auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!accepted && std::chrono::steady_clock::now() < end) {
            again.done = false;
            ASSERT_TRUE(f.stage(again, body));
            f.committer->submit(&again);
            ASSERT_TRUE(f.run_until([&] { return again.done; }));
            accepted = again.result == smtp::CommitResult::ok;
        }
        EXPECT_TRUE(accepted) << "space is back, messages must be accepted again";
        ASSERT_TRUE(f.run_until([&] { return f.committer->quiescent(); }));
        f.committer->shutdown();
    }
    EXPECT_EQ(umount(d.c_str()), 0);
    fs::remove_all(d);
}

TEST(SegmentSize, HalvesAfterNoSpaceAndKeepsHalfOfWhatIsFree) {
    constexpr uint64_t MiB = 1 << 20;
    constexpr uint64_t plenty = uint64_t{1} << 40;
    // Half of what failed, even when statvfs says more is free (it counts blocks a file
    // system cannot hand out whole).
    EXPECT_EQ(segment_bytes_after_enospc(64 * MiB, plenty), 32 * MiB);
    EXPECT_EQ(segment_bytes_after_enospc(32 * MiB, plenty), 16 * MiB);
    // At most half of what is free, so the next segment and other cores find room too.
    EXPECT_EQ(segment_bytes_after_enospc(64 * MiB, 16 * MiB), 8 * MiB);
    EXPECT_EQ(segment_bytes_after_enospc(64 * MiB, 17 * MiB), 8 * MiB);
    EXPECT_EQ(segment_bytes_after_enospc(64 * MiB, 3 * MiB), 1 * MiB);
    // Cores that share the disk may all ask at once: each keeps to half of its share. With
    // half of all that is free each, two cores took the whole disk, and after a restart no
    // segment fitted (every message got 452).
    EXPECT_EQ(segment_bytes_after_enospc(64 * MiB, 16 * MiB, 2), 4 * MiB);
    EXPECT_EQ(segment_bytes_after_enospc(64 * MiB, 16 * MiB, 4), 2 * MiB);
    // Never below the floor; the floor is tried even when little is free.
    EXPECT_EQ(segment_bytes_after_enospc(3 * MiB, plenty), 3 * MiB / 2);
    EXPECT_EQ(segment_bytes_after_enospc(3 * MiB / 2, plenty), limits::segment_bytes_min);
    EXPECT_EQ(segment_bytes_after_enospc(64 * MiB, 0), limits::segment_bytes_min);
    EXPECT_EQ(segment_bytes_after_enospc(5 * MiB / 2, plenty),
              limits::segment_bytes_min + 256 * 1024);
    // The floor itself did not fit: the disk is full.
    EXPECT_EQ(segment_bytes_after_enospc(limits::segment_bytes_min, plenty), 0u);
    EXPECT_EQ(segment_bytes_after_enospc(limits::segment_bytes_min / 2, plenty), 0u);
}

uint64_t file_bytes(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(stat(p.c_str(), &st), 0) << p;
    return static_cast<uint64_t>(st.st_size);
}

TEST(GroupCommit, ADiskSmallerThanASegmentGetsSmallerSegments) {
    ASSERT_EQ(geteuid(), 0u) << "this test mounts a tmpfs and must run as root";
    fs::path d = temp_dir();
    ASSERT_EQ(mount("tmpfs", d.c_str(), "tmpfs", 0, "size=8m"), 0) << strerror(errno);
    size_t ok = 0;
    {
        Fixture f(d, 64 << 20);  // 64 MiB segments on an 8 MiB disk
        std::string body(100 * 1024, 'z');
        std::vector<Waiter> ws(30);  // 3 MB: more than one shrunk segment holds
        for (auto& w : ws) {
            ASSERT_TRUE(f.stage(w, body));
            f.committer->submit(&w);
            ASSERT_TRUE(f.run_until([&] { return w.done; }));
            EXPECT_EQ(w.result, smtp::CommitResult::ok);
            ok += w.result == smtp::CommitResult::ok;
        }
        // A message larger than any segment the disk has room for: 452, and the next small
        // one is taken again.
        Waiter big, small;
        ASSERT_TRUE(f.stage(big, std::string(5 << 20, 'b')));
        ASSERT_TRUE(f.stage(small, body));
        f.committer->submit(&big);
        f.committer->submit(&small);
        ASSERT_TRUE(f.run_until([&] { return big.done && small.done; }));
        EXPECT_EQ(big.result, smtp::CommitResult::no_space);
        EXPECT_EQ(small.result, smtp::CommitResult::ok);
        ok += small.result == smtp::CommitResult::ok;
        ASSERT_TRUE(f.run_until([&] { return f.committer->quiescent(); }));
        f.committer->shutdown();
        // Segments of differing sizes, each smaller than asked and no smaller than the floor.
        std::vector<uint64_t> sizes;
        for (const auto& e : fs::directory_iterator(spool::core_dir_path(f.cfg.spool_dir, 0)))
            sizes.push_back(file_bytes(e.path()));
        ASSERT_GE(sizes.size(), 2u);
        for (uint64_t n : sizes) {
            EXPECT_LT(n, uint64_t{64} << 20);
            EXPECT_GE(n, limits::segment_bytes_min);
        }
        EXPECT_EQ(f.recovered().size(), ok) << "every accepted message is recovered";
    }
    EXPECT_EQ(umount(d.c_str()), 0);
    fs::remove_all(d);
}

// A waiter that submits its next message as soon as it hears of the last one, as a
// connection does with a pipelined BDAT transaction.
struct Resubmitter final : CommitWaiter {
    Fixture* f = nullptr;
    int left = 0;  // messages still to submit after the first
    std::vector<smtp::CommitResult> results;
    void commit_finished(smtp::CommitResult r) override {
        results.push_back(r);
        if (left-- > 0 && f->stage_into(*this, "again\r\n")) f->committer->submit(this);
    }
};

TEST(GroupCommit, AMessageSubmittedWhileAFullDiskIsAnsweredIsNotLost) {
    ASSERT_EQ(geteuid(), 0u) << "this test mounts a tmpfs and must run as root";
    fs::path d = temp_dir();
    ASSERT_EQ(mount("tmpfs", d.c_str(), "tmpfs", 0, "size=512k"), 0) << strerror(errno);
    {
        Fixture f(d, 64 << 20);
        Resubmitter w;
        w.f = &f;
        w.left = 2;
        ASSERT_TRUE(f.stage_into(w, "first\r\n"));
        f.committer->submit(&w);
        // A message submitted from commit_finished waits for the next flush: a timer wakes the
        // loop as the engine's tick does (nothing else is in the ring on a full disk).
        auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (w.results.size() < 3 && std::chrono::steady_clock::now() < end) {
            f.committer->flush(
                static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count()));
            __kernel_timespec tick{.tv_sec = 0, .tv_nsec = 10'000'000};
            io_uring_sqe* s = f.reactor.sqe();
            io_uring_prep_timeout(s, &tick, 0, 0);
            io_uring_sqe_set_data64(s, kTagIgnore);
            f.reactor.run_once([](uint64_t, int) {});
        }
        ASSERT_EQ(w.results.size(), 3u) << "a message submitted while others were answered";
        for (auto r : w.results)
            EXPECT_EQ(r, smtp::CommitResult::no_space);
        ASSERT_TRUE(f.run_until([&] { return f.committer->quiescent(); }));
        f.committer->shutdown();
    }
    EXPECT_EQ(umount(d.c_str()), 0);
    fs::remove_all(d);
}

TEST(GroupCommit, ADiskSmallerThanTheFloorIsFull) {
    ASSERT_EQ(geteuid(), 0u) << "this test mounts a tmpfs and must run as root";
    fs::path d = temp_dir();
    ASSERT_EQ(mount("tmpfs", d.c_str(), "tmpfs", 0, "size=512k"), 0) << strerror(errno);
    {
        Fixture f(d, 64 << 20);
        Waiter w;
        ASSERT_TRUE(f.stage(w, "tiny\r\n"));
        f.committer->submit(&w);
        ASSERT_TRUE(f.run_until([&] { return w.done; }));
        EXPECT_EQ(w.result, smtp::CommitResult::no_space);
        ASSERT_TRUE(f.run_until([&] { return f.committer->quiescent(); }));
        f.committer->shutdown();
    }
    EXPECT_EQ(umount(d.c_str()), 0);
    fs::remove_all(d);
}

}  // namespace
}  // namespace ringmail
