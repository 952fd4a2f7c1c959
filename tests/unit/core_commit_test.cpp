// core_commit_test.cpp — group commit through a real io_uring on a real file system:
// one write + one fdatasync per batch, results only after the fdatasync, records readable by
// recovery, and a full disk answered with no_space (then accepted again once space is back).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
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

    bool stage(Waiter& w, const std::string& body) {
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
        st.message_id = f.queue.entries()[0].id;
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

}  // namespace
}  // namespace ringmail
