// metrics_server.hpp — Prometheus text exposition (format 0.0.4) at GET /metrics, served by a
// small thread of its own.
//
// Why a thread and not the reactors: a scrape comes every few seconds, and formatting it on a
// core would put HTTP parsing and a few kilobytes of text in the middle of SMTP sessions; the
// thread only reads what the cores published at their last tick (core/engine/metrics.hpp), so
// it shares nothing mutable with them. Why not prometheus-cpp: its counters are atomic doubles
// updated at each increment, a cost on the data path that the per-tick copy avoids, and the
// exposition itself is a few dozen lines.
//
// One connection at a time, each bounded: 2 s to send the request, 8 KiB of it at most; any
// path other than /metrics gets 404, a method other than GET 405.
#pragma once

#include <cstdint>
#include <string>
#include <thread>

#include "core/base/config.hpp"
#include "core/engine/metrics.hpp"

namespace ringmail {

// The exposition of `cores` cores' published figures.
std::string metrics_text(const CoreMetrics* cores, uint32_t count);

class MetricsServer {
  public:
    MetricsServer() = default;
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;
    ~MetricsServer();

    // Binds and starts serving; false (with *error) when the address cannot be bound.
    bool start(const ListenAddress& at, const CoreMetrics* cores, uint32_t count,
               std::string* error);
    void stop();

  private:
    void serve();
    void answer(int fd);

    int listen_fd_ = -1;
    int stop_fd_ = -1;
    const CoreMetrics* cores_ = nullptr;
    uint32_t count_ = 0;
    std::thread thread_;
};

}  // namespace ringmail
