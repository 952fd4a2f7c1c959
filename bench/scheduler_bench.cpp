// scheduler_bench.cpp — the scheduler's hot operations (Google Benchmark): a message entering
// the table and being handed out, its outcome recorded, and a destination queue's push/next.
// A program, not a timed test: run build/bench/scheduler_bench.
#include <benchmark/benchmark.h>

#include <vector>

#include "core/queue/scheduler.hpp"

namespace {

using namespace ringmail::sched;

// add → take_due → due_rcpts → outcome(delivered) → remove, for one-recipient messages.
void BM_MessageLifecycle(benchmark::State& state) {
    RetryPolicy p;
    MessageTable t(p);
    std::vector<MessageRef> due;
    std::vector<uint32_t> rcpts;
    due.reserve(1024);
    rcpts.reserve(16);
    uint64_t now = 1, id = 1;
    const int batch = static_cast<int>(state.range(0));
    for (auto _ : state) {
        for (int i = 0; i < batch; i++)
            (void)t.add(id++, now, 1, now);
        due.clear();
        t.take_due(now, due);
        for (MessageRef m : due) {
            rcpts.clear();
            t.due_rcpts(m, now, rcpts);
            for (uint32_t r : rcpts)
                (void)t.outcome(m, r, Outcome::delivered, now, 0);
            t.remove(m);
        }
        now++;
    }
    state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_MessageLifecycle)->Arg(1)->Arg(64)->Arg(1024);

// Deferrals: every attempt fails and is rescheduled (the retry heap's work).
void BM_DeferAndRetry(benchmark::State& state) {
    RetryPolicy p;
    p.first_ms = 1;
    p.max_ms = 1;
    p.jitter_percent = 0;
    MessageTable t(p);
    const int n = static_cast<int>(state.range(0));
    for (int i = 0; i < n; i++)
        (void)t.add(static_cast<uint64_t>(i + 1), 0, 1, 0);
    std::vector<MessageRef> due;
    std::vector<uint32_t> rcpts;
    uint64_t now = 0;
    for (auto _ : state) {
        due.clear();
        t.take_due(now, due);
        for (MessageRef m : due) {
            rcpts.clear();
            t.due_rcpts(m, now, rcpts);
            for (uint32_t r : rcpts)
                (void)t.outcome(m, r, Outcome::deferred, now, 0);
        }
        now++;
    }
    state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_DeferAndRetry)->Arg(1024)->Arg(65536);

// A destination queue: jobs pushed and handed to connections.
void BM_DestinationQueue(benchmark::State& state) {
    DestinationLimits l;
    l.messages_per_connection = 1u << 30;
    DestinationQueue q(l);
    Job j{1, 0, {0, 1}, 0, 1};
    Job out;
    uint32_t sent = 0;
    for (auto _ : state) {
        for (int i = 0; i < 64; i++)
            q.push(j);
        while (q.next(sent, &out))
            sent++;
        benchmark::DoNotOptimize(out);
    }
    state.SetItemsProcessed(state.iterations() * 64);
}
BENCHMARK(BM_DestinationQueue);

}  // namespace
