// tool_sink.hpp — `ringmail-bench sink`: a fast, scriptable SMTP sink for benchmarks and tests.
//
// Who calls it: bench/ringmail_bench_main.cpp after parsing flags. It runs one io_uring reactor
// thread per core, each accepting on its own SO_REUSEPORT listener per --listen address, and
// drives a SinkSession per connection. Periodic lines go to stderr and to --stats-file
// (rewritten atomically); the final report goes to stdout (and the stats file) on SIGTERM or
// SIGINT. Returns the process exit code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/tool_sink_session.hpp"
#include "core/base/config.hpp"

namespace ringmail::bench {

struct SinkConfig {
    std::vector<ListenAddress> listen;
    uint32_t threads = 0;  // 0: online CPUs
    SinkOptions session;
    uint64_t expect = 1u << 24;  // seqs tracked in the duplicate bitmap
    uint32_t max_sessions = 0;   // 0: unlimited
    double report_interval_s = 0;
    std::string stats_file;
    // The seqs of the verified messages accepted (each once, ascending, one per line), rewritten
    // with the stats: what a test needs to account for each message it sent, not just count.
    std::string seqs_file;
    bool json = false;
};

[[nodiscard]] int run_sink(const SinkConfig& cfg);

}  // namespace ringmail::bench
