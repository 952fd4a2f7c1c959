// spool_main.cpp — `ringmail-spool`, the operator's read-only view of a spool.
//
// Used by operators and by the integration tests to see what the daemon made durable. It scans
// every core-<N> directory under --spool-dir with recover_dir() and no quarantine directory, so
// it never modifies the spool and is safe while the daemon runs (a record being written shows as
// a torn tail). Subcommands: list, show <id>, body <id>, json, verify.
// Exit codes: 0 ok; 1 message not found (show, body) or corrupt records (verify); 2 I/O error.
#include <dirent.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "spool/record.hpp"
#include "spool/recovery.hpp"
#include "spool/sha256.hpp"

namespace {

using ringmail::spool::MessageView;
using ringmail::spool::RecoveredMessage;
using ringmail::spool::RecoveryStats;

constexpr int exit_not_found = 1;
constexpr int exit_io_error = 2;

// Core numbers of the core-<N> directories of `spool_dir`, ascending.
bool list_cores(const std::string& spool_dir, std::vector<uint32_t>& cores, std::string* error) {
    DIR* d = opendir(spool_dir.c_str());
    if (d == nullptr) {
        *error = "opendir " + spool_dir + ": " + std::strerror(errno);
        return false;
    }
    while (const dirent* e = readdir(d)) {
        const char* name = e->d_name;
        if (std::strncmp(name, "core-", 5) != 0 || name[5] == '\0') continue;
        char* end = nullptr;
        const unsigned long n = std::strtoul(name + 5, &end, 10);
        if (*end != '\0' || name[5] < '0' || name[5] > '9' || n > UINT32_MAX) continue;
        cores.push_back(static_cast<uint32_t>(n));
    }
    closedir(d);
    std::sort(cores.begin(), cores.end());
    return true;
}

// Every message of the spool, in core then segment order; false (message printed) on I/O error.
bool scan_spool(const std::string& spool_dir,
                const std::function<void(const RecoveredMessage&)>& on_message,
                RecoveryStats& stats) {
    std::string error;
    std::vector<uint32_t> cores;
    bool ok = list_cores(spool_dir, cores, &error);
    for (size_t i = 0; ok && i < cores.size(); ++i) {
        ok = ringmail::spool::recover_dir(ringmail::spool::core_dir_path(spool_dir, cores[i]), "",
                                          on_message, stats, &error);
    }
    if (!ok) std::fprintf(stderr, "ringmail-spool: %s\n", error.c_str());
    return ok;
}

std::string queue_id(uint64_t id) {
    char s[17];
    std::snprintf(s, sizeof s, "%016" PRIx64, id);
    return s;
}

std::optional<uint64_t> parse_queue_id(const std::string& text) {
    if (text.empty() || text.size() > 16) return std::nullopt;
    if (text.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return std::nullopt;
    return std::strtoull(text.c_str(), nullptr, 16);
}

void write_all(std::string_view bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = write(STDOUT_FILENO, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        done += static_cast<size_t>(n);
    }
}

// A JSON string: every byte outside printable ASCII as \u00XX of the byte, so any stored text
// (even invalid UTF-8) gives valid JSON; consumers compare bodies through body_sha256.
// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629), or 0 if it is not one.
size_t utf8_sequence(std::string_view s, size_t i) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c >= 0xf0 && c <= 0xf4  ? 4
               : c >= 0xe0 && c < 0xf0 ? 3
               : c >= 0xc2 && c < 0xe0 ? 2
                                       : 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (size_t k = 1; k < n; k++)
        if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
    const auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) || (c == 0xf0 && c1 < 0x90) ||
        (c == 0xf4 && c1 >= 0x90))
        return 0;  // overlong, surrogate, or past U+10FFFF
    return n;
}

// JSON string: well-formed UTF-8 (SMTPUTF8 addresses) is kept as it is; control characters
// and bytes that are not UTF-8 are written as \u00XX of the byte.
std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size(); i++) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += s[i];
        } else if (c >= 0x20 && c < 0x7f) {
            out += s[i];
        } else if (size_t n = c >= 0x80 ? utf8_sequence(s, i) : 0; n > 0) {
            out.append(s.substr(i, n));
            i += n - 1;
        } else {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04x", c);
            out += esc;
        }
    }
    return out + "\"";
}

std::string json_line(const RecoveredMessage& r) {
    const MessageView& m = *r.message;
    std::string out = "{\"id\":\"" + queue_id(m.id) + "\"";
    out += ",\"arrival_unix_us\":" + std::to_string(m.arrival_unix_us);
    out += ",\"helo\":" + json_string(m.helo);
    out += ",\"client_addr\":" + json_string(m.client_addr);
    out += ",\"protocol\":" + json_string(m.protocol);
    out += ",\"mail_from\":" + json_string(m.mail_from);
    out += ",\"mail_params\":" + json_string(m.mail_params);
    out += ",\"rcpts\":[";
    for (size_t i = 0; i < m.rcpts.size(); ++i) {
        if (i > 0) out += ',';
        out += "{\"address\":" + json_string(m.rcpts[i].address) +
               ",\"params\":" + json_string(m.rcpts[i].params) + "}";
    }
    out += "],\"body_bytes\":" + std::to_string(m.body.size());
    out += ",\"body_sha256\":\"" + ringmail::spool::sha256_hex(m.body) + "\"";
    out += ",\"segment\":" + std::to_string(r.segment_seq);
    out += ",\"offset\":" + std::to_string(r.offset) + "}\n";
    return out;
}

void print_summary(const RecoveryStats& s) {
    std::fprintf(stderr,
                 "%" PRIu64 " messages in %" PRIu64 " segments, %" PRIu64 " torn tails, %" PRIu64
                 " corrupt records\n",
                 s.messages, s.segments, s.torn_tails, s.quarantined);
}

int cmd_list(const std::string& spool_dir) {
    RecoveryStats stats;
    const bool ok = scan_spool(
        spool_dir,
        [](const RecoveredMessage& r) {
            const MessageView& m = *r.message;
            const std::string from = m.mail_from.empty() ? "<>" : std::string(m.mail_from);
            std::printf("%s  %zu  %s  %zu %s\n", queue_id(m.id).c_str(), m.body.size(),
                        from.c_str(), m.rcpts.size(), m.rcpts.size() == 1 ? "rcpt" : "rcpts");
        },
        stats);
    print_summary(stats);
    return ok ? 0 : exit_io_error;
}

void print_envelope(const RecoveredMessage& r) {
    const MessageView& m = *r.message;
    const auto field = [](const char* name, std::string_view v) {
        std::printf("%s: %.*s\n", name, static_cast<int>(v.size()), v.data());
    };
    std::printf("id: %s\n", queue_id(m.id).c_str());
    std::printf("segment: %" PRIu64 "\noffset: %" PRIu64 "\n", r.segment_seq, r.offset);
    std::printf("arrival_unix_us: %" PRId64 "\n", m.arrival_unix_us);
    field("helo", m.helo);
    field("client_addr", m.client_addr);
    field("protocol", m.protocol);
    std::printf("mail_from: <%.*s>\n", static_cast<int>(m.mail_from.size()), m.mail_from.data());
    field("mail_params", m.mail_params);
    for (const auto& rcpt : m.rcpts) {
        std::printf("rcpt: <%.*s> %.*s\n", static_cast<int>(rcpt.address.size()),
                    rcpt.address.data(), static_cast<int>(rcpt.params.size()), rcpt.params.data());
    }
    std::printf("body_bytes: %zu\n\n", m.body.size());
    std::fflush(stdout);
}

// show and body: the first message with `id` (a duplicate after a crash has the same text).
int cmd_one(const std::string& spool_dir, const std::string& id_text, bool envelope) {
    const std::optional<uint64_t> id = parse_queue_id(id_text);
    if (!id) {
        std::fprintf(stderr, "ringmail-spool: not a queue id: %s\n", id_text.c_str());
        return exit_not_found;
    }
    RecoveryStats stats;
    bool found = false;
    const bool ok = scan_spool(
        spool_dir,
        [&](const RecoveredMessage& r) {
            if (found || r.message->id != *id) return;
            found = true;
            if (envelope) print_envelope(r);
            std::fflush(stdout);
            write_all(r.message->body);
        },
        stats);
    if (!ok) return exit_io_error;
    if (!found) {
        std::fprintf(stderr, "ringmail-spool: no message %s\n", queue_id(*id).c_str());
        return exit_not_found;
    }
    return 0;
}

int cmd_json(const std::string& spool_dir) {
    RecoveryStats stats;
    const bool ok = scan_spool(
        spool_dir, [](const RecoveredMessage& r) { write_all(json_line(r)); }, stats);
    return ok ? 0 : exit_io_error;
}

int cmd_verify(const std::string& spool_dir) {
    RecoveryStats stats;
    const bool ok = scan_spool(
        spool_dir, [](const RecoveredMessage&) {}, stats);
    std::printf("segments: %" PRIu64 "\nmessages: %" PRIu64 "\nbytes: %" PRIu64
                "\ntorn_tails: %" PRIu64 "\ncorrupt_records: %" PRIu64 "\nmax_segment_seq: %" PRIu64
                "\nmax_message_id: %s\nelapsed_s: %.3f\n",
                stats.segments, stats.messages, stats.bytes, stats.torn_tails, stats.quarantined,
                stats.max_segment_seq, queue_id(stats.max_message_id).c_str(), stats.elapsed_s);
    if (!ok) return exit_io_error;
    return stats.quarantined == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringmail-spool: read-only inspection of a ringmail spool"};
    app.require_subcommand(1);
    app.fallthrough();  // --spool-dir is accepted before or after the subcommand
    std::string spool_dir = "./var/spool";
    app.add_option("--spool-dir", spool_dir, "spool directory (holds core-<N>/)")
        ->capture_default_str();

    std::string id_text;
    CLI::App* list = app.add_subcommand("list", "one line per message: id, bytes, sender, rcpts");
    CLI::App* show = app.add_subcommand("show", "envelope and body of one message");
    show->add_option("id", id_text, "queue id (16 hex digits)")->required();
    CLI::App* body = app.add_subcommand("body", "the stored body bytes of one message");
    body->add_option("id", id_text, "queue id (16 hex digits)")->required();
    CLI::App* json = app.add_subcommand("json", "one JSON object per message");
    CLI::App* verify = app.add_subcommand("verify", "check every record; exit 1 if any is corrupt");

    CLI11_PARSE(app, argc, argv);

    if (list->parsed()) return cmd_list(spool_dir);
    if (show->parsed()) return cmd_one(spool_dir, id_text, true);
    if (body->parsed()) return cmd_one(spool_dir, id_text, false);
    if (json->parsed()) return cmd_json(spool_dir);
    if (verify->parsed()) return cmd_verify(spool_dir);
    return exit_io_error;  // unreachable: require_subcommand(1)
}
