// core_commit_test.cpp — group commit through a real io_uring on a real file system:
// one write + one fdatasync per batch, results only after the fdatasync, records readable by
// recovery, and a full disk answered with no_space (then accepted again once space is back).
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "core/commit.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"

namespace ringmail {
namespace {

namespace fs = std::filesystem;

struct Waiter final : CommitWaiter {
    bool done = false;
    smtp::CommitResult result = smtp::CommitResult::failed;
    void commit_finished(smtp::CommitResult r) override {
        done = true;
        result = r;
    }
};

struct Fixture {
    fs::path dir;
    Config cfg;
    Reactor reactor;
    Queue queue;
    std::unique_ptr<Committer> committer;

    explicit Fixture(const fs::path& spool, uint64_t segment_bytes = 4 << 20) {
        dir = spool;
        cfg.spool_dir = spool.string();
        cfg.segment_bytes = segment_bytes;
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
