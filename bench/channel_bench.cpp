// channel_bench.cpp — throughput of the core-to-core SpscRing (core/runtime/channel.hpp) between
// two threads, for single pushes/pops and for batches of 64 (how the reactor loop drains).
//
// The benchmark thread is the producer; a consumer thread spins on pop_batch until it has seen
// every value. Wake-ups are left out on purpose: they cost one MSG_RING per loop iteration, not
// per value, so this measures the ring itself. Reported as items/s.
#include "core/runtime/channel.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <thread>

namespace {

constexpr size_t kCapacity = 4096;  // limits::channel_capacity_default
constexpr size_t kBatchMax = 64;

// Consumes `total` values, checking they come in sequence (cheap, and keeps the loads live).
void consume(ringmail::SpscRing<uint64_t>& ring, uint64_t total, size_t batch,
             std::atomic<bool>& ok) {
    std::array<uint64_t, kBatchMax> got;
    uint64_t expect = 0;
    bool in_order = true;
    while (expect < total) {
        const size_t n = ring.pop_batch(got.data(), batch);
        for (size_t i = 0; i < n; ++i)
            in_order &= got[i] == expect + i;
        expect += n;
    }
    ok = in_order;
}

void produce_batch(ringmail::SpscRing<uint64_t>& ring, uint64_t first, size_t batch) {
    std::array<uint64_t, kBatchMax> values;
    for (size_t i = 0; i < batch; ++i)
        values[i] = first + i;
    size_t done = 0;
    while (done < batch)
        done += ring.try_push_batch(values.data() + done, batch - done);
}

void BM_SpscRingTwoThreads(benchmark::State& state) {
    const size_t batch = static_cast<size_t>(state.range(0));
    const uint64_t total = static_cast<uint64_t>(state.max_iterations) * batch;
    ringmail::SpscRing<uint64_t> ring(kCapacity);
    std::atomic<bool> ok{false};
    std::thread consumer([&] { consume(ring, total, batch, ok); });
    uint64_t next = 0;
    for (auto _ : state) {
        produce_batch(ring, next, batch);
        next += batch;
    }
    consumer.join();  // inside the timed region's tail: the last values are counted delivered
    if (!ok) state.SkipWithError("values arrived out of order");
    state.SetItemsProcessed(static_cast<int64_t>(next));
}
BENCHMARK(BM_SpscRingTwoThreads)->Arg(1)->Arg(64)->UseRealTime();

}  // namespace
