// tls_auth_worker_test.cpp — pins tls/auth_worker.hpp: password checks run on the worker
// thread, every accepted request gets exactly one result with the right verdict, submit()
// refuses beyond the in-flight bound, and completion_fd() wakes the owner. Waits are poll(2)
// on the eventfd with a deadline, never sleeps.
#include "tls/auth_worker.hpp"

#include <crypt.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

namespace ringmail::tls {
namespace {

std::string make_hash(const char* prefix, unsigned long cost, const char* password) {
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn(prefix, cost, nullptr, 0, salt, sizeof salt) == nullptr) return {};
    crypt_data data{};
    const char* h = crypt_rn(password, salt, &data, sizeof data);
    return h != nullptr ? std::string(h) : std::string();
}

// Waits for the completion eventfd (10 s at most) and consumes its counter.
bool wait_completion(const AuthWorker& w) {
    pollfd p{w.completion_fd(), POLLIN, 0};
    if (::poll(&p, 1, 10'000) != 1) return false;
    uint64_t count = 0;
    return read(w.completion_fd(), &count, sizeof count) == sizeof count && count > 0;
}

// Four kinds of request by token: right password (two users), wrong password, unknown user.
const char* token_user(uint64_t token) {
    static const char* const users[] = {"alice", "bob", "alice", "mallory"};
    return users[token % 4];
}

const char* token_password(uint64_t token) {
    static const char* const passwords[] = {"alicepw", "bobpw", "bobpw", "alicepw"};
    return passwords[token % 4];
}

bool token_should_pass(uint64_t token) {
    return token % 4 < 2;
}

class AuthWorkerTest : public ::testing::Test {
  protected:
    void SetUp() override {
        // SHA-512-crypt at 1000 rounds keeps 1000 checks around a second.
        const std::string a = make_hash("$6$", 1000, "alicepw");
        const std::string b = make_hash("$6$", 1000, "bobpw");
        ASSERT_FALSE(a.empty());
        ASSERT_FALSE(b.empty());
        std::string error;
        ASSERT_TRUE(users_.load_text("alice:" + a + "\nbob:" + b + "\n", "users", &error)) << error;
    }
    AuthUsers users_;
};

TEST_F(AuthWorkerTest, OneRequestOneResult) {
    AuthWorker w(users_, 4);
    ASSERT_TRUE(w.ok());
    AuthResult r[4];
    EXPECT_EQ(w.poll(r, 4), 0u);
    ASSERT_TRUE(w.submit(42, "alice", "alicepw"));
    EXPECT_EQ(w.in_flight(), 1u);
    ASSERT_TRUE(wait_completion(w));
    ASSERT_EQ(w.poll(r, 4), 1u);
    EXPECT_EQ(r[0].token, 42u);
    EXPECT_TRUE(r[0].ok);
    EXPECT_EQ(w.in_flight(), 0u);
}

TEST_F(AuthWorkerTest, RefusesBeyondCapacityAndOverlongFields) {
    AuthWorker w(users_, 2);
    ASSERT_TRUE(w.ok());
    EXPECT_FALSE(w.submit(1, std::string(auth_field_max_bytes + 1, 'u'), "pw"));
    EXPECT_FALSE(w.submit(1, "alice", std::string(auth_field_max_bytes + 1, 'p')));
    ASSERT_TRUE(w.submit(1, "alice", "x"));
    ASSERT_TRUE(w.submit(2, "bob", "y"));
    EXPECT_FALSE(w.submit(3, "bob", "z")) << "in-flight bound is the capacity";
    std::vector<AuthResult> got;
    while (got.size() < 2) {
        ASSERT_TRUE(wait_completion(w));
        AuthResult r[2];
        const size_t n = w.poll(r, 2);
        got.insert(got.end(), r, r + n);
    }
    EXPECT_TRUE(w.submit(3, "bob", "bobpw")) << "room again once results were polled";
}

// 1000 requests through a 64-slot worker: right, wrong and unknown-user passwords mixed;
// each token must come back exactly once with the verdict its kind implies.
TEST_F(AuthWorkerTest, ThousandConcurrentRequests) {
    AuthWorker w(users_, 64);
    ASSERT_TRUE(w.ok());
    constexpr uint64_t total = 1000;
    std::vector<int> seen(total, 0);
    uint64_t next = 0;
    uint64_t done = 0;
    size_t max_in_flight = 0;
    while (done < total) {
        while (next < total) {
            const char* user = token_user(next);
            const char* pass = token_password(next);
            if (!w.submit(next, user, pass)) break;
            ++next;
        }
        max_in_flight = std::max(max_in_flight, w.in_flight());
        ASSERT_TRUE(wait_completion(w)) << "no completion within 10 s, done=" << done;
        AuthResult r[32];
        for (size_t n; (n = w.poll(r, 32)) != 0;) {
            for (size_t i = 0; i < n; ++i) {
                ASSERT_LT(r[i].token, total);
                ++seen[r[i].token];
                EXPECT_EQ(r[i].ok, token_should_pass(r[i].token)) << r[i].token;
            }
            done += n;
        }
    }
    EXPECT_EQ(max_in_flight, 64u) << "the ring should have been filled";
    for (uint64_t t = 0; t < total; ++t)
        EXPECT_EQ(seen[t], 1) << t;
    EXPECT_EQ(w.in_flight(), 0u);
}

TEST_F(AuthWorkerTest, DestroyWithRequestsPendingJoinsCleanly) {
    for (int i = 0; i < 20; ++i) {
        AuthWorker w(users_, 8);
        ASSERT_TRUE(w.ok());
        for (uint64_t t = 0; t < 8; ++t)
            ASSERT_TRUE(w.submit(t, "alice", "alicepw"));
    }  // the destructor stops and joins; a hang here fails the test by timeout
}

}  // namespace
}  // namespace ringmail::tls
