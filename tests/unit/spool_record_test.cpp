// spool_record_test.cpp — the record codec, the chunk pool and the message builder.
//
// Pins: what seal() produces decodes to exactly the fields given (assertions in pairs); the
// builder spans chunks for envelope and body alike; the pool cap is a hard limit and leaks
// nothing; decoding rejects every truncation and every single damaged byte.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/base/limits.hpp"
#include "spool/record.hpp"

namespace ringmail::spool {
namespace {

constexpr uint64_t test_salt = 0x0123456789abcdefULL;
constexpr size_t chunk = limits::staging_chunk_bytes;

// An envelope that owns its strings (EnvelopeFields only views them).
struct Envelope {
    std::string helo = "client.example.org";
    std::string client_addr = "192.0.2.7";
    std::string protocol = "ESMTPS";
    std::string mail_from = "alice@example.org";
    std::string mail_params = "SIZE=1234 BODY=8BITMIME";
    std::vector<std::string> addresses;
    std::vector<std::string> params;
    std::vector<RcptField> rcpts;

    explicit Envelope(size_t rcpt_count, size_t address_bytes = 20) {
        for (size_t i = 0; i < rcpt_count; ++i) {
            std::string a = "rcpt" + std::to_string(i) + "@";
            a.resize(std::max(address_bytes, a.size() + 1), 'd');
            addresses.push_back(a);
            params.push_back(i % 2 ? "NOTIFY=NEVER" : "");
        }
        for (size_t i = 0; i < rcpt_count; ++i)
            rcpts.push_back({addresses[i], params[i]});
    }
    [[nodiscard]] EnvelopeFields fields() const {
        return {helo, client_addr, protocol, mail_from, mail_params, rcpts};
    }
};

std::string make_body(size_t n) {
    std::string b(n, '\0');
    for (size_t i = 0; i < n; ++i)
        b[i] = "abcdefghij\r\n"[i % 12];
    return b;
}

std::string flatten(const MessageBuilder& b) {
    std::vector<iovec> iov;
    b.iovecs(iov);
    std::string out;
    for (const iovec& v : iov)
        out.append(static_cast<const char*>(v.iov_base), v.iov_len);
    return out;
}

// Stage a whole message, appending the body in pieces of `piece` bytes.
std::string stage(ChunkPool& pool, uint64_t id, const Envelope& env, const std::string& body,
                  size_t piece = 1000, uint64_t salt = test_salt) {
    MessageBuilder b;
    EXPECT_TRUE(b.begin(pool, id, 1700000000123456, env.fields()));
    for (size_t at = 0; at < body.size(); at += piece) {
        EXPECT_TRUE(b.append(std::string_view(body).substr(at, piece)));
    }
    EXPECT_TRUE(b.seal(salt));
    EXPECT_EQ(b.body_bytes(), body.size());
    std::string rec = flatten(b);
    EXPECT_EQ(rec.size(), b.record_bytes());
    return rec;
}

void expect_decodes_to(const std::string& rec, uint64_t id, const Envelope& env,
                       const std::string& body) {
    size_t n = 0;
    const auto raw = decode_record(rec, test_salt, &n);
    ASSERT_TRUE(raw.has_value());
    EXPECT_EQ(n, rec.size());
    EXPECT_EQ(raw->type, RecordType::message);
    const auto m = decode_message(raw->payload);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->id, id);
    EXPECT_EQ(m->arrival_unix_us, 1700000000123456);
    EXPECT_EQ(m->helo, env.helo);
    EXPECT_EQ(m->client_addr, env.client_addr);
    EXPECT_EQ(m->protocol, env.protocol);
    EXPECT_EQ(m->mail_from, env.mail_from);
    EXPECT_EQ(m->mail_params, env.mail_params);
    ASSERT_EQ(m->rcpts.size(), env.rcpts.size());
    for (size_t i = 0; i < env.rcpts.size(); ++i) {
        ASSERT_EQ(m->rcpts[i].address, env.addresses[i]);
        ASSERT_EQ(m->rcpts[i].params, env.params[i]);
    }
    EXPECT_TRUE(m->body == body) << "body differs, sizes " << m->body.size() << " " << body.size();
}

TEST(SpoolRecord, RoundTripEveryRecipientCountAndBodySize) {
    ChunkPool pool(chunk, 1ull << 26);
    const size_t bodies[] = {0, 1, chunk, chunk - 1, chunk + 1, 3 * chunk + chunk / 2};
    for (size_t rcpts : {0u, 1u, 1000u}) {
        const Envelope env(rcpts, rcpts == 1000 ? 256 : 20);
        for (size_t body_bytes : bodies) {
            SCOPED_TRACE(testing::Message() << rcpts << " rcpts, body " << body_bytes);
            const std::string body = make_body(body_bytes);
            const std::string rec = stage(pool, 42 + body_bytes, env, body);
            expect_decodes_to(rec, 42 + body_bytes, env, body);
            EXPECT_EQ(pool.bytes_in_use(), 0u);
        }
    }
}

// The body arrives in receive-buffer pieces of any size; the split must not matter.
TEST(SpoolRecord, AppendPieceSizeDoesNotChangeTheRecord) {
    ChunkPool pool(chunk, 1ull << 24);
    const Envelope env(3);
    const std::string body = make_body(2 * chunk + 77);
    const std::string one = stage(pool, 7, env, body, body.size());
    for (size_t piece : {1u, 13u, 4096u, 16384u, 16385u}) {
        EXPECT_EQ(stage(pool, 7, env, body, piece), one) << "piece " << piece;
    }
}

// 1000 recipients of 256 bytes: the envelope alone spans many chunks.
TEST(SpoolRecord, EnvelopeLargerThanOneChunkSpansChunks) {
    ChunkPool pool(chunk, 1ull << 24);
    const Envelope env(1000, 256);
    MessageBuilder b;
    ASSERT_TRUE(b.begin(pool, 1, 1700000000123456, env.fields()));
    EXPECT_GT(pool.bytes_in_use(), 10 * chunk);
    ASSERT_TRUE(b.seal(test_salt));
    std::vector<iovec> iov;
    b.iovecs(iov);
    ASSERT_EQ(iov.size(), (b.record_bytes() + chunk - 1) / chunk);
    for (size_t i = 0; i + 1 < iov.size(); ++i)
        EXPECT_EQ(iov[i].iov_len, chunk);
    expect_decodes_to(flatten(b), 1, env, "");
}

TEST(SpoolRecord, WrongSaltDoesNotVerify) {
    ChunkPool pool(chunk, 1ull << 20);
    const std::string rec = stage(pool, 9, Envelope(1), make_body(100));
    EXPECT_TRUE(decode_record(rec, test_salt, nullptr).has_value());
    EXPECT_FALSE(decode_record(rec, test_salt ^ 1, nullptr).has_value());
    EXPECT_FALSE(decode_record(rec, 0, nullptr).has_value());
}

TEST(SpoolRecord, SealOnlyOnceAndNoAppendAfterSeal) {
    ChunkPool pool(chunk, 1ull << 20);
    MessageBuilder b;
    ASSERT_TRUE(b.begin(pool, 5, 0, Envelope(1).fields()));
    ASSERT_TRUE(b.append("hello\r\n"));
    ASSERT_TRUE(b.seal(test_salt));
    const std::string first = flatten(b);
    EXPECT_FALSE(b.seal(test_salt ^ 0xff));
    EXPECT_FALSE(b.append("more"));
    EXPECT_EQ(flatten(b), first);
    EXPECT_TRUE(decode_record(first, test_salt, nullptr).has_value());
}

TEST(SpoolRecord, NoAppendOrSealBeforeBegin) {
    MessageBuilder b;
    EXPECT_FALSE(b.append("x"));
    EXPECT_FALSE(b.seal(test_salt));
}

// A length over 65535 cannot be stored in a str16: truncating it would shift every later field.
TEST(SpoolRecord, BeginRefusesFieldsOver65535Bytes) {
    ChunkPool pool(chunk, 1ull << 24);
    Envelope env(2);
    env.mail_params.assign(65536, 'p');
    MessageBuilder b;
    EXPECT_FALSE(b.begin(pool, 1, 0, env.fields()));
    EXPECT_EQ(pool.bytes_in_use(), 0u);

    Envelope env2(2);
    env2.addresses[1].assign(65536, 'a');
    env2.rcpts[1].address = env2.addresses[1];
    EXPECT_FALSE(b.begin(pool, 1, 0, env2.fields()));
    EXPECT_EQ(pool.bytes_in_use(), 0u);

    Envelope env3(1);
    env3.mail_params.assign(65535, 'p');  // the largest that fits
    MessageBuilder ok;
    ASSERT_TRUE(ok.begin(pool, 1, 1700000000123456, env3.fields()));
    ASSERT_TRUE(ok.seal(test_salt));
    expect_decodes_to(flatten(ok), 1, env3, "");
}

TEST(SpoolRecord, PoolCapStopsBeginAndAppendAndLeaksNothing) {
    ChunkPool pool(chunk, 4 * chunk);
    MessageBuilder b;
    ASSERT_TRUE(b.begin(pool, 1, 0, Envelope(1).fields()));
    const std::string piece = make_body(1000);
    size_t appended = 0;
    while (b.append(piece)) {
        appended += piece.size();
        ASSERT_LE(appended, 4 * chunk);
    }
    EXPECT_EQ(pool.bytes_in_use(), 4 * chunk);
    EXPECT_EQ(pool.get(), nullptr);
    MessageBuilder other;
    EXPECT_FALSE(other.begin(pool, 2, 0, Envelope(1).fields()));
    b.reset();
    EXPECT_EQ(pool.bytes_in_use(), 0u);
    // Everything is reusable after the reset.
    ASSERT_TRUE(other.begin(pool, 2, 0, Envelope(1).fields()));
    EXPECT_TRUE(other.append(make_body(3 * chunk)));
    other.reset();
    EXPECT_EQ(pool.bytes_in_use(), 0u);
}

// A refused append leaves the builder as it was: the session can answer 552 and the text staged
// so far is still a consistent record.
TEST(SpoolRecord, RefusedAppendIsAllOrNothing) {
    ChunkPool pool(chunk, 2 * chunk);
    const Envelope env(1);
    MessageBuilder b;
    ASSERT_TRUE(b.begin(pool, 3, 1700000000123456, env.fields()));
    const uint64_t held = pool.bytes_in_use();
    EXPECT_FALSE(b.append(make_body(3 * chunk)));
    EXPECT_EQ(pool.bytes_in_use(), held);
    EXPECT_EQ(b.body_bytes(), 0u);
    ASSERT_TRUE(b.append("short\r\n"));
    ASSERT_TRUE(b.seal(test_salt));
    expect_decodes_to(flatten(b), 3, env, "short\r\n");
}

// The committer seals a whole batch at once: seal() must not need memory the pool lacks.
TEST(SpoolRecord, SealSucceedsWithThePoolExhausted) {
    ChunkPool pool(chunk, 2 * chunk);
    const Envelope env(1);
    MessageBuilder b;
    ASSERT_TRUE(b.begin(pool, 4, 1700000000123456, env.fields()));
    std::string body;
    while (b.append("z"))
        body += 'z';  // fill to the last byte the pool allows
    EXPECT_EQ(pool.get(), nullptr);
    ASSERT_TRUE(b.seal(test_salt));
    EXPECT_EQ(b.record_bytes(), 2 * chunk);
    expect_decodes_to(flatten(b), 4, env, body);
}

TEST(SpoolRecord, BeginRefusedWhenEnvelopeExceedsPoolHoldsNothing) {
    ChunkPool pool(chunk, 2 * chunk);
    MessageBuilder b;
    EXPECT_FALSE(b.begin(pool, 1, 0, Envelope(1000, 256).fields()));
    EXPECT_EQ(pool.bytes_in_use(), 0u);
}

// Steady state: chunks come back to the free list and are handed out again.
TEST(SpoolRecord, ChunksAreRecycled) {
    ChunkPool pool(chunk, 2 * chunk);
    const Envelope env(2);
    const std::string body = make_body(chunk);
    for (int i = 0; i < 1000; ++i) {
        MessageBuilder b;
        ASSERT_TRUE(b.begin(pool, i, 0, env.fields()));
        ASSERT_TRUE(b.append(body));
        ASSERT_TRUE(b.seal(test_salt));
    }
    EXPECT_EQ(pool.bytes_in_use(), 0u);
    char* c = pool.get();
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(c) % 4096, 0u);
    pool.put(c);
}

TEST(SpoolRecord, DecodeRejectsEveryTruncation) {
    ChunkPool pool(chunk, 1ull << 20);
    const Envelope env(2);
    const std::string rec = stage(pool, 11, env, make_body(300));
    for (size_t n = 0; n < rec.size(); ++n) {
        ASSERT_FALSE(decode_record(std::string_view(rec).substr(0, n), test_salt, nullptr))
            << "prefix " << n;
    }
    const auto raw = decode_record(rec, test_salt, nullptr);
    ASSERT_TRUE(raw.has_value());
    for (size_t n = 0; n < raw->payload.size(); ++n) {
        ASSERT_FALSE(decode_message(raw->payload.substr(0, n))) << "payload prefix " << n;
    }
}

TEST(SpoolRecord, DecodeRejectsEveryFlippedByte) {
    ChunkPool pool(chunk, 1ull << 20);
    const std::string rec = stage(pool, 12, Envelope(2), make_body(300));
    for (size_t at = 0; at < rec.size(); ++at) {
        for (unsigned char mask : {0x01, 0x80, 0xff}) {
            std::string bad = rec;
            bad[at] = static_cast<char>(bad[at] ^ mask);
            ASSERT_FALSE(decode_record(bad, test_salt, nullptr)) << "offset " << at;
        }
    }
}

// Extra bytes after a record (the next record, or zeros) are not part of it.
TEST(SpoolRecord, DecodeReportsRecordLengthWithTrailingBytes) {
    ChunkPool pool(chunk, 1ull << 20);
    const std::string rec = stage(pool, 13, Envelope(1), make_body(10));
    size_t n = 0;
    ASSERT_TRUE(decode_record(rec + std::string(100, '\0'), test_salt, &n));
    EXPECT_EQ(n, rec.size());
}

TEST(SpoolRecord, SegmentHeaderRoundTripUsesSaltZero) {
    SegmentHeader h;
    h.core = 3;
    h.segment_seq = 0x2a;
    h.salt = test_salt;
    h.created_unix_us = 1700000000000001;
    char buf[128];
    const size_t n = encode_segment_header(h, buf);
    size_t rn = 0;
    const auto raw = decode_record(std::string_view(buf, n), 0, &rn);
    ASSERT_TRUE(raw.has_value());
    EXPECT_EQ(rn, n);
    EXPECT_EQ(raw->type, RecordType::segment_header);
    const auto d = decode_segment_header(raw->payload);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->version, 1u);
    EXPECT_EQ(d->core, 3u);
    EXPECT_EQ(d->segment_seq, 0x2au);
    EXPECT_EQ(d->salt, test_salt);
    EXPECT_EQ(d->created_unix_us, 1700000000000001);
    EXPECT_FALSE(decode_record(std::string_view(buf, n), test_salt, nullptr));
    EXPECT_FALSE(decode_segment_header(raw->payload.substr(1)));
    EXPECT_FALSE(decode_message(raw->payload));

    h.version = 2;  // an unknown format version must not be read as ours
    ASSERT_EQ(encode_segment_header(h, buf), n);
    const auto raw2 = decode_record(std::string_view(buf, n), 0, nullptr);
    ASSERT_TRUE(raw2.has_value());
    EXPECT_FALSE(decode_segment_header(raw2->payload));
}

// A hostile recipient count must be refused from the bytes present, not trusted for reserve().
TEST(SpoolRecord, DecodeMessageRefusesHugeRecipientCount) {
    std::string p;
    const auto put = [&p](const void* v, size_t n) { p.append(static_cast<const char*>(v), n); };
    const uint64_t id = 1, body_bytes = 0;
    const int64_t arrival = 0;
    const uint16_t empty = 0;
    const uint32_t count = 0xffffffffu;
    put(&id, 8);
    put(&arrival, 8);
    for (int i = 0; i < 5; ++i)
        put(&empty, 2);
    put(&count, 4);
    put(&body_bytes, 8);
    put(&message_end_magic, 4);
    EXPECT_FALSE(decode_message(p));
}

// Cheap in-process fuzz: arbitrary bytes never crash the decoders (run under ASan/UBSan).
TEST(SpoolRecord, DecodersSurviveArbitraryBytes) {
    ChunkPool pool(chunk, 1ull << 20);
    const std::string rec = stage(pool, 14, Envelope(3), make_body(64));
    const auto raw = decode_record(rec, test_salt, nullptr);
    ASSERT_TRUE(raw.has_value());
    const std::string payload(raw->payload);
    uint64_t x = 88172645463325252ull;
    int parsed = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string p = payload;
        for (int k = 0; k < 3; ++k) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[x % p.size()] = static_cast<char>(x >> 32);
        }
        parsed += decode_message(p).has_value() ? 1 : 0;
        (void)decode_segment_header(p);
        (void)decode_record(p, test_salt, nullptr);
    }
    EXPECT_LT(parsed, 20000);  // most random damage is detected even without the crc
}

}  // namespace
}  // namespace ringmail::spool
