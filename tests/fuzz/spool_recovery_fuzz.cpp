// spool_recovery_fuzz.cpp — segment recovery (spool/recovery.hpp) over arbitrary segment bytes,
// through real files in a private temporary directory (recovery has no in-memory API).
//
// Input: one byte of flags, then the bytes that follow the segment header.
//   bit0 re-seal: every well-framed record in the bytes gets the crc of this segment, so that
//        payloads that did not come from our writer reach the payload decoders
//   bit1 quarantine into a directory (else the read-only scan of the spool tool)
//   bit2 raw: the bytes are the whole file, segment header included
//   bit3 a second segment (seq 2, its own salt) holding the same bytes
//   bit4 the segment header names another sequence number than the file
//   bit5 a known good message record follows the bytes
//
// Checked against an independent reading of the format (record.hpp / recovery.hpp): the
// messages and status records reported are exactly those a straightforward scan finds — every
// one at its offset, with a crc that verifies under its segment's salt (checked with a CRC32C
// independent of the one under test); the counters agree; the good record after the bytes is
// lost only inside a record that verified; the segment files are left as they were, except a
// segment with a bad header, which moves whole to the quarantine.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spool/record.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace ringmail::spool {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSalt1 = 0x243f6a8885a308d3ULL;
constexpr uint64_t kSalt2 = 0x13198a2e03707344ULL;

using ::ringmail::fuzz::reference_crc32c;

uint32_t le32(std::string_view s, size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
        v = v << 8 | static_cast<uint8_t>(s[at + static_cast<size_t>(i)]);
    return v;
}

void put_le32(std::string& s, size_t at, uint32_t v) {
    for (size_t i = 0; i < 4; ++i)
        s[at + i] = static_cast<char>(v >> (8 * i));
}

uint32_t reference_crc(std::string_view seg, size_t at, uint32_t payload_bytes, uint64_t salt) {
    char salt_le[8];
    for (int i = 0; i < 8; ++i)
        salt_le[i] = static_cast<char>(salt >> (8 * i));
    uint32_t c = reference_crc32c(0, seg.substr(at + record_header_bytes, payload_bytes));
    c = reference_crc32c(c, seg.substr(at, 12));
    return reference_crc32c(c, {salt_le, sizeof salt_le});
}

// Magic, zero flags and reserved bytes, a length that fits: a record if its crc verifies.
bool framed(std::string_view seg, size_t at, uint32_t* payload_bytes) {
    if (seg.size() - at < record_header_bytes) return false;
    if (le32(seg, at) != record_magic || seg[at + 5] != 0 || seg[at + 6] != 0 || seg[at + 7] != 0)
        return false;
    *payload_bytes = le32(seg, at + 8);
    return *payload_bytes <= seg.size() - at - record_header_bytes;
}

bool verifies(std::string_view seg, size_t at, uint64_t salt, size_t* record_bytes) {
    uint32_t n = 0;
    if (!framed(seg, at, &n)) return false;
    if (reference_crc(seg, at, n, salt) != le32(seg, at + 12)) return false;
    *record_bytes = record_header_bytes + n;
    return true;
}

// bit0: give every well-framed record the crc of `salt`, front to back.
void reseal(std::string& seg, size_t from, uint64_t salt) {
    for (size_t at = from; at < seg.size();) {
        uint32_t n = 0;
        if (!framed(seg, at, &n)) {
            ++at;
            continue;
        }
        put_le32(seg, at + 12, reference_crc(seg, at, n, salt));
        at += record_header_bytes + n;
    }
}

bool all_zero(std::string_view s) {
    return s.find_first_not_of('\0') == std::string_view::npos;
}

struct Expected {
    std::vector<std::array<uint64_t, 3>> messages;  // seq, offset, record bytes
    std::vector<std::array<uint64_t, 3>> statuses;  // seq, message id, rcpt
    uint64_t segments = 0, quarantined = 0, torn_tails = 0;
    std::vector<std::array<uint64_t, 3>> verified;  // every record that verified: seq, [from, to)
};

uint64_t le64(std::string_view s, size_t at) {
    return le32(s, at) | uint64_t{le32(s, at + 4)} << 32;
}

// The format as recovery.hpp describes it, read straightforwardly.
void reference_scan(std::string_view seg, uint64_t seq, Expected& e) {
    if (all_zero(seg)) return;  // preallocated, never written
    // The segment header (salt 0): u32 version 1 | u32 core | u64 seq | u64 salt | i64 created.
    size_t n = 0;
    const bool header_ok = verifies(seg, 0, 0, &n) &&
                           seg[4] == static_cast<char>(RecordType::segment_header) &&
                           n == record_header_bytes + 32 && le32(seg, record_header_bytes) == 1 &&
                           le64(seg, record_header_bytes + 8) == seq;
    if (!header_ok) {
        ++e.quarantined;  // no salt known: the whole segment is set aside
        return;
    }
    const uint64_t salt = le64(seg, record_header_bytes + 16);
    ++e.segments;
    for (size_t at = n; at < seg.size();) {
        if (all_zero(seg.substr(at))) break;  // the zeroed preallocated end
        size_t len = 0;
        if (!verifies(seg, at, salt, &len)) {
            size_t q = at + 1;
            while (q < seg.size() && !verifies(seg, q, salt, &len))
                ++q;
            if (q >= seg.size()) {
                ++e.torn_tails;
                break;
            }
            ++e.quarantined;  // the bytes up to the next record that verifies
            at = q;
        }
        e.verified.push_back({seq, at, at + len});
        const auto type = static_cast<RecordType>(seg[at + 4]);
        const std::string_view payload =
            seg.substr(at + record_header_bytes, len - record_header_bytes);
        if (type == RecordType::message) {
            if (decode_message(payload)) {
                e.messages.push_back({seq, at, len});
            } else {
                ++e.quarantined;
            }
        } else if (type == RecordType::status) {
            if (const std::optional<Status> s = decode_status(payload)) {
                e.statuses.push_back({seq, s->message_id, s->rcpt});
            } else {
                ++e.quarantined;
            }
        } else if (type == RecordType::segment_header) {
            ++e.quarantined;  // a second header is a writer bug
        }
        at += len;
    }
}

std::string read_all(const fs::path& p) {
    std::string s;
    FILE* f = std::fopen(p.c_str(), "rb");
    FUZZ_CHECK(f != nullptr);
    char buf[8192];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;)
        s.append(buf, n);
    std::fclose(f);
    return s;
}

void write_all(const fs::path& p, std::string_view bytes) {
    FILE* f = std::fopen(p.c_str(), "wb");
    FUZZ_CHECK(f != nullptr);
    FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    FUZZ_CHECK(std::fclose(f) == 0);
}

// A private directory on tmpfs when there is one: "ringmail-recovery-fuzz-<pid>", made and
// removed by every run. A run that fails leaves it for the post-mortem; the next process
// removes those of processes that are gone.
const fs::path& work_dir() {
    static const fs::path dir = [] {
        const fs::path base =
            fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
        constexpr std::string_view kPrefix = "ringmail-recovery-fuzz-";
        std::error_code ec;
        for (const fs::directory_entry& e : fs::directory_iterator(base, ec)) {
            const std::string name = e.path().filename().string();
            if (!name.starts_with(kPrefix)) continue;
            const long pid = std::strtol(name.c_str() + kPrefix.size(), nullptr, 10);
            if (pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
                fs::remove_all(e.path(), ec);
        }
        return base / (std::string(kPrefix) + std::to_string(getpid()));
    }();
    return dir;
}

std::string segment_header(uint64_t seq, uint64_t salt) {
    SegmentHeader h;
    h.segment_seq = seq;
    h.salt = salt;
    h.created_unix_us = 1700000000000000;
    char buf[128];
    return {buf, encode_segment_header(h, buf)};
}

std::string good_record(uint64_t salt) {
    ChunkPool pool(4096, 1 << 20);
    MessageBuilder b;
    const RcptField rcpt{"rcpt@relay.test", ""};
    const EnvelopeFields env{"client.test",        "192.0.2.7", "ESMTP",
                             "sender@client.test", "",          {&rcpt, 1}};
    FUZZ_CHECK(b.begin(pool, 0x5eed, 1700000000000000, env));
    FUZZ_CHECK(b.append("Subject: kept\r\n\r\nRMR1 is only text here\r\n"));
    FUZZ_CHECK(b.seal(salt));
    std::vector<iovec> iov;
    b.iovecs(iov);
    std::string out;
    for (const iovec& v : iov)
        out.append(static_cast<const char*>(v.iov_base), v.iov_len);
    return out;
}

}  // namespace
}  // namespace ringmail::spool

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace ringmail::spool;
    if (size < 1) return 0;
    const uint8_t flags = data[0];
    const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
    const fs::path core = work_dir() / "core-0";
    const fs::path quarantine = work_dir() / "quarantine";
    fs::remove_all(work_dir());  // what a run that failed may have left
    fs::create_directories(core);

    // Segment 1, and segment 2 holding the same bytes under its own salt.
    std::vector<std::pair<uint64_t, std::string>> segments;
    size_t good_at = 0;
    {
        std::string seg =
            (flags & 4) ? std::string() : segment_header((flags & 16) ? 9 : 1, kSalt1);
        const size_t body_at = seg.size();
        seg.append(bytes);
        if (flags & 1) reseal(seg, body_at, kSalt1);
        if (flags & 32) {
            good_at = seg.size();
            seg += good_record(kSalt1);
        }
        segments.emplace_back(1, seg);
        if (flags & 8) segments.emplace_back(2, segment_header(2, kSalt2) + seg.substr(body_at));
    }
    Expected want;
    for (const auto& [seq, seg] : segments) {
        write_all(core / segment_file_name(seq), seg);
        reference_scan(seg, seq, want);
    }

    Expected got;
    RecoveryStats stats;
    std::string error;
    const bool ok = recover_dir(
        core.string(), (flags & 2) ? quarantine.string() : std::string(),
        [&](const RecoveredMessage& m) {
            // The headline promise: nothing is reported whose crc does not verify.
            const std::string& seg = segments[m.segment_seq - 1].second;
            const uint64_t salt = m.segment_seq == 1 ? kSalt1 : kSalt2;
            size_t len = 0;
            FUZZ_CHECK(m.offset < seg.size() && verifies(seg, m.offset, salt, &len));
            FUZZ_CHECK(len == m.record_bytes);
            const std::optional<MessageView> v = decode_message(std::string_view(seg).substr(
                m.offset + record_header_bytes, len - record_header_bytes));
            FUZZ_CHECK(v && v->id == m.message->id && v->body == m.message->body &&
                       v->rcpts.size() == m.message->rcpts.size());
            got.messages.push_back({m.segment_seq, m.offset, m.record_bytes});
        },
        [&](const Status& s, uint64_t seq) {
            got.statuses.push_back({seq, s.message_id, s.rcpt});
        },
        stats, &error);
    FUZZ_CHECK(ok);
    FUZZ_CHECK(got.messages == want.messages);
    FUZZ_CHECK(got.statuses == want.statuses);
    FUZZ_CHECK(stats.messages == want.messages.size());
    FUZZ_CHECK(stats.statuses == want.statuses.size());
    FUZZ_CHECK(stats.segments == want.segments);
    FUZZ_CHECK(stats.quarantined == want.quarantined);
    FUZZ_CHECK(stats.torn_tails == want.torn_tails);
    FUZZ_CHECK(stats.max_segment_seq == segments.back().first);
    uint64_t bytes_total = 0;
    for (const auto& m : want.messages)
        bytes_total += m[2];
    FUZZ_CHECK(stats.bytes == bytes_total);

    // A bad record costs only itself: the good one after the bytes is lost only if a record
    // that verified covers it.
    if (good_at != 0 && !(flags & 4) && !(flags & 16)) {  // segment 1 has its good header
        bool kept = false;
        for (const auto& m : got.messages)
            kept = kept || (m[0] == 1 && m[1] == good_at);
        bool covered = false;
        for (const auto& v : want.verified)
            covered = covered || (v[0] == 1 && v[1] < good_at && good_at < v[2]);
        FUZZ_CHECK(kept || covered);
    }

    // The segments are left as they were; only one with a bad header moves, whole.
    for (const auto& [seq, seg] : segments) {
        const std::string name = segment_file_name(seq);
        const bool in_core = fs::exists(core / name);
        const bool moved = fs::exists(quarantine / name);
        FUZZ_CHECK(in_core != moved);
        if (moved) FUZZ_CHECK(flags & 2);
        FUZZ_CHECK(read_all((in_core ? core : quarantine) / name) == seg);
    }
    fs::remove_all(work_dir());
    return 0;
}
