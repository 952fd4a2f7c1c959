// metrics.hpp — the figures each core publishes for the metrics endpoint
// (core/program/metrics_server.*).
//
// A core counts in plain integers on its own thread (Engine::Stats, CommitStats,
// Delivery::Stats, the histograms) and copies them here at each tick (100 ms) with relaxed
// atomic stores: one writer per CoreMetrics, read by the metrics thread at a scrape. Nothing
// on the data path pays for metrics beyond the counters it kept anyway; a scrape sees every
// core's figures as of its last tick.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/base/histogram.hpp"

namespace ringmail {

enum class Metric : uint8_t {
    connections_accepted,
    connections_refused_busy,
    connections_refused_per_ip,
    connections_open,
    messages_accepted,
    message_bytes_accepted,
    messages_refused_storage,
    commits,
    status_records,
    segments_created,
    segments_deleted,
    messages_compacted,
    queue_messages,
    queue_active,
    delivered,
    deferred,
    bounced,
    expired,
    outbound_connections,
    outbound_transactions,
    reactor_wait_us,
    reactor_busy_us,
    count,
};

struct PublishedHistogram {
    std::array<std::atomic<uint64_t>, LatencyHistogram::buckets> counts{};
    std::atomic<uint64_t> sum_us{0};

    void publish(const LatencyHistogram& h) {
        for (size_t i = 0; i < counts.size(); i++)
            counts[i].store(h.count_in(i), std::memory_order_relaxed);
        sum_us.store(h.sum_us(), std::memory_order_relaxed);
    }
};

struct alignas(64) CoreMetrics {
    std::array<std::atomic<uint64_t>, static_cast<size_t>(Metric::count)> values{};
    PublishedHistogram commit_latency;
    PublishedHistogram eod_to_reply;

    void set(Metric m, uint64_t v) {
        values[static_cast<size_t>(m)].store(v, std::memory_order_relaxed);
    }
    [[nodiscard]] uint64_t get(Metric m) const {
        return values[static_cast<size_t>(m)].load(std::memory_order_relaxed);
    }
};

}  // namespace ringmail
