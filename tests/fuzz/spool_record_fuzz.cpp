// spool_record_fuzz.cpp — the spool record codec (spool/record.hpp, spool/status.hpp): decoders
// over arbitrary bytes, and encode → decode round trips over arbitrary fields.
//
// Input: one mode byte, then the rest.
//   mode % 4 == 0: the rest is a record (or a payload). Whatever decode_record accepts has a crc
//     that verifies by an independent CRC32C, and encodes back to the very same bytes; whatever
//     decode_message / decode_segment_header / decode_status accept points inside the payload
//     and encodes back to the very same payload (the format has one spelling per value).
//   mode % 4 == 1: a message built with MessageBuilder from fields taken from the rest (chunk
//     size and pool cap too) decodes to the same fields, only with its own segment's salt, and
//     not after any one byte of it changed; a builder that ran out of pool holds nothing.
//   mode % 4 == 2: the same for a status record.
//   mode % 4 == 3: the same for a segment header.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spool/record.hpp"
#include "spool/status.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace ringmail::spool {
namespace {

constexpr uint64_t kSalt = 0x9e3779b97f4a7c15ULL;

using ::ringmail::fuzz::reference_crc32c;

uint32_t le32(std::string_view s) {
    return static_cast<uint32_t>(static_cast<uint8_t>(s[0])) |
           static_cast<uint32_t>(static_cast<uint8_t>(s[1])) << 8 |
           static_cast<uint32_t>(static_cast<uint8_t>(s[2])) << 16 |
           static_cast<uint32_t>(static_cast<uint8_t>(s[3])) << 24;
}

// record.hpp: crc = CRC32C(payload || header bytes 0..11 || salt as u64 LE).
bool reference_verifies(std::string_view record, uint64_t salt) {
    if (record.size() < record_header_bytes) return false;
    std::string salt_le(8, '\0');
    for (int i = 0; i < 8; ++i)
        salt_le[i] = static_cast<char>(salt >> (8 * i));
    uint32_t c = reference_crc32c(0, record.substr(record_header_bytes));
    c = reference_crc32c(c, record.substr(0, 12));
    c = reference_crc32c(c, salt_le);
    return c == le32(record.substr(12, 4));
}

bool within(std::string_view part, std::string_view whole) {
    return part.empty() || (part.data() >= whole.data() &&
                            part.data() + part.size() <= whole.data() + whole.size());
}

std::string flatten(const MessageBuilder& b) {
    std::vector<iovec> iov;
    b.iovecs(iov);
    std::string out;
    for (const iovec& v : iov)
        out.append(static_cast<const char*>(v.iov_base), v.iov_len);
    return out;
}

std::string encode(RecordType type, std::string_view payload, uint64_t salt) {
    std::string out(record_header_bytes + payload.size(), '\0');
    const size_t n = encode_record(type, payload, salt, out);
    FUZZ_CHECK(n == out.size());
    return out;
}

// A record whose crc verifies under `salt`, and which must not verify under any other one.
void check_sealed(const std::string& rec, uint64_t salt, RecordType type,
                  std::string_view* payload) {
    size_t n = 0;
    const std::optional<RawRecord> r = decode_record(rec, salt, &n);
    FUZZ_CHECK(r && n == rec.size() && r->type == type);
    FUZZ_CHECK(reference_verifies(rec, salt));
    FUZZ_CHECK(!decode_record(rec, salt ^ 1, nullptr));  // CRCs catch every 1-bit change
    *payload = r->payload;
}

// Message payload → builder → the same payload.
void check_message_payload(std::string_view payload) {
    const std::optional<MessageView> m = decode_message(payload);
    if (!m) return;
    for (std::string_view f :
         {m->helo, m->client_addr, m->protocol, m->mail_from, m->mail_params, m->body})
        FUZZ_CHECK(within(f, payload));
    for (const RcptField& r : m->rcpts)
        FUZZ_CHECK(within(r.address, payload) && within(r.params, payload));
    ChunkPool pool(64, 1 << 20);  // small chunks: fields and text cross chunk boundaries
    MessageBuilder b;
    const EnvelopeFields env{m->helo,      m->client_addr, m->protocol,
                             m->mail_from, m->mail_params, m->rcpts};
    FUZZ_CHECK(b.begin(pool, m->id, m->arrival_unix_us, env));
    FUZZ_CHECK(b.append(m->body));
    FUZZ_CHECK(b.seal(kSalt));
    FUZZ_CHECK(flatten(b) == encode(RecordType::message, payload, kSalt));
}

void check_segment_header_payload(std::string_view payload) {
    const std::optional<SegmentHeader> h = decode_segment_header(payload);
    if (!h) return;
    char buf[128];
    const size_t n = encode_segment_header(*h, buf);
    FUZZ_CHECK(n > record_header_bytes && n <= sizeof buf);
    FUZZ_CHECK(std::string_view(buf + record_header_bytes, n - record_header_bytes) == payload);
    FUZZ_CHECK(reference_verifies({buf, n}, 0));  // a segment header is sealed with salt 0
}

void check_status_payload(std::string_view payload) {
    const std::optional<Status> s = decode_status(payload);
    if (!s) return;
    FUZZ_CHECK(within(s->remote, payload) && within(s->reply, payload));
    FUZZ_CHECK(s->remote.size() <= status_text_max_bytes &&
               s->reply.size() <= status_text_max_bytes);
    char buf[status_record_max_bytes];
    const size_t n = encode_status(*s, kSalt, buf);
    FUZZ_CHECK(n <= sizeof buf);
    FUZZ_CHECK(std::string_view(buf + record_header_bytes, n - record_header_bytes) == payload);
}

void decode_arbitrary(std::string_view bytes) {
    for (const uint64_t salt : {uint64_t{0}, kSalt}) {
        size_t n = 0;
        const std::optional<RawRecord> r = decode_record(bytes, salt, &n);
        if (!r) continue;
        FUZZ_CHECK(n >= record_header_bytes && n <= bytes.size());
        FUZZ_CHECK(r->payload.data() == bytes.data() + record_header_bytes);
        FUZZ_CHECK(r->payload.size() == n - record_header_bytes);
        FUZZ_CHECK(reference_verifies(bytes.substr(0, n), salt));
        FUZZ_CHECK(encode(r->type, r->payload, salt) == bytes.substr(0, n));
    }
    // The payload decoders are reached through a verified record in the spool; here they also
    // get what no crc would let through.
    check_message_payload(bytes);
    check_segment_header_payload(bytes);
    check_status_payload(bytes);
}

void message_round_trip(FuzzedDataProvider& in) {
    const size_t chunk_bytes = in.ConsumeIntegralInRange<size_t>(record_header_bytes, 4096);
    const uint64_t pool_max = in.ConsumeIntegralInRange<uint64_t>(0, 1 << 20);
    const uint64_t id = in.ConsumeIntegral<uint64_t>();
    const int64_t arrival = in.ConsumeIntegral<int64_t>();
    const uint64_t salt = in.ConsumeIntegral<uint64_t>();
    const size_t flip_at = in.ConsumeIntegral<size_t>();
    const auto flip_by = static_cast<char>(in.ConsumeIntegralInRange<uint8_t>(1, 255));
    std::string fields[5];
    for (std::string& f : fields)
        f = in.ConsumeRandomLengthString(300);
    const size_t rcpt_count = in.ConsumeIntegralInRange<size_t>(0, 20);
    std::vector<std::string> addrs, params;
    for (size_t i = 0; i < rcpt_count; ++i) {
        addrs.push_back(in.ConsumeRandomLengthString(300));
        params.push_back(in.ConsumeRandomLengthString(100));
    }
    std::vector<RcptField> rcpts;
    for (size_t i = 0; i < rcpt_count; ++i)
        rcpts.push_back({addrs[i], params[i]});
    std::vector<std::string> pieces;
    while (in.remaining_bytes() > 0)
        pieces.push_back(in.ConsumeRandomLengthString(2000));

    ChunkPool pool(chunk_bytes, pool_max);
    {
        MessageBuilder b;
        const EnvelopeFields env{fields[0], fields[1], fields[2], fields[3], fields[4], rcpts};
        bool ok = b.begin(pool, id, arrival, env);
        std::string body;
        for (size_t i = 0; ok && i < pieces.size(); ++i) {
            ok = b.append(pieces[i]);
            if (ok) body += pieces[i];
        }
        if (!ok) {
            b.reset();
            FUZZ_CHECK(pool.bytes_in_use() == 0);  // a builder that failed holds nothing
            return;
        }
        FUZZ_CHECK(b.body_bytes() == body.size());
        FUZZ_CHECK(b.seal(salt));
        FUZZ_CHECK(!b.seal(salt));  // sealed once
        const std::string rec = flatten(b);
        FUZZ_CHECK(rec.size() == b.record_bytes());
        std::string_view payload;
        check_sealed(rec, salt, RecordType::message, &payload);
        const std::optional<MessageView> m = decode_message(payload);
        FUZZ_CHECK(m && m->id == id && m->arrival_unix_us == arrival);
        FUZZ_CHECK(m->helo == fields[0] && m->client_addr == fields[1] &&
                   m->protocol == fields[2] && m->mail_from == fields[3] &&
                   m->mail_params == fields[4]);
        FUZZ_CHECK(m->rcpts.size() == rcpt_count);
        for (size_t i = 0; i < rcpt_count; ++i)
            FUZZ_CHECK(m->rcpts[i].address == addrs[i] && m->rcpts[i].params == params[i]);
        FUZZ_CHECK(m->body == body);
        // Any one damaged byte is caught (CRC32C detects every burst up to 32 bits).
        std::string bad = rec;
        bad[flip_at % bad.size()] ^= flip_by;
        FUZZ_CHECK(!decode_record(bad, salt, nullptr));
    }
    FUZZ_CHECK(pool.bytes_in_use() == 0);  // the builder gave its chunks back
}

void status_round_trip(FuzzedDataProvider& in) {
    Status s;
    s.message_id = in.ConsumeIntegral<uint64_t>();
    s.rcpt = in.ConsumeIntegral<uint16_t>();
    s.state = static_cast<StatusState>(in.ConsumeIntegralInRange<uint8_t>(1, 4));
    s.attempts = in.ConsumeIntegral<uint16_t>();
    s.at_unix_us = in.ConsumeIntegral<int64_t>();
    s.next_attempt_unix_us = in.ConsumeIntegral<int64_t>();
    const uint64_t salt = in.ConsumeIntegral<uint64_t>();
    const std::string remote = in.ConsumeRandomLengthString(700);
    const std::string reply = in.ConsumeRemainingBytesAsString();
    s.remote = remote;
    s.reply = reply;
    std::string rec(status_record_max_bytes, '\0');
    rec.resize(encode_status(s, salt, rec));
    std::string_view payload;
    check_sealed(rec, salt, RecordType::status, &payload);
    const std::optional<Status> d = decode_status(payload);
    FUZZ_CHECK(d && d->message_id == s.message_id && d->rcpt == s.rcpt && d->state == s.state &&
               d->attempts == s.attempts && d->at_unix_us == s.at_unix_us &&
               d->next_attempt_unix_us == s.next_attempt_unix_us);
    // Texts are cut, never refused.
    FUZZ_CHECK(d->remote == s.remote.substr(0, status_text_max_bytes));
    FUZZ_CHECK(d->reply == s.reply.substr(0, status_text_max_bytes));
}

void segment_header_round_trip(FuzzedDataProvider& in) {
    SegmentHeader h;
    h.core = in.ConsumeIntegral<uint32_t>();
    h.segment_seq = in.ConsumeIntegral<uint64_t>();
    h.salt = in.ConsumeIntegral<uint64_t>();
    h.created_unix_us = in.ConsumeIntegral<int64_t>();
    char buf[128];
    const std::string rec(buf, encode_segment_header(h, buf));
    std::string_view payload;
    check_sealed(rec, 0, RecordType::segment_header, &payload);
    const std::optional<SegmentHeader> d = decode_segment_header(payload);
    FUZZ_CHECK(d && d->version == h.version && d->core == h.core &&
               d->segment_seq == h.segment_seq && d->salt == h.salt &&
               d->created_unix_us == h.created_unix_us);
}

}  // namespace
}  // namespace ringmail::spool

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace ringmail::spool;
    if (size < 1) return 0;
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    FuzzedDataProvider in(data + 1, size - 1);
    switch (data[0] % 4) {
        case 0:
            decode_arbitrary(rest);
            break;
        case 1:
            message_round_trip(in);
            break;
        case 2:
            status_round_trip(in);
            break;
        default:
            segment_header_round_trip(in);
            break;
    }
    return 0;
}
