// spool_crc32c_test.cpp — the hardware CRC32C against published vectors and a bitwise reference.
//
// Every record checksum depends on it; a wrong polynomial or a broken chaining would make every
// segment unreadable by another implementation (or by the next version of this one).
#include <gtest/gtest.h>

#include <string>

#include "spool/record.hpp"

namespace ringmail::spool {
namespace {

uint32_t reference_crc32c(const std::string& s) {
    uint32_t c = ~0u;
    for (unsigned char b : s) {
        c ^= b;
        for (int i = 0; i < 8; ++i)
            c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
    }
    return ~c;
}

TEST(SpoolCrc32c, CheckValueOf123456789) {
    EXPECT_EQ(crc32c(0, "123456789", 9), 0xE3069283u);
}

TEST(SpoolCrc32c, EmptyInputIsZero) {
    EXPECT_EQ(crc32c(0, "", 0), 0u);
}

// RFC 3720 appendix B.4 (iSCSI) test vectors.
TEST(SpoolCrc32c, Rfc3720Vectors) {
    const std::string zeros(32, '\0');
    const std::string ones(32, '\xff');
    std::string ascending(32, '\0');
    std::string descending(32, '\0');
    for (int i = 0; i < 32; ++i) {
        ascending[i] = static_cast<char>(i);
        descending[i] = static_cast<char>(31 - i);
    }
    EXPECT_EQ(crc32c(0, zeros.data(), zeros.size()), 0x8A9136AAu);
    EXPECT_EQ(crc32c(0, ones.data(), ones.size()), 0x62A8AB43u);
    EXPECT_EQ(crc32c(0, ascending.data(), ascending.size()), 0x46DD794Eu);
    EXPECT_EQ(crc32c(0, descending.data(), descending.size()), 0x113FDB5Cu);
}

// Unaligned starts and every length around the 8-byte word loop agree with the bitwise form.
TEST(SpoolCrc32c, MatchesBitwiseReferenceAtEveryAlignmentAndLength) {
    std::string buf(200, '\0');
    for (size_t i = 0; i < buf.size(); ++i)
        buf[i] = static_cast<char>(i * 131 + 7);
    for (size_t start = 0; start < 9; ++start) {
        for (size_t n = 0; start + n <= buf.size(); ++n) {
            const std::string s = buf.substr(start, n);
            ASSERT_EQ(crc32c(0, buf.data() + start, n), reference_crc32c(s))
                << "start " << start << " n " << n;
        }
    }
}

// The builder runs the crc over the payload as it arrives, then continues with the header and
// the salt: chaining at any split must equal the one-shot value.
TEST(SpoolCrc32c, ChainingAtEverySplitEqualsOneShot) {
    std::string s = "The quick brown fox jumps over the lazy dog, twice over and again.";
    const uint32_t whole = crc32c(0, s.data(), s.size());
    for (size_t k = 0; k <= s.size(); ++k) {
        const uint32_t first = crc32c(0, s.data(), k);
        ASSERT_EQ(crc32c(first, s.data() + k, s.size() - k), whole) << "split " << k;
    }
}

}  // namespace
}  // namespace ringmail::spool
