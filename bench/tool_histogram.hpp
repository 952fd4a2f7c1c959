// tool_histogram.hpp — a log-linear (HDR-style) latency histogram for ringmail-bench.
//
// Who uses it: the load generator (bench/tool_source.cpp), one per reactor thread per measured
// interval, merged at the end. Guarantees: record() is O(1) and never allocates (the buckets are
// a fixed array sized at construction of the object); every recorded value is reported with a
// relative error below 1/128 (7 sub-bucket bits per power of two), and min/max/mean are exact.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>

namespace ringmail::bench {

class Histogram {
  public:
    static constexpr unsigned kSubBits = 7;
    static constexpr uint64_t kSub = uint64_t{1} << kSubBits;       // 128 sub-buckets
    static constexpr size_t kBuckets = (64 - kSubBits + 1) * kSub;  // covers all of uint64_t

    // Bucket of a value: values below 2*kSub map to themselves (exact); above, the top
    // kSubBits+1 bits select the bucket, so the width grows with the magnitude.
    [[nodiscard]] static constexpr size_t index_of(uint64_t v) {
        if (v < 2 * kSub) return static_cast<size_t>(v);
        unsigned msb = 63u - static_cast<unsigned>(std::countl_zero(v));
        unsigned shift = msb - kSubBits;
        return (shift + 1) * kSub + static_cast<size_t>((v >> shift) - kSub);
    }
    // The highest value that maps to bucket i (HDR's "highest equivalent value").
    [[nodiscard]] static constexpr uint64_t upper_of(size_t i) {
        if (i < 2 * kSub) return i;
        unsigned shift = static_cast<unsigned>(i / kSub) - 1;
        uint64_t sub = i % kSub + kSub;
        return ((sub + 1) << shift) - 1;
    }

    void record(uint64_t v) {
        counts_[index_of(v)]++;
        count_++;
        sum_ += v;
        max_ = std::max(max_, v);
        min_ = std::min(min_, v);
    }

    void merge(const Histogram& o) {
        for (size_t i = 0; i < kBuckets; i++)
            counts_[i] += o.counts_[i];
        count_ += o.count_;
        sum_ += o.sum_;
        max_ = std::max(max_, o.max_);
        min_ = std::min(min_, o.min_);
    }

    // The smallest recorded value v such that at least p percent of the samples are <= v
    // (within the bucket precision; never above the exact max). 0 when empty.
    [[nodiscard]] uint64_t percentile(double p) const {
        if (count_ == 0) return 0;
        auto want = static_cast<uint64_t>(p / 100.0 * static_cast<double>(count_) + 0.999999);
        want = std::clamp<uint64_t>(want, 1, count_);
        uint64_t seen = 0;
        for (size_t i = 0; i < kBuckets; i++) {
            seen += counts_[i];
            if (seen >= want) return std::min(upper_of(i), max_);
        }
        return max_;
    }

    [[nodiscard]] uint64_t count() const { return count_; }
    [[nodiscard]] uint64_t max() const { return max_; }
    [[nodiscard]] uint64_t min() const { return count_ ? min_ : 0; }
    [[nodiscard]] double mean() const {
        return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0;
    }

  private:
    std::array<uint64_t, kBuckets> counts_{};
    uint64_t count_ = 0;
    uint64_t sum_ = 0;
    uint64_t max_ = 0;
    uint64_t min_ = UINT64_MAX;
};

static_assert(Histogram::index_of(UINT64_MAX) == Histogram::kBuckets - 1);
static_assert(Histogram::upper_of(Histogram::index_of(1000)) >= 1000);

}  // namespace ringmail::bench
