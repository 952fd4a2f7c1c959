// crc32c.cpp — CRC32C (Castagnoli) with the SSE4.2 instruction, for the spool's record checksums.
//
// Called by the record codec for every byte staged and every byte recovered, so it is on the hot
// path of both. Guarantees the standard CRC32C (reflected, init and final xor ~0): chaining
// crc32c(crc32c(0, a), b) equals crc32c(0, a || b), which is what lets a message's crc run while
// its text arrives and be finished with the header and the segment salt at seal time.
#include <nmmintrin.h>

#include <cstring>

#include "spool/record.hpp"

namespace ringmail::spool {

uint32_t crc32c(uint32_t crc, const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint64_t c = ~crc;
    // Bytes up to an 8-byte boundary, so the word loop reads aligned memory.
    while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
        c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
        --n;
    }
    while (n >= 8) {
        uint64_t word;
        std::memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
        --n;
    }
    return ~static_cast<uint32_t>(c);
}

}  // namespace ringmail::spool
