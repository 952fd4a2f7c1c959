// spool_bench.cpp — micro-benchmarks of the spool's hot functions (Google Benchmark program).
//
// Staging is on the path of every body byte received (the one copy plus its CRC), so its
// throughput bounds the relay's intake per core. Run: build/spool_bench.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "core/base/limits.hpp"
#include "spool/record.hpp"

namespace {

using ringmail::spool::ChunkPool;
using ringmail::spool::EnvelopeFields;
using ringmail::spool::MessageBuilder;
using ringmail::spool::RcptField;

void BM_Crc32c(benchmark::State& state) {
    const std::string buf(static_cast<size_t>(state.range(0)), 'x');
    uint32_t crc = 0;
    for (auto _ : state) {
        crc = ringmail::spool::crc32c(crc, buf.data(), buf.size());
        benchmark::DoNotOptimize(crc);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_Crc32c)->Arg(64)->Arg(1024)->Arg(16384)->Arg(1 << 20);

// One message of state.range(0) body bytes, appended in 1 KiB pieces as a session would.
void BM_StageMessage(benchmark::State& state) {
    ChunkPool pool(ringmail::limits::staging_chunk_bytes, 64ull << 20);
    const std::vector<RcptField> rcpts = {{"bob@example.net", ""}, {"carol@example.net", ""}};
    const EnvelopeFields env{"mx.example.org",    "192.0.2.1",     "ESMTP",
                             "alice@example.org", "BODY=8BITMIME", rcpts};
    const std::string piece(1024, 'b');
    const auto pieces = static_cast<size_t>(state.range(0)) / piece.size();
    MessageBuilder b;
    std::vector<iovec> iov;
    iov.reserve(1024);
    uint64_t id = 0;
    for (auto _ : state) {
        if (!b.begin(pool, ++id, 0, env)) state.SkipWithError("pool exhausted");
        for (size_t i = 0; i < pieces; ++i) {
            if (!b.append(piece)) state.SkipWithError("pool exhausted");
        }
        if (!b.seal(0x5eed)) state.SkipWithError("seal failed");
        iov.clear();
        b.iovecs(iov);
        benchmark::DoNotOptimize(iov.data());
        b.reset();
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_StageMessage)->Arg(1024)->Arg(16384)->Arg(1 << 20);

}  // namespace
