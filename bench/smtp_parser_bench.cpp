// smtp_parser_bench.cpp — throughput of the server session's input path (Google Benchmark).
//
// Feeds pipelined MAIL/RCPT/DATA, message text in receive-buffer-sized pieces, and BDAT
// transactions into one ServerSession with a sink that does nothing, and reports MB/s of input
// consumed. A program to run by hand, never a timed test. Only net/ headers: the numbers are
// the protocol core's alone.
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>

#include "net/smtp/relay_policy.hpp"
#include "net/smtp/smtp_server.hpp"

namespace {

using namespace ringmail::smtp;

class NullSink final : public MessageSink {
  public:
    Start message_begin(const Envelope&) override { return {++id_, 1700000000}; }
    bool message_body(std::string_view chunk) override {
        benchmark::DoNotOptimize(chunk.data());
        bytes_ += chunk.size();
        return true;
    }
    void message_end() override {}
    void message_abort() override {}
    uint64_t bytes() const { return bytes_; }

  private:
    uint64_t id_ = 0;
    uint64_t bytes_ = 0;
};

struct Bench {
    Bench() : policy({}, {"relay.test"}) {
        settings.hostname = "mx.bench";
        settings.relay = &policy;
        ClientInfo client;
        client.addr_text = "192.0.2.1";
        client.addr = *IpAddress::parse(client.addr_text);
        session.start(client);
        drain();
        feed("EHLO client.bench\r\n");
    }
    // Plays the driver: feed, drain, commit at once, re-feed the rest.
    void feed(std::string_view in) {
        while (!in.empty()) {
            const size_t n = session.feed(in);
            in.remove_prefix(n);
            drain();
            if (session.waiting_commit()) {
                session.commit_done(CommitResult::ok);
                drain();
            }
            if (session.wants_close()) std::abort();
        }
    }
    void drain() { session.output_sent(session.output().size()); }

    RelayPolicy policy;
    ServerSettings settings;
    NullSink sink;
    ServerSession session{settings, sink};
};

// 78-octet text lines, every tenth starting with a dot (stuffed).
std::string message_text(size_t bytes) {
    std::string s;
    for (size_t i = 0; s.size() < bytes; ++i) {
        s += (i % 10 == 0) ? ".." : "";
        s += std::string(76 - (i % 10 == 0 ? 2 : 0), static_cast<char>('a' + i % 26));
        s += "\r\n";
    }
    return s;
}

constexpr std::string_view kEnvelope =
    "MAIL FROM:<sender@client.bench> BODY=8BITMIME SIZE=100000\r\n"
    "RCPT TO:<one@relay.test>\r\nRCPT TO:<two@relay.test>\r\nDATA\r\n";

// Many small messages: the command path and per-message overhead dominate.
void BM_PipelinedSmallMessages(benchmark::State& state) {
    Bench b;
    const std::string text = message_text(static_cast<size_t>(state.range(0))) + ".\r\n";
    for (auto _ : state) {
        b.feed(kEnvelope);
        b.feed(text);
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                            static_cast<int64_t>(kEnvelope.size() + text.size()));
}
BENCHMARK(BM_PipelinedSmallMessages)->Arg(1024)->Arg(4096);

// One large body fed in 16 KiB receive buffers: the DATA scanner dominates.
void BM_DataBody(benchmark::State& state) {
    Bench b;
    const std::string text = message_text(1 << 20) + ".\r\n";
    constexpr size_t kRecvBytes = 16384;
    for (auto _ : state) {
        b.feed(kEnvelope);
        for (size_t at = 0; at < text.size(); at += kRecvBytes)
            b.feed(std::string_view(text).substr(at, kRecvBytes));
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                            static_cast<int64_t>(kEnvelope.size() + text.size()));
}
BENCHMARK(BM_DataBody);

// BDAT: commands and chunks pipelined in one buffer.
void BM_BdatPipelined(benchmark::State& state) {
    Bench b;
    const std::string chunk = message_text(4096);
    std::string in = "MAIL FROM:<sender@client.bench>\r\nRCPT TO:<one@relay.test>\r\n";
    for (int i = 0; i < 3; ++i)
        in += "BDAT " + std::to_string(chunk.size()) + "\r\n" + chunk;
    in += "BDAT " + std::to_string(chunk.size()) + " LAST\r\n" + chunk;
    for (auto _ : state)
        b.feed(in);
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                            static_cast<int64_t>(in.size()));
}
BENCHMARK(BM_BdatPipelined);

}  // namespace
