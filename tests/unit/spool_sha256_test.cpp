// spool_sha256_test.cpp — SHA-256 against FIPS 180-4 example vectors; the spool tool's
// body_sha256 is how integration tests check that a stored body is exactly what was sent.
#include <gtest/gtest.h>

#include <string>

#include "spool/sha256.hpp"

namespace ringmail::spool {
namespace {

TEST(SpoolSha256, KnownVectors) {
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Padding edge cases: lengths around 55/56/64 bytes need one or two final blocks.
TEST(SpoolSha256, IncrementalUpdatesAtEverySplitMatchOneShot) {
    for (size_t len : {55u, 56u, 63u, 64u, 65u, 119u, 120u, 200u}) {
        std::string s(len, '\0');
        for (size_t i = 0; i < len; ++i)
            s[i] = static_cast<char>(i * 7 + 1);
        const std::string whole = sha256_hex(s);
        for (size_t k = 0; k <= len; ++k) {
            Sha256 h;
            h.update(std::string_view(s).substr(0, k));
            h.update(std::string_view(s).substr(k));
            std::string hex;
            for (uint8_t b : h.finish()) {
                static constexpr char d[] = "0123456789abcdef";
                hex += d[b >> 4];
                hex += d[b & 15];
            }
            ASSERT_EQ(hex, whole) << "len " << len << " split " << k;
        }
    }
}

}  // namespace
}  // namespace ringmail::spool
