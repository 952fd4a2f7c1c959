// spool_main.cpp — `ringmail-spool`, the operator's read-only view of a spool.
//
// Used by operators and by the integration tests to see what the daemon made durable. It scans
// every core-<N> directory under --spool-dir with recover_dir() and no quarantine directory, so
// it never modifies the spool and is safe while the daemon runs (a record being written shows as
// a torn tail). Subcommands: list, show <id>, body <id>, json, status <id>, verify.
//
// list, json and status fold each core's message copies and status records with MessageFold
// (spool/lifecycle.hpp): a message compacted forward is shown once, at its latest copy, with each
// recipient's state (pending, deferred, delivered, bounced, expired) and the reply that set it.
// Exit codes: 0 ok; 1 message not found (show, body, status) or corrupt records (verify); 2 I/O
// error.
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
#include <unordered_map>
#include <vector>

#include "spool/lifecycle.hpp"
#include "spool/record.hpp"
#include "spool/recovery.hpp"
#include "spool/sha256.hpp"
#include "spool/status.hpp"

namespace {

using ringmail::spool::FoldedMessage;
using ringmail::spool::MessageFold;
using ringmail::spool::MessageView;
using ringmail::spool::RcptFate;
using ringmail::spool::RcptState;
using ringmail::spool::RecoveredMessage;
using ringmail::spool::RecoveryStats;
using ringmail::spool::Status;
using ringmail::spool::StatusEffect;

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

// The fields of one message copy, without the closing brace (json_line adds the states).
std::string json_head(const RecoveredMessage& r) {
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
    out += ",\"offset\":" + std::to_string(r.offset);
    return out;
}

// ---- Recipient states: one core directory folded (spool/lifecycle.hpp) ----------------------

// The texts of the status that set a recipient's state (views die with the scan's buffers).
struct Reply {
    std::string remote;
    std::string reply;
    uint64_t log_index = 0;  // where the status lies in its core's log (see CoreScan)
};

// What a command keeps of a message: its rendered latest copy, and a reply per recipient.
struct Entry {
    std::string head;                    // set by the command's render function
    std::vector<std::string> addresses;  // for `status` only
    std::vector<Reply> replies;
    uint64_t log_index = 0;  // of the latest copy
};

struct CoreScan {
    MessageFold fold;
    std::unordered_map<uint64_t, Entry> entries;
    // Records (message copies and statuses) seen so far: a record's log_index is its rank in
    // the core's log, which tells whether one record was made durable before another.
    uint64_t records = 0;
};

using RenderFn = std::function<void(const RecoveredMessage&, Entry&)>;

// Scans one core directory; each copy of a message replaces what `render` made of the previous
// one (rule F1), and a status that sets a recipient's state keeps its texts.
bool scan_core(const std::string& core_dir, const RenderFn& render, CoreScan& scan,
               RecoveryStats& stats, std::string* error) {
    const auto on_message = [&](const RecoveredMessage& r) {
        const auto rcpts = static_cast<uint32_t>(r.message->rcpts.size());
        scan.fold.message(r.message->id, {r.segment_seq, r.offset, r.record_bytes}, rcpts);
        Entry& e = scan.entries[r.message->id];
        e.replies.resize(rcpts);
        e.log_index = scan.records++;
        render(r, e);
    };
    const auto on_status = [&](const Status& st, uint64_t) {
        const uint64_t at = scan.records++;
        if (scan.fold.status(st) != StatusEffect::changed) return;
        scan.entries[st.message_id].replies[st.rcpt] = {std::string(st.remote),
                                                        std::string(st.reply), at};
    };
    return ringmail::spool::recover_dir(core_dir, "", on_message, on_status, stats, error);
}

// Every core directory, in order: `emit` sees each core's messages in log order.
bool scan_cores(const std::string& spool_dir, const RenderFn& render,
                const std::function<void(const CoreScan&)>& emit, RecoveryStats& stats) {
    std::string error;
    std::vector<uint32_t> cores;
    bool ok = list_cores(spool_dir, cores, &error);
    for (size_t i = 0; ok && i < cores.size(); ++i) {
        CoreScan scan;
        ok = scan_core(ringmail::spool::core_dir_path(spool_dir, cores[i]), render, scan, stats,
                       &error);
        if (ok) emit(scan);
    }
    if (!ok) std::fprintf(stderr, "ringmail-spool: %s\n", error.c_str());
    return ok;
}

const char* state_name(const RcptState& r) {
    switch (r.fate) {
        case RcptFate::delivered:
            return "delivered";
        case RcptFate::bounced:
            return "bounced";
        case RcptFate::expired:
            return "expired";
        case RcptFate::pending:
            break;
    }
    return r.deferred ? "deferred" : "pending";
}

bool has_status(const RcptState& r) {
    return r.fate != RcptFate::pending || r.deferred;
}

std::string json_rcpt_state(const RcptState& r, const Reply& reply) {
    std::string out = "{\"state\":\"" + std::string(state_name(r)) + "\"";
    out += ",\"attempts\":" + std::to_string(r.attempts);
    if (has_status(r)) out += ",\"at_unix_us\":" + std::to_string(r.at_unix_us);
    if (r.fate == RcptFate::pending && r.deferred)
        out += ",\"next_attempt_unix_us\":" + std::to_string(r.next_attempt_unix_us);
    if (has_status(r)) {
        out += ",\"remote\":" + json_string(reply.remote);
        out += ",\"reply\":" + json_string(reply.reply);
        out += ",\"log_index\":" + std::to_string(reply.log_index);
    }
    return out + "}";
}

// One JSON line: the latest copy's fields, how many copies the log holds, and the states.
std::string json_line(const FoldedMessage& m, const Entry& e) {
    std::string out = e.head;
    out += ",\"copies\":" + std::to_string(m.copies);
    out += ",\"log_index\":" + std::to_string(e.log_index);
    out += ",\"rcpt_states\":[";
    for (size_t i = 0; i < m.rcpts.size(); ++i) {
        if (i > 0) out += ',';
        out += json_rcpt_state(m.rcpts[i], e.replies[i]);
    }
    return out + "]}\n";
}

void render_json(const RecoveredMessage& r, Entry& e) {
    e.head = json_head(r);
}

void print_summary(const RecoveryStats& s) {
    std::fprintf(stderr,
                 "%" PRIu64 " messages in %" PRIu64 " segments, %" PRIu64 " torn tails, %" PRIu64
                 " corrupt records\n",
                 s.messages, s.segments, s.torn_tails, s.quarantined);
}

// "id  bytes  sender  N rcpts" of the latest copy; cmd_list adds "  P/N pending".
void render_list(const RecoveredMessage& r, Entry& e) {
    const MessageView& m = *r.message;
    const std::string from = m.mail_from.empty() ? "<>" : std::string(m.mail_from);
    char counts[64];
    std::snprintf(counts, sizeof counts, "  %zu  ", m.body.size());
    e.head = queue_id(m.id) + counts + from + "  " + std::to_string(m.rcpts.size()) +
             (m.rcpts.size() == 1 ? " rcpt" : " rcpts");
}

std::string list_line(const FoldedMessage& m, const Entry& e) {
    return e.head + "  " + std::to_string(m.pending_count()) + "/" +
           std::to_string(m.rcpts.size()) + " pending\n";
}

int cmd_list(const std::string& spool_dir) {
    RecoveryStats stats;
    const bool ok = scan_cores(
        spool_dir, render_list,
        [](const CoreScan& scan) {
            for (const FoldedMessage* m : scan.fold.in_log_order())
                write_all(list_line(*m, scan.entries.at(m->id)));
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
    const bool ok = scan_cores(
        spool_dir, render_json,
        [](const CoreScan& scan) {
            for (const FoldedMessage* m : scan.fold.in_log_order())
                write_all(json_line(*m, scan.entries.at(m->id)));
        },
        stats);
    return ok ? 0 : exit_io_error;
}

// "<rcpt> state attempts=N [next_attempt_unix_us=T] [remote=R] [reply: text]"
std::string status_line(std::string_view address, const RcptState& r, const Reply& reply) {
    std::string out = "<" + std::string(address) + "> " + state_name(r);
    out += " attempts=" + std::to_string(r.attempts);
    if (r.fate == RcptFate::pending && r.deferred)
        out += " next_attempt_unix_us=" + std::to_string(r.next_attempt_unix_us);
    if (!reply.remote.empty()) out += " remote=" + reply.remote;
    if (has_status(r)) out += " reply: " + reply.reply;
    return out + "\n";
}

std::string status_text(const FoldedMessage& m, const Entry& e) {
    std::string out = "id: " + queue_id(m.id) + "\n";
    out += "segment: " + std::to_string(m.latest.segment_seq) + "\n";
    out += "offset: " + std::to_string(m.latest.offset) + "\n";
    out += "copies: " + std::to_string(m.copies) + "\n";
    out += "pending: " + std::to_string(m.pending_count()) + "/" + std::to_string(m.rcpts.size()) +
           "\n";
    for (size_t i = 0; i < m.rcpts.size(); ++i)
        out += status_line(e.addresses[i], m.rcpts[i], e.replies[i]);
    return out;
}

int cmd_status(const std::string& spool_dir, const std::string& id_text) {
    const std::optional<uint64_t> id = parse_queue_id(id_text);
    if (!id) {
        std::fprintf(stderr, "ringmail-spool: not a queue id: %s\n", id_text.c_str());
        return exit_not_found;
    }
    // Only the asked message keeps its addresses; the fold still sees every record.
    const auto render = [&](const RecoveredMessage& r, Entry& e) {
        if (r.message->id != *id) return;
        e.addresses.clear();
        for (const auto& rcpt : r.message->rcpts)
            e.addresses.emplace_back(rcpt.address);
    };
    bool found = false;
    RecoveryStats stats;
    const bool ok = scan_cores(
        spool_dir, render,
        [&](const CoreScan& scan) {
            const FoldedMessage* m = scan.fold.find(*id);
            if (m == nullptr || found) return;
            found = true;
            write_all(status_text(*m, scan.entries.at(*id)));
        },
        stats);
    if (!ok) return exit_io_error;
    if (!found) {
        std::fprintf(stderr, "ringmail-spool: no message %s\n", queue_id(*id).c_str());
        return exit_not_found;
    }
    return 0;
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

// The unit tests include this file for its functions, with their own main.
#ifndef RINGMAIL_SPOOL_TOOL_NO_MAIN
int main(int argc, char** argv) {
    CLI::App app{"ringmail-spool: read-only inspection of a ringmail spool"};
    app.require_subcommand(1);
    app.fallthrough();  // --spool-dir is accepted before or after the subcommand
    std::string spool_dir = "./var/spool";
    app.add_option("--spool-dir", spool_dir, "spool directory (holds core-<N>/)")
        ->capture_default_str();

    std::string id_text;
    CLI::App* list =
        app.add_subcommand("list", "one line per message: id, bytes, sender, rcpts, pending");
    CLI::App* show = app.add_subcommand("show", "envelope and body of one message");
    show->add_option("id", id_text, "queue id (16 hex digits)")->required();
    CLI::App* body = app.add_subcommand("body", "the stored body bytes of one message");
    body->add_option("id", id_text, "queue id (16 hex digits)")->required();
    CLI::App* json = app.add_subcommand("json", "one JSON object per message, with rcpt_states");
    CLI::App* status = app.add_subcommand("status", "each recipient's state and last reply");
    status->add_option("id", id_text, "queue id (16 hex digits)")->required();
    CLI::App* verify = app.add_subcommand("verify", "check every record; exit 1 if any is corrupt");

    CLI11_PARSE(app, argc, argv);

    if (list->parsed()) return cmd_list(spool_dir);
    if (show->parsed()) return cmd_one(spool_dir, id_text, true);
    if (body->parsed()) return cmd_one(spool_dir, id_text, false);
    if (json->parsed()) return cmd_json(spool_dir);
    if (status->parsed()) return cmd_status(spool_dir, id_text);
    if (verify->parsed()) return cmd_verify(spool_dir);
    return exit_io_error;  // unreachable: require_subcommand(1)
}
#endif  // RINGMAIL_SPOOL_TOOL_NO_MAIN
