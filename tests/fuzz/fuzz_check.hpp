// fuzz_check.hpp — the invariant checks of the fuzz targets (tests/fuzz/*_fuzz.cpp).
//
// A broken promise of the code under test must stop the fuzzer with a crash, so that libFuzzer
// saves the input and ctest fails: FUZZ_CHECK prints what was expected and where, then aborts.
// Unlike assert(), it is never compiled out.
//
// Inputs of bugs the targets found, once fixed, stay in corpus/<target>/regression-*.bin: every
// run replays them.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace ringmail::fuzz {

[[noreturn]] inline void check_failed(const char* what, const char* file, int line) {
    std::fprintf(stderr, "fuzz: invariant broken: %s at %s:%d\n", what, file, line);
    std::abort();
}

// CRC32C (Castagnoli, reflected polynomial 0x82f63b78), a byte at a time from a table: an
// implementation independent of the SSE4.2 one under test.
inline uint32_t reference_crc32c(uint32_t crc, std::string_view data) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k)
                c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    crc = ~crc;
    for (const char ch : data)
        crc = table[(crc ^ static_cast<uint8_t>(ch)) & 0xff] ^ (crc >> 8);
    return ~crc;
}

}  // namespace ringmail::fuzz

#define FUZZ_CHECK(cond)                                                        \
    do {                                                                        \
        if (!(cond)) ::ringmail::fuzz::check_failed(#cond, __FILE__, __LINE__); \
    } while (0)
