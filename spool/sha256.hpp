// sha256.hpp — SHA-256 (FIPS 180-4), for the spool reader tool's body digests.
//
// Called by tools/spool_main.cpp (`json` prints body_sha256) so integration tests can compare a
// stored body with what was sent without dumping it. Not on the data path; no dependency added
// for ~100 lines.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringmail::spool {

class Sha256 {
  public:
    Sha256();
    void update(std::string_view data);
    [[nodiscard]] std::array<uint8_t, 32> finish();  // once; the object is spent afterwards

  private:
    void block(const uint8_t* p);
    std::array<uint32_t, 8> h_;
    std::array<uint8_t, 64> buf_{};
    size_t buf_bytes_ = 0;
    uint64_t total_bytes_ = 0;
};

// Lowercase hex SHA-256 of `data`.
[[nodiscard]] std::string sha256_hex(std::string_view data);

}  // namespace ringmail::spool
