// tls_dkim_worker_test.cpp — pins tls/dkim_worker.hpp: signatures are computed on the worker
// thread and equal the inline ones, every accepted request gets exactly one result with its
// token, submit() refuses beyond the in-flight bound, and completion_fd() wakes the owner.
// Waits are poll(2) on the eventfd with a deadline, never sleeps.
#include "tls/dkim_worker.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tls/dkim_canon.hpp"

namespace ringmail::tls {
namespace {

bool wait_completion(const DkimWorker& w) {
    pollfd p{w.completion_fd(), POLLIN, 0};
    if (::poll(&p, 1, 10'000) != 1) return false;
    uint64_t count = 0;
    return read(w.completion_fd(), &count, sizeof count) == sizeof count && count > 0;
}

class DkimWorkerTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        std::string error;
        rsa_ = DkimKey::from_pem(DkimKey::generate_pem(DkimAlgorithm::rsa_sha256, 2048), &error)
                   .release();
        ed_ = DkimKey::from_pem(DkimKey::generate_pem(DkimAlgorithm::ed25519_sha256), &error)
                  .release();
    }
    static void TearDownTestSuite() {
        delete rsa_;
        delete ed_;
    }
    static const DkimKey& key_for(uint64_t token) { return token % 2 == 0 ? *rsa_ : *ed_; }
    static DkimDigest digest_for(uint64_t token) { return dkim_sha256(std::to_string(token)); }

    static DkimKey* rsa_;
    static DkimKey* ed_;
};
DkimKey* DkimWorkerTest::rsa_ = nullptr;
DkimKey* DkimWorkerTest::ed_ = nullptr;

TEST_F(DkimWorkerTest, SignatureEqualsInlineOne) {
    ASSERT_NE(rsa_, nullptr);
    ASSERT_NE(ed_, nullptr);
    DkimWorker w(4);
    ASSERT_TRUE(w.ok());
    DkimSignResult r[4];
    EXPECT_EQ(w.poll(r, 4), 0u);
    for (uint64_t token : {10u, 11u}) {
        ASSERT_TRUE(w.submit(token, key_for(token), digest_for(token)));
        ASSERT_TRUE(wait_completion(w));
        ASSERT_EQ(w.poll(r, 4), 1u);
        EXPECT_EQ(r[0].token, token);
        uint8_t inline_sig[dkim_signature_max_bytes];
        const size_t n = key_for(token).sign(digest_for(token), inline_sig, sizeof inline_sig);
        ASSERT_EQ(r[0].signature_len, n);
        EXPECT_EQ(n, token % 2 == 0 ? 256u : 64u);
        EXPECT_EQ(std::memcmp(r[0].signature, inline_sig, n), 0);
    }
    EXPECT_EQ(w.in_flight(), 0u);
}

TEST_F(DkimWorkerTest, RefusesBeyondCapacity) {
    DkimWorker w(2);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w.submit(1, *ed_, digest_for(1)));
    ASSERT_TRUE(w.submit(2, *ed_, digest_for(2)));
    EXPECT_FALSE(w.submit(3, *ed_, digest_for(3))) << "in-flight bound is the capacity";
    size_t got = 0;
    while (got < 2) {
        ASSERT_TRUE(wait_completion(w));
        DkimSignResult r[2];
        got += w.poll(r, 2);
    }
    EXPECT_TRUE(w.submit(3, *ed_, digest_for(3))) << "room again once results were polled";
}

// 400 requests, RSA and Ed25519 mixed, through a 16-slot worker: each token comes back exactly
// once with the signature of its own digest.
TEST_F(DkimWorkerTest, ManyRequestsEachAnsweredOnce) {
    DkimWorker w(16);
    ASSERT_TRUE(w.ok());
    constexpr uint64_t total = 400;
    std::vector<int> seen(total, 0);
    uint64_t next = 0;
    uint64_t done = 0;
    auto r = std::make_unique<DkimSignResult[]>(16);
    while (done < total) {
        while (next < total && w.submit(next, key_for(next), digest_for(next)))
            ++next;
        ASSERT_TRUE(wait_completion(w)) << "no completion within 10 s, done=" << done;
        for (size_t n; (n = w.poll(r.get(), 16)) != 0;) {
            for (size_t i = 0; i < n; ++i) {
                const uint64_t t = r[i].token;
                ASSERT_LT(t, total);
                ++seen[t];
                uint8_t expect[dkim_signature_max_bytes];
                const size_t len = key_for(t).sign(digest_for(t), expect, sizeof expect);
                ASSERT_EQ(r[i].signature_len, len);
                ASSERT_EQ(std::memcmp(r[i].signature, expect, len), 0) << t;
            }
            done += n;
        }
    }
    for (uint64_t t = 0; t < total; ++t)
        EXPECT_EQ(seen[t], 1) << t;
    EXPECT_EQ(w.in_flight(), 0u);
}

}  // namespace
}  // namespace ringmail::tls
