// core_bench_tool_test.cpp — the pure pieces of ringmail-bench: the latency histogram, the
// generated messages and their checksum, the reply reader, and the sink's scripted session.
//
// The I/O drivers (bench/tool_source.cpp, tool_sink.cpp) are covered end to end by
// tests/integration/test_bench_tools.py.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bench/tool_histogram.hpp"
#include "bench/tool_message.hpp"
#include "bench/tool_sink_session.hpp"

namespace ringmail::bench {
namespace {

// --- histogram ---------------------------------------------------------------------------

TEST(BenchHistogram, SmallValuesAreExact) {
    for (uint64_t v = 0; v < 256; v++) {
        EXPECT_EQ(Histogram::index_of(v), v);
        EXPECT_EQ(Histogram::upper_of(Histogram::index_of(v)), v);
    }
}

TEST(BenchHistogram, RelativeErrorBelowOnePercent) {
    uint64_t x = 12345;
    for (int i = 0; i < 100000; i++) {
        x = splitmix64(x);
        uint64_t v = x >> (x % 60);
        uint64_t up = Histogram::upper_of(Histogram::index_of(v));
        ASSERT_GE(up, v);
        ASSERT_LE(double(up - v), double(v) / 128.0 + 1.0) << v;
    }
}

TEST(BenchHistogram, IndexIsMonotonic) {
    size_t last = 0;
    for (uint64_t v = 1; v < (uint64_t{1} << 40); v = v * 3 / 2 + 1) {
        size_t i = Histogram::index_of(v);
        ASSERT_GE(i, last);
        last = i;
    }
}

TEST(BenchHistogram, PercentilesOfUniform) {
    auto h = std::make_unique<Histogram>();
    for (uint64_t v = 1; v <= 10000; v++)
        h->record(v);
    EXPECT_EQ(h->count(), 10000u);
    EXPECT_NEAR(double(h->percentile(50)), 5000.0, 5000.0 / 100);
    EXPECT_NEAR(double(h->percentile(99)), 9900.0, 9900.0 / 100);
    EXPECT_NEAR(double(h->percentile(99.9)), 9990.0, 9990.0 / 100);
    EXPECT_EQ(h->percentile(100), 10000u);
    EXPECT_EQ(h->max(), 10000u);
    EXPECT_EQ(h->min(), 1u);
    EXPECT_DOUBLE_EQ(h->mean(), 5000.5);
}

TEST(BenchHistogram, MergeAddsAndEmptyIsZero) {
    auto a = std::make_unique<Histogram>(), b = std::make_unique<Histogram>();
    EXPECT_EQ(a->percentile(99), 0u);
    a->record(10);
    b->record(1000000);
    a->merge(*b);
    EXPECT_EQ(a->count(), 2u);
    EXPECT_EQ(a->max(), 1000000u);
    EXPECT_EQ(a->percentile(50), 10u);
    EXPECT_GE(a->percentile(100), 1000000u - 1000000u / 128);
}

// --- sizes -------------------------------------------------------------------------------

TEST(BenchSizes, ParseSize) {
    uint64_t v = 0;
    EXPECT_TRUE(parse_size("1024", &v));
    EXPECT_EQ(v, 1024u);
    EXPECT_TRUE(parse_size("10k", &v));
    EXPECT_EQ(v, 10240u);
    EXPECT_TRUE(parse_size("2M", &v));
    EXPECT_EQ(v, 2u << 20);
    EXPECT_FALSE(parse_size("0", &v));
    EXPECT_FALSE(parse_size("k", &v));
    EXPECT_FALSE(parse_size("10kb", &v));
}

TEST(BenchSizes, DistributionFollowsWeightsAndRepeats) {
    SizeDist d;
    std::string err;
    ASSERT_TRUE(d.parse("1k:70,10k:25,100k:5", &err)) << err;
    EXPECT_EQ(d.max(), 100u * 1024);
    uint64_t n1 = 0, n10 = 0, n100 = 0;
    for (uint64_t s = 0; s < 100000; s++) {
        uint64_t b = d.pick(s);
        EXPECT_EQ(b, d.pick(s));
        n1 += b == 1024;
        n10 += b == 10240;
        n100 += b == 102400;
    }
    EXPECT_EQ(n1 + n10 + n100, 100000u);
    EXPECT_NEAR(double(n1), 70000.0, 1500.0);
    EXPECT_NEAR(double(n10), 25000.0, 1500.0);
    EXPECT_NEAR(double(n100), 5000.0, 800.0);
    EXPECT_FALSE(d.parse("1k", &err));
    EXPECT_FALSE(d.parse("1k:0", &err));
    EXPECT_FALSE(d.parse("1k:7,x:3", &err));
}

// --- messages and their checksum ---------------------------------------------------------

std::string make_message(uint64_t seq, uint64_t size) {
    MessageFactory f(size);
    std::string out;
    f.append(out, seq, size, "from@a.test", "to@b.test");
    return out;
}

BodyVerifier::Result verify(std::string_view content, size_t piece = 0) {
    BodyVerifier v;
    v.begin();
    if (piece == 0) {
        v.feed(content);
    } else {
        for (size_t i = 0; i < content.size(); i += piece)
            v.feed(content.substr(i, piece));
    }
    return v.finish();
}

TEST(BenchMessage, ExactSizeCrlfOnlyNoDotLines) {
    for (uint64_t size : {300u, 1024u, 1025u, 4000u, 10240u, 100000u}) {
        for (uint64_t seq : {0u, 1u, 63u, 64u, 999999u}) {
            std::string m = make_message(seq, size);
            ASSERT_EQ(m.size(), size) << seq;
            ASSERT_EQ(m.substr(m.size() - 2), "\r\n");
            for (size_t i = 0; i < m.size(); i++) {
                if (m[i] == '\r') {
                    ASSERT_EQ(m[i + 1], '\n') << i;
                }
                if (m[i] == '\n') {
                    ASSERT_EQ(m[i - 1], '\r') << i;
                }
                if (i > 0 && m[i - 1] == '\n') {
                    ASSERT_NE(m[i], '.') << i;
                }
            }
            ASSERT_EQ(verify(m), BodyVerifier::Result::ok);
        }
    }
}

TEST(BenchMessage, SmallSizeStillValid) {
    std::string m = make_message(7, 10);
    EXPECT_GT(m.size(), 10u);
    EXPECT_EQ(verify(m), BodyVerifier::Result::ok);
}

TEST(BenchMessage, VerifierFindsSeqAcrossAnySplit) {
    std::string m =
        "Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n" + make_message(4242, 2048);
    for (size_t piece : {1u, 2u, 3u, 7u, 64u, 1000u}) {
        BodyVerifier v;
        v.begin();
        for (size_t i = 0; i < m.size(); i += piece)
            v.feed(std::string_view(m).substr(i, piece));
        ASSERT_EQ(v.finish(), BodyVerifier::Result::ok) << piece;
        EXPECT_EQ(v.seq(), 4242u);
    }
}

TEST(BenchMessage, EveryFlippedByteIsCorrupt) {
    std::string m = make_message(5, 1024);
    size_t header_end = m.find("\r\n") + 2;
    for (size_t i = 0; i < m.size(); i++) {
        std::string bad = m;
        bad[i] = static_cast<char>(bad[i] ^ 0x01);
        BodyVerifier::Result r = verify(bad);
        if (i < header_end) {
            // Our own header damaged: unparsable, a different seq or sum, or gone.
            EXPECT_NE(r, BodyVerifier::Result::ok) << i;
            if (i >= kBenchHeader.size()) {
                EXPECT_EQ(r, BodyVerifier::Result::corrupt) << i;
            }
        } else {
            EXPECT_EQ(r, BodyVerifier::Result::corrupt) << i;
        }
    }
}

TEST(BenchMessage, MissingHeader) {
    EXPECT_EQ(verify("Subject: x\r\n\r\nbody\r\n"), BodyVerifier::Result::missing);
    EXPECT_EQ(verify(""), BodyVerifier::Result::missing);
    // A truncated body is corrupt, not missing.
    std::string m = make_message(1, 1024);
    EXPECT_EQ(verify(std::string_view(m).substr(0, 900)), BodyVerifier::Result::corrupt);
}

// --- reply reader ------------------------------------------------------------------------

TEST(BenchReplyReader, MultilineAcrossFeeds) {
    std::string wire = "220 hi\r\n250-a.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 go\r\n";
    for (size_t piece = 1; piece <= wire.size(); piece++) {
        ReplyReader r;
        std::vector<std::pair<int, bool>> got;
        std::vector<std::string> texts;
        for (size_t i = 0; i < wire.size(); i += piece) {
            ASSERT_TRUE(r.feed(std::string_view(wire).substr(i, piece), [&](const auto& l) {
                got.push_back({l.code, l.last});
                texts.emplace_back(l.text);
            }));
        }
        ASSERT_EQ(got.size(), 5u) << piece;
        EXPECT_EQ(got[0], std::make_pair(220, true));
        EXPECT_EQ(got[1], std::make_pair(250, false));
        EXPECT_EQ(texts[2], "PIPELINING");
        EXPECT_EQ(got[3], std::make_pair(250, true));
        EXPECT_EQ(got[4], std::make_pair(354, true));
    }
}

TEST(BenchReplyReader, Malformed) {
    auto bad = [](std::string_view s) {
        ReplyReader r;
        return !r.feed(s, [](const auto&) {});
    };
    EXPECT_TRUE(bad("25 x\r\n"));
    EXPECT_TRUE(bad("abc ok\r\n"));
    EXPECT_TRUE(bad("250 no cr\n"));
    EXPECT_TRUE(bad("250xok\r\n"));
    EXPECT_TRUE(bad("199 too low\r\n"));
    EXPECT_TRUE(bad(std::string(2000, 'a')));
    EXPECT_FALSE(bad("250\r\n"));
}

// --- the sink's session ------------------------------------------------------------------

struct SinkHarness {
    SinkOptions opt;
    SinkCounters counters;
    SeqSet seen{1024};
    std::unique_ptr<SinkSession> s;
    uint64_t now = 1000;
    std::string wire;  // everything sent to the client

    explicit SinkHarness(SinkOptions o = {}) : opt(std::move(o)) {
        s = std::make_unique<SinkSession>(opt, counters, &seen);
    }
    void start(bool refuse = false) {
        s->start(refuse);
        drain();
    }
    // Feeds like the driver: what is not consumed is fed again after the output drains.
    void feed(std::string_view in, size_t piece = 0) {
        if (piece == 0) piece = in.size();
        for (size_t i = 0; i < in.size(); i += piece) {
            std::string_view p = in.substr(i, piece);
            for (int guard = 0; !p.empty() && guard < 100000; guard++) {
                size_t n = s->feed(p, now);
                p.remove_prefix(n);
                drain();
                if (s->wants_close()) return;
            }
            ASSERT_TRUE(p.empty());
        }
    }
    void drain() {
        std::string_view out = s->output();
        wire.append(out);
        s->output_sent(out.size());
    }
    std::string take() {
        drain();
        std::string w;
        w.swap(wire);
        return w;
    }
};

std::string transaction(uint64_t seq, std::string_view rcpt = "r@b.test") {
    MessageFactory f(1024);
    std::string body;
    f.append(body, seq, 1024, "f@a.test", rcpt);
    return "MAIL FROM:<f@a.test>\r\nRCPT TO:<" + std::string(rcpt) + ">\r\nDATA\r\n" + body +
           ".\r\n";
}

TEST(BenchSinkSession, GreetingAndEhloKeywords) {
    SinkHarness h;
    h.start();
    EXPECT_EQ(h.take().substr(0, 4), "220 ");
    h.feed("EHLO c.test\r\n");
    std::string r = h.take();
    EXPECT_NE(r.find("250-PIPELINING\r\n"), std::string::npos) << r;
    EXPECT_NE(r.find("SIZE"), std::string::npos);
    EXPECT_NE(r.find("250 CHUNKING\r\n"), std::string::npos);

    SinkOptions o;
    o.pipelining = o.chunking = o.size = false;
    SinkHarness w(o);
    w.start();
    w.feed("EHLO c.test\r\n");
    r = w.take();
    EXPECT_EQ(r.find("PIPELINING"), std::string::npos) << r;
    EXPECT_EQ(r.find("CHUNKING"), std::string::npos);
    EXPECT_EQ(r.find("SIZE"), std::string::npos);
    EXPECT_NE(r.find("250 ENHANCEDSTATUSCODES\r\n"), std::string::npos);
}

TEST(BenchSinkSession, PipelinedTransactionsAnyFeedSplit) {
    std::string in = "EHLO c.test\r\n" + transaction(1) + transaction(2) + "QUIT\r\n";
    for (size_t piece : {0u, 1u, 2u, 5u, 13u, 100u}) {
        SinkOptions o;
        o.verify = true;
        SinkHarness h(o);
        h.start();
        h.take();
        h.feed(in, piece);
        std::string r = h.take();
        EXPECT_TRUE(h.s->wants_close());
        EXPECT_EQ(h.counters.messages.get(), 2u) << piece;
        EXPECT_EQ(h.counters.verified.get(), 2u) << piece;
        EXPECT_EQ(h.counters.corrupt.get(), 0u);
        EXPECT_EQ(h.counters.bytes.get(), 2048u);
        size_t p354 = r.find("354 "), p250 = r.find("250 2.0.0 Ok: queued");
        EXPECT_LT(p354, p250);
        EXPECT_EQ(r.substr(r.size() - 15), "221 2.0.0 Bye\r\n");
    }
}

TEST(BenchSinkSession, DotUnstuffingAndTerminator) {
    SinkOptions o;
    o.verify = true;
    SinkHarness h(o);
    h.start();
    // "..x" is the line ".x"; ".\r" followed by more text is not the end.
    h.feed("HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n..x\r\n.\rz\r\n.\r\n", 1);
    EXPECT_EQ(h.counters.messages.get(), 1u);
    EXPECT_EQ(h.counters.bytes.get(), std::string(".x\r\n\rz\r\n").size());
    EXPECT_EQ(h.counters.missing_header.get(), 1u);
}

TEST(BenchSinkSession, DuplicatesAndCorruption) {
    SinkOptions o;
    o.verify = true;
    SinkHarness h(o);
    h.start();
    std::string bad = transaction(9);
    bad[bad.size() - 40] ^= 1;
    h.feed("EHLO c\r\n" + transaction(3) + transaction(3) + bad);
    EXPECT_EQ(h.counters.messages.get(), 3u);
    EXPECT_EQ(h.counters.verified.get(), 2u);
    EXPECT_EQ(h.counters.duplicates.get(), 1u);
    EXPECT_EQ(h.counters.corrupt.get(), 1u);
}

TEST(BenchSinkSession, ScriptedFailuresAreSeededAndCounted) {
    SinkOptions o;
    o.rcpt_temp_fail = 0.2;
    o.rcpt_perm_fail = 0.2;
    o.data_temp_fail = 0.2;
    o.data_perm_fail = 0.1;
    o.seed = 42;
    std::string in = "EHLO c\r\n";
    for (uint64_t i = 0; i < 500; i++)
        in += transaction(i, "r" + std::to_string(i) + "@d.test") + "RSET\r\n";
    SinkHarness a(o), b(o);
    a.start();
    b.start();
    a.feed(in);
    b.feed(in, 7);
    std::string ra = a.take(), rb = b.take();
    EXPECT_EQ(ra, rb);  // the same decisions whatever the segmentation
    auto count = [](const std::string& r, std::string_view code) {
        size_t n = 0;
        for (size_t p = r.find(code); p != std::string::npos; p = r.find(code, p + 1))
            n++;
        return n;
    };
    EXPECT_EQ(count(ra, "\r\n450 4.2.1"), a.counters.rcpt_temp_fail.get());
    EXPECT_EQ(count(ra, "\r\n550 5.1.1"), a.counters.rcpt_perm_fail.get());
    EXPECT_EQ(count(ra, "\r\n451 4.3.0"), a.counters.data_temp_fail.get());
    EXPECT_EQ(count(ra, "\r\n554 5.6.0"), a.counters.data_perm_fail.get());
    EXPECT_NEAR(double(a.counters.rcpt_temp_fail.get()), 100.0, 40.0);
    EXPECT_NEAR(double(a.counters.rcpt_perm_fail.get()), 100.0, 40.0);
    EXPECT_EQ(a.counters.no_valid_rcpt.get(),
              a.counters.rcpt_temp_fail.get() + a.counters.rcpt_perm_fail.get());
    uint64_t msgs = 500 - a.counters.no_valid_rcpt.get();
    EXPECT_EQ(a.counters.messages.get() + a.counters.data_temp_fail.get() +
                  a.counters.data_perm_fail.get(),
              msgs);
    o.seed = 43;
    SinkHarness c(o);
    c.start();
    c.feed(in);
    EXPECT_NE(c.take(), ra);
}

TEST(BenchSinkSession, DataDelayHoldsLaterReplies) {
    SinkOptions o;
    o.data_delay_ms = 50;
    SinkHarness h(o);
    h.start();
    h.feed("EHLO c\r\n");
    h.take();
    h.feed(transaction(1) + "NOOP\r\n");
    std::string r = h.take();
    EXPECT_NE(r.find("354 "), std::string::npos);
    EXPECT_EQ(r.find("250 2.0.0 Ok: queued"), std::string::npos);  // held
    EXPECT_EQ(h.s->held_until_ms(), h.now + 50);
    h.s->release_held(h.now + 49);
    EXPECT_EQ(h.take(), "");
    h.s->release_held(h.now + 50);
    EXPECT_EQ(h.take(), "250 2.0.0 Ok: queued\r\n250 2.0.0 Ok\r\n");
    EXPECT_EQ(h.s->held_until_ms(), 0u);
}

TEST(BenchSinkSession, DropClosesWithoutReply) {
    SinkOptions o;
    o.drop_fraction = 1.0;
    SinkHarness h(o);
    h.start();
    h.feed("EHLO c\r\n");
    h.take();
    h.feed(transaction(1));
    EXPECT_TRUE(h.s->abort_now());
    EXPECT_EQ(h.counters.dropped.get(), 1u);
    EXPECT_EQ(h.counters.messages.get(), 0u);
    EXPECT_EQ(h.take().find("Ok: queued"), std::string::npos);
}

TEST(BenchSinkSession, RefusedAtGreeting) {
    SinkHarness h;
    h.start(true);
    EXPECT_EQ(h.take().substr(0, 4), "421 ");
    EXPECT_TRUE(h.s->wants_close());
    EXPECT_EQ(h.counters.refused_sessions.get(), 1u);
    EXPECT_EQ(h.counters.sessions.get(), 0u);
}

TEST(BenchSinkSession, BdatChunks) {
    SinkOptions o;
    o.verify = true;
    SinkHarness h(o);
    h.start();
    MessageFactory f(1024);
    std::string body;
    f.append(body, 77, 1024, "f@a.test", "r@b.test");
    std::string in = "EHLO c\r\nMAIL FROM:<f@a.test>\r\nRCPT TO:<r@b.test>\r\nBDAT 100\r\n" +
                     body.substr(0, 100) + "BDAT " + std::to_string(body.size() - 100) +
                     " LAST\r\n" + body.substr(100);
    h.feed(in, 3);
    std::string r = h.take();
    EXPECT_NE(r.find("250 2.0.0 Chunk accepted"), std::string::npos);
    EXPECT_EQ(h.counters.messages.get(), 1u);
    EXPECT_EQ(h.counters.verified.get(), 1u);
    EXPECT_EQ(h.counters.bytes.get(), 1024u);
}

TEST(BenchSinkSession, FullOutputStopsConsumingUntilSent) {
    SinkHarness h;
    h.start();
    h.take();
    std::string in;
    for (int i = 0; i < 5000; i++)
        in += "NOOP\r\n";  // 5000 replies: more than the buffer
    size_t n = h.s->feed(in, h.now);
    EXPECT_LT(n, in.size());
    EXPECT_GT(n, 0u);
    h.feed(std::string_view(in).substr(n));
    std::string r = h.take();
    size_t replies = 0;
    for (size_t p = r.find("250 "); p != std::string::npos; p = r.find("250 ", p + 1))
        replies++;
    EXPECT_EQ(replies, 5000u);
}

TEST(BenchSeqSet, BitmapAndOverflow) {
    SeqSet s(100);
    EXPECT_TRUE(s.insert(5));
    EXPECT_FALSE(s.insert(5));
    EXPECT_TRUE(s.insert(1000000));
    EXPECT_FALSE(s.insert(1000000));
    EXPECT_TRUE(s.insert(127));  // rounded up to whole words
}

TEST(BenchSeqSet, MembersAscendingBitmapThenOverflow) {
    SeqSet s(128);
    for (uint64_t seq : {900000u, 5u, 127u, 64u, 0u, 200u, 5u})
        (void)s.insert(seq);
    EXPECT_EQ(s.members(), (std::vector<uint64_t>{0, 5, 64, 127, 200, 900000}));
}

}  // namespace
}  // namespace ringmail::bench
