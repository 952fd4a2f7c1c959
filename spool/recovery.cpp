// recovery.cpp — the start-up scan of one core's segments (see recovery.hpp for the contract).
//
// Called by the daemon before its reactors start, and read-only by the ringmail-spool tool.
// Guarantees: only records whose salted crc verifies are reported; a bad record in the middle
// costs only itself (resynchronisation on the next verifying record); a record cut by a crash at
// the end is a torn tail, dropped and counted, never quarantined; nothing in the core directory
// is modified unless `quarantine_dir` is given, and then only by renaming a segment whose header
// is bad into it.
//
// Quarantine names: a whole segment keeps its file name; a span of segment <seq> starting at byte
// <offset> is `<seq as 16 hex>-<offset decimal>.bad`; the non-zero bytes of a torn tail are kept
// as `<seq>-<offset>.torn` (not counted as quarantined: a crash, not corruption, most likely).
//
// Stats accumulate across calls (the tool scans every core into one RecoveryStats); `bytes` is
// the size of the message records reported.
#include "spool/recovery.hpp"

#include "spool/status.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

namespace ringmail::spool {

std::string core_dir_path(const std::string& spool_dir, uint32_t core) {
    return spool_dir + "/core-" + std::to_string(core);
}

std::string segment_file_name(uint64_t segment_seq) {
    char name[32];
    std::snprintf(name, sizeof name, "%016llx.seg", static_cast<unsigned long long>(segment_seq));
    return name;
}

namespace {

constexpr size_t segment_name_hex_digits = 16;

bool fail(std::string* error, const std::string& what, const std::string& path) {
    if (error != nullptr) *error = what + " " + path + ": " + std::strerror(errno);
    return false;
}

// "<16 lowercase hex>.seg" → seq; anything else is not a segment (editor files, .tmp, ...).
bool parse_segment_name(const char* name, uint64_t* seq) {
    if (std::strlen(name) != segment_name_hex_digits + 4) return false;
    if (std::strcmp(name + segment_name_hex_digits, ".seg") != 0) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < segment_name_hex_digits; ++i) {
        const char c = name[i];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else {
            return false;
        }
        v = v << 4 | static_cast<uint64_t>(d);
    }
    *seq = v;
    return true;
}

// Segments of `dir` sorted by sequence. A missing directory is an empty spool, not an error.
bool list_segments(const std::string& dir, std::vector<uint64_t>& seqs, std::string* error) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return errno == ENOENT ? true : fail(error, "opendir", dir);
    errno = 0;
    while (const dirent* e = readdir(d)) {
        uint64_t seq;
        if (parse_segment_name(e->d_name, &seq)) seqs.push_back(seq);
    }
    const int read_errno = errno;
    closedir(d);
    if (read_errno != 0) {
        errno = read_errno;
        return fail(error, "readdir", dir);
    }
    std::sort(seqs.begin(), seqs.end());
    return true;
}

bool read_file(const std::string& path, std::string& buf, std::string* error) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(error, "open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        const int e = errno;
        close(fd);
        errno = e;
        return fail(error, "fstat", path);
    }
    buf.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < buf.size()) {
        const ssize_t n = pread(fd, buf.data() + got, buf.size() - got, static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int e = errno;
            close(fd);
            errno = e;
            return fail(error, "read", path);
        }
        if (n == 0) break;  // shrank while we read (only a concurrent writer could do that)
        got += static_cast<size_t>(n);
    }
    buf.resize(got);
    close(fd);
    return true;
}

bool write_file(const std::string& path, std::string_view bytes, std::string* error) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return fail(error, "create", path);
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int e = errno;
            close(fd);
            errno = e;
            return fail(error, "write", path);
        }
        done += static_cast<size_t>(n);
    }
    // The segment holding the original may be deleted once its messages are final: the copy
    // must be on disk first.
    const bool synced = fdatasync(fd) == 0;
    const int e = errno;
    close(fd);
    errno = e;
    return synced ? true : fail(error, "fdatasync", path);
}

bool ensure_dir(const std::string& dir, std::string* error) {
    if (mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return true;
    return fail(error, "mkdir", dir);
}

bool all_zero(std::string_view s) {
    return s.empty() || (s[0] == 0 && std::memcmp(s.data(), s.data() + 1, s.size() - 1) == 0);
}

// The next position after `from` where a record of this segment verifies, or npos. Only a
// position holding the magic can verify, so memmem skips the rest; the salted crc makes a
// record-shaped text inside a message body fail here.
size_t resync(std::string_view seg, size_t from, uint64_t salt) {
    const char magic[4] = {'R', 'M', 'R', '1'};
    size_t q = from;
    while (q < seg.size()) {
        const void* hit = memmem(seg.data() + q, seg.size() - q, magic, sizeof magic);
        if (hit == nullptr) return std::string_view::npos;
        q = static_cast<size_t>(static_cast<const char*>(hit) - seg.data());
        if (decode_record(seg.substr(q), salt, nullptr)) return q;
        ++q;
    }
    return std::string_view::npos;
}

std::string span_name(uint64_t seq, uint64_t offset, const char* suffix) {
    std::string name = segment_file_name(seq);
    name.resize(segment_name_hex_digits);
    return name + "-" + std::to_string(offset) + suffix;
}

struct Scan {
    const std::string& core_dir;
    const std::string& quarantine_dir;
    const std::function<void(const RecoveredMessage&)>& on_message;
    const std::function<void(const Status&, uint64_t)>* on_status;
    RecoveryStats& stats;
    std::string* error;
};

bool keep_span(const Scan& s, uint64_t seq, uint64_t offset, std::string_view bytes,
               const char* suffix) {
    if (s.quarantine_dir.empty()) return true;
    if (!ensure_dir(s.quarantine_dir, s.error)) return false;
    return write_file(s.quarantine_dir + "/" + span_name(seq, offset, suffix), bytes, s.error);
}

bool quarantine_span(const Scan& s, uint64_t seq, uint64_t offset, std::string_view bytes) {
    ++s.stats.quarantined;
    return keep_span(s, seq, offset, bytes, ".bad");
}

// A record that verified: report it if it is a message; quarantine it if its payload does not
// parse (only a writer bug can produce that, since the crc matched).
bool handle_record(const Scan& s, uint64_t seq, uint64_t offset, const RawRecord& rec,
                   std::string_view bytes) {
    if (rec.type == RecordType::status) {
        const std::optional<Status> st = decode_status(rec.payload);
        if (!st) return quarantine_span(s, seq, offset, bytes);
        ++s.stats.statuses;
        if (s.on_status != nullptr && *s.on_status) (*s.on_status)(*st, seq);
        return true;
    }
    if (rec.type != RecordType::message) {
        // A second segment header is a writer bug; other types are for later versions.
        return rec.type == RecordType::segment_header ? quarantine_span(s, seq, offset, bytes)
                                                      : true;
    }
    const std::optional<MessageView> m = decode_message(rec.payload);
    if (!m) return quarantine_span(s, seq, offset, bytes);
    ++s.stats.messages;
    s.stats.bytes += bytes.size();
    s.stats.max_message_id = std::max(s.stats.max_message_id, m->id);
    s.on_message(RecoveredMessage{&*m, seq, offset, bytes.size()});
    return true;
}

// The bytes from `pos` hold no verifying record: a crash cut the last write. Keep the non-zero
// part for the operator, but do not call it corruption.
bool torn_tail(const Scan& s, uint64_t seq, std::string_view seg, size_t pos) {
    std::string_view rest = seg.substr(pos);
    if (all_zero(rest)) return true;
    ++s.stats.torn_tails;
    const size_t last_nonzero = rest.find_last_not_of('\0');
    return keep_span(s, seq, pos, rest.substr(0, last_nonzero + 1), ".torn");
}

bool scan_records(const Scan& s, uint64_t seq, std::string_view seg, size_t pos, uint64_t salt) {
    while (pos < seg.size()) {
        // The preallocated rest of a segment is zeros: a zero header there is the clean end.
        if (all_zero(seg.substr(pos, record_header_bytes)) && all_zero(seg.substr(pos))) break;
        size_t n = 0;
        if (const std::optional<RawRecord> rec = decode_record(seg.substr(pos), salt, &n)) {
            if (!handle_record(s, seq, pos, *rec, seg.substr(pos, n))) return false;
            pos += n;
            continue;
        }
        const size_t q = resync(seg, pos + 1, salt);
        if (q == std::string_view::npos) return torn_tail(s, seq, seg, pos);
        if (!quarantine_span(s, seq, pos, seg.substr(pos, q - pos))) return false;
        pos = q;
    }
    return true;
}

bool quarantine_segment(const Scan& s, const std::string& name) {
    ++s.stats.quarantined;
    if (s.quarantine_dir.empty()) return true;
    if (!ensure_dir(s.quarantine_dir, s.error)) return false;
    const std::string from = s.core_dir + "/" + name;
    if (rename(from.c_str(), (s.quarantine_dir + "/" + name).c_str()) != 0) {
        return fail(s.error, "rename", from);
    }
    return true;
}

bool recover_segment(const Scan& s, uint64_t seq, std::string& buf) {
    const std::string name = segment_file_name(seq);
    if (!read_file(s.core_dir + "/" + name, buf, s.error)) return false;
    const std::string_view seg(buf);
    // Created and preallocated, but the crash came before its header was written: it is empty.
    if (all_zero(seg)) {
        s.stats.kept.push_back(SegmentSeen{seq, 0});
        return true;
    }
    size_t n = 0;
    const std::optional<RawRecord> rec = decode_record(seg, 0, &n);
    std::optional<SegmentHeader> h;
    if (rec && rec->type == RecordType::segment_header) h = decode_segment_header(rec->payload);
    // Without a header we know no salt, so no record of this file can be verified.
    if (!h || h->segment_seq != seq) return quarantine_segment(s, name);
    ++s.stats.segments;
    s.stats.kept.push_back(SegmentSeen{seq, h->created_unix_us});
    return scan_records(s, seq, seg, n, h->salt);
}

}  // namespace

bool recover_dir(const std::string& core_dir, const std::string& quarantine_dir,
                 const std::function<void(const RecoveredMessage&)>& on_message,
                 RecoveryStats& stats, std::string* error) {
    return recover_dir(core_dir, quarantine_dir, on_message, {}, stats, error);
}

bool recover_dir(const std::string& core_dir, const std::string& quarantine_dir,
                 const std::function<void(const RecoveredMessage&)>& on_message,
                 const std::function<void(const Status&, uint64_t segment_seq)>& on_status,
                 RecoveryStats& stats, std::string* error) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<uint64_t> seqs;
    if (!list_segments(core_dir, seqs, error)) return false;
    const Scan s{core_dir, quarantine_dir, on_message, &on_status, stats, error};
    std::string buf;  // one buffer for every segment of the directory
    bool ok = true;
    for (uint64_t seq : seqs) {
        // Every name seen, even of a bad segment, so a new segment never reuses one.
        stats.max_segment_seq = std::max(stats.max_segment_seq, seq);
        ok = recover_segment(s, seq, buf);
        if (!ok) break;
    }
    stats.elapsed_s +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return ok;
}

}  // namespace ringmail::spool
