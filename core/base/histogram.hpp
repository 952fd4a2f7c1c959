// histogram.hpp — a latency histogram with fixed buckets, for the metrics (Prometheus
// histograms in seconds). Plain counters, written by one core's thread only; the engine copies
// them to its published metrics at each tick (core/engine/metrics.hpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace ringmail {

class LatencyHistogram {
  public:
    // Upper bounds in microseconds: 100 µs to 10 s, then +Inf.
    static constexpr std::array<uint64_t, 15> bounds_us{
        100,    250,     500,     1'000,   2'500,     5'000,     10'000,    25'000,
        50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 10'000'000};
    static constexpr size_t buckets = bounds_us.size() + 1;  // the last is +Inf

    void record(uint64_t us) {
        size_t i = 0;
        while (i < bounds_us.size() && us > bounds_us[i])
            i++;
        counts_[i]++;
        sum_us_ += us;
    }
    // Not cumulative: bucket i counts observations in (bound i-1, bound i].
    [[nodiscard]] uint64_t count_in(size_t bucket) const { return counts_[bucket]; }
    [[nodiscard]] uint64_t sum_us() const { return sum_us_; }

  private:
    std::array<uint64_t, buckets> counts_{};
    uint64_t sum_us_ = 0;
};

}  // namespace ringmail
