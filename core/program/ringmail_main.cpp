// ringmail_main.cpp — the ringmail daemon: flags, spool recovery, listeners, one engine thread
// per core, and the graceful stop on SIGTERM/SIGINT.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <unordered_map>

#include "core/base/config.hpp"
#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "net/inbound/listener.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"
#include "tls/auth.hpp"
#include "tls/tls_session.hpp"

using namespace ringmail;

namespace {

bool make_dirs(const std::string& path) {
    std::string cur;
    for (size_t i = 0; i <= path.size(); i++) {
        if (i == path.size() || (path[i] == '/' && i > 0)) {
            cur = path.substr(0, i);
            if (mkdir(cur.c_str(), 0750) != 0 && errno != EEXIST) return false;
        }
    }
    return true;
}

// Core directories present in the spool (core-N), whatever --threads was when they were made.
std::vector<uint32_t> core_dirs(const std::string& spool) {
    std::vector<uint32_t> out;
    DIR* d = opendir(spool.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        unsigned n;
        char tail;
        if (sscanf(e->d_name, "core-%u%c", &n, &tail) == 1) out.push_back(n);
    }
    closedir(d);
    return out;
}

// Segment sequence numbers in a core directory, ascending.
std::vector<uint64_t> segment_seqs(const std::string& dir) {
    std::vector<uint64_t> out;
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        unsigned long long seq;
        char tail[8];
        if (strlen(e->d_name) == 20 && sscanf(e->d_name, "%16llx%4s", &seq, tail) == 2 &&
            strcmp(tail, ".seg") == 0)
            out.push_back(seq);
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

struct Recovered {
    std::vector<Queue> queues;
    std::vector<std::vector<RecoveredQueueEntry>> pending;  // per core: messages not yet final
    std::vector<uint64_t> next_segment_seq;                 // per core directory we write to
    uint64_t max_id = 0;
};

bool recover(const Config& cfg, Recovered& out) {
    auto t0 = std::chrono::steady_clock::now();
    out.queues.resize(cfg.threads);
    out.pending.resize(cfg.threads);
    out.next_segment_seq.assign(cfg.threads, 1);
    // Where each recovered message went (core, index), and every status record seen: status
    // records may sit in another directory than their message (a core that adopted a
    // directory writes them in its own), so they are applied once everything is read.
    std::unordered_map<uint64_t, std::pair<uint32_t, uint32_t>> where;
    struct SeenStatus {
        uint64_t id;
        uint16_t rcpt;
        spool::StatusState state;
        uint16_t attempts;
        int64_t at_unix_us, next_attempt_unix_us;
    };
    std::vector<SeenStatus> statuses;
    std::string quarantine = cfg.spool_dir + "/quarantine";
    if (!make_dirs(quarantine)) {
        LOG_ERROR("cannot create %s: %s", quarantine.c_str(), strerror(errno));
        return false;
    }
    spool::RecoveryStats total;
    for (uint32_t dir : core_dirs(cfg.spool_dir)) {
        // A directory of a core that no longer runs (fewer --threads than before) is adopted
        // by core dir % threads: its messages are queued there; new segments go to the
        // adopting core's own directory.
        Queue& q = out.queues[dir % cfg.threads];
        spool::RecoveryStats st;
        std::string err;
        bool ok = spool::recover_dir(
            spool::core_dir_path(cfg.spool_dir, dir), quarantine,
            [&](const spool::RecoveredMessage& m) {
                QueueEntry e;
                e.id = m.message->id;
                e.segment_seq = m.segment_seq;
                e.offset = m.offset;
                e.record_bytes = static_cast<uint32_t>(m.record_bytes);
                e.dir = static_cast<uint16_t>(dir);
                e.rcpts = static_cast<uint16_t>(std::min<size_t>(m.message->rcpts.size(), 65535));
                q.add(e);
                uint32_t core = dir % cfg.threads;
                if (auto it = where.find(e.id); it != where.end()) {
                    // Another copy of a message seen before (compaction copies it forward into
                    // its core's own directory): the copy in a running core's own directory,
                    // and within one directory the later segment, is the one to use.
                    RecoveredQueueEntry& prev = out.pending[it->second.first][it->second.second];
                    bool own_new = dir < cfg.threads, own_old = prev.entry.dir < cfg.threads;
                    if ((own_new && !own_old) || (own_new == own_old && dir == prev.entry.dir &&
                                                  e.segment_seq > prev.entry.segment_seq))
                        prev.entry = e;
                    return;
                }
                RecoveredQueueEntry r;
                r.entry = e;
                r.arrival_unix_us = m.message->arrival_unix_us;
                for (const auto& rc : m.message->rcpts) {
                    size_t at = rc.address.rfind('@');
                    r.rcpts.push_back(RecoveredRcpt{std::string(at == std::string_view::npos
                                                                    ? std::string_view()
                                                                    : rc.address.substr(at + 1))});
                }
                where[e.id] = {core, static_cast<uint32_t>(out.pending[core].size())};
                out.pending[core].push_back(std::move(r));
            },
            [&](const spool::Status& s, uint64_t) {
                statuses.push_back(SeenStatus{s.message_id, s.rcpt, s.state, s.attempts,
                                              s.at_unix_us, s.next_attempt_unix_us});
            },
            st, &err);
        if (!ok) {
            LOG_ERROR("spool recovery of core-%u failed: %s", dir, err.c_str());
            return false;
        }
        if (dir < cfg.threads) out.next_segment_seq[dir] = st.max_segment_seq + 1;
        out.max_id = std::max(out.max_id, st.max_message_id);
        total.segments += st.segments;
        total.messages += st.messages;
        total.bytes += st.bytes;
        total.torn_tails += st.torn_tails;
        total.quarantined += st.quarantined;
    }
    // Apply the statuses in the order they were written; a final state is never undone.
    std::stable_sort(
        statuses.begin(), statuses.end(),
        [](const SeenStatus& a, const SeenStatus& b) { return a.at_unix_us < b.at_unix_us; });
    for (const SeenStatus& s : statuses) {
        auto it = where.find(s.id);
        if (it == where.end()) continue;  // its message is gone (its segment was deleted)
        RecoveredQueueEntry& r = out.pending[it->second.first][it->second.second];
        if (s.rcpt >= r.rcpts.size()) continue;
        RecoveredRcpt& rc = r.rcpts[s.rcpt];
        if (rc.state != 0) continue;
        rc.attempts = s.attempts;
        if (s.state == spool::StatusState::delivered) rc.state = 1;
        if (s.state == spool::StatusState::bounced || s.state == spool::StatusState::expired)
            rc.state = 2;
        if (s.state == spool::StatusState::deferred)
            rc.next_attempt_unix_us = s.next_attempt_unix_us;
    }
    uint64_t final_messages = 0;
    for (auto& v : out.pending) {
        size_t before = v.size();
        v.erase(std::remove_if(v.begin(), v.end(),
                               [](const RecoveredQueueEntry& r) {
                                   for (const auto& rc : r.rcpts)
                                       if (rc.state == 0) return false;
                                   return true;
                               }),
                v.end());
        final_messages += before - v.size();
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    LOG_INFO(
        "spool recovered: %llu messages in %llu segments (%llu bytes), %llu torn tails "
        "dropped, %llu corrupt records quarantined, %llu already delivered or bounced, in %.3f s",
        static_cast<unsigned long long>(total.messages),
        static_cast<unsigned long long>(total.segments),
        static_cast<unsigned long long>(total.bytes),
        static_cast<unsigned long long>(total.torn_tails),
        static_cast<unsigned long long>(total.quarantined),
        static_cast<unsigned long long>(final_messages), secs);
    return true;
}

int64_t realtime_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

int main(int argc, char** argv) {
    Config cfg;
    if (int r = parse_config(argc, argv, cfg); r != 0) return r - 1;
    log::set_level(cfg.log_level.c_str());

    // Signals are taken by sigwait in this thread only; reactor threads inherit the mask.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    signal(SIGPIPE, SIG_IGN);

    Shared shared;
    shared.config = &cfg;
    std::vector<smtp::Cidr> nets;
    for (const auto& n : cfg.relay_networks) {
        auto c = smtp::Cidr::parse(n);
        if (!c) {
            fprintf(stderr, "ringmail: --relay-networks %s: not an address or CIDR\n", n.c_str());
            return 2;
        }
        nets.push_back(*c);
    }
    shared.policy = smtp::RelayPolicy(nets, cfg.relay_domains);
    shared.settings.hostname = cfg.hostname;
    shared.settings.message_size_max_bytes = cfg.message_size_max_bytes;
    shared.settings.recipients_max = cfg.recipients_max;
    shared.settings.junk_commands_max = cfg.junk_commands_max;
    shared.settings.relay = &shared.policy;

    // TLS and AUTH: loaded once here, read-only for every core.
    std::unique_ptr<tls::TlsContext> tls_server;
    tls::AuthUsers auth_users;
    if (!cfg.tls_cert_file.empty()) {
        std::string tls_error;
        tls_server = tls::TlsContext::server({cfg.tls_cert_file, cfg.tls_key_file}, &tls_error);
        if (!tls_server) {
            LOG_ERROR("TLS: %s", tls_error.c_str());
            return 1;
        }
        shared.tls_server = tls_server.get();
        shared.settings.starttls_available = true;
    }
    if (!cfg.auth_users_file.empty()) {
        std::string auth_error;
        if (!auth_users.load_file(cfg.auth_users_file, &auth_error)) {
            LOG_ERROR("--auth-users: %s", auth_error.c_str());
            return 1;
        }
        shared.auth_users = &auth_users;
        shared.settings.auth_available = true;
        LOG_INFO("AUTH: %zu users from %s", auth_users.size(), cfg.auth_users_file.c_str());
    }

    if (!make_dirs(cfg.spool_dir)) {
        LOG_ERROR("cannot create spool directory %s: %s", cfg.spool_dir.c_str(), strerror(errno));
        return 1;
    }
    // One process per spool: a second one would append to the same logs.
    std::string lock_path = cfg.spool_dir + "/lock";
    int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        LOG_ERROR("spool %s is in use by another ringmail (%s)", cfg.spool_dir.c_str(),
                  strerror(errno));
        return 1;
    }
    if (!cfg.fsync) LOG_WARN("--no-fsync: messages are acknowledged before they are durable");
    Recovered rec;
    if (!recover(cfg, rec)) return 1;

    std::string error;
    auto listeners = net::open_listeners(cfg.listen, cfg.threads, &error);
    if (listeners.empty()) {
        LOG_ERROR("%s", error.c_str());
        return 1;
    }

    shared.mesh = std::make_unique<ChannelMesh<CoreMsg>>(cfg.threads, cfg.channel_capacity);
    shared.ring_fds.assign(cfg.threads, -1);
    shared.start_barrier = std::make_unique<std::barrier<>>(cfg.threads + 1);

    // Queue ids: core in the low byte, a counter above it that starts past every id already
    // in the spool and past the current time in microseconds, so ids never repeat.
    uint64_t first_counter = std::max<uint64_t>((rec.max_id >> 8) + 1, realtime_us());
    std::vector<int> stop_fds;
    std::vector<std::unique_ptr<Engine>> engines;
    for (uint32_t i = 0; i < cfg.threads; i++) {
        int efd = eventfd(0, EFD_CLOEXEC);
        if (efd < 0) {
            LOG_ERROR("eventfd: %s", strerror(errno));
            return 1;
        }
        stop_fds.push_back(efd);
        EngineStart st;
        st.listen_fds = listeners[i];
        for (const auto& l : cfg.listen)
            st.listen_kinds.push_back(l.kind);
        st.stop_fd = efd;
        st.first_segment_seq = rec.next_segment_seq[i];
        st.first_id_counter = first_counter;
        st.queue = &rec.queues[i];
        st.recovered = &rec.pending[i];
        for (uint32_t dir : core_dirs(cfg.spool_dir)) {
            if (dir % cfg.threads != i) continue;
            st.segments.push_back({static_cast<uint16_t>(dir),
                                   segment_seqs(spool::core_dir_path(cfg.spool_dir, dir))});
        }
        engines.push_back(std::make_unique<Engine>(i, shared, std::move(st)));
    }
    std::vector<int> results(cfg.threads, 0);
    std::vector<std::thread> threads;
    for (uint32_t i = 0; i < cfg.threads; i++)
        threads.emplace_back([&, i] { results[i] = engines[i]->run(); });
    shared.start_barrier->arrive_and_wait();
    if (shared.failed.load() == 0) {
        std::string addrs;
        for (const auto& l : cfg.listen) {
            addrs += " " + l.host + ":" + std::to_string(l.port);
            if (l.kind == ListenerKind::submission) addrs += " (submission)";
            if (l.kind == ListenerKind::smtps) addrs += " (smtps)";
        }
        LOG_INFO("ringmail ready: listening on%s, %u threads, spool %s", addrs.c_str(), cfg.threads,
                 cfg.spool_dir.c_str());
        int sig = 0;
        sigwait(&sigs, &sig);
        LOG_INFO("signal %d: stopping", sig);
    }
    uint64_t one = 1;
    for (int fd : stop_fds) {
        ssize_t w = write(fd, &one, sizeof one);
        (void)w;
    }
    for (auto& t : threads)
        t.join();

    uint64_t commits = 0, messages = 0, failed = 0, accepted = 0, queued = 0;
    for (uint32_t i = 0; i < cfg.threads; i++) {
        const auto& cs = engines[i]->commit_stats();
        commits += cs.commits;
        messages += cs.messages;
        failed += cs.failed;
        accepted += engines[i]->stats().accepted;
        queued += rec.queues[i].size();
    }
    LOG_INFO("stats commits=%llu messages=%llu failed=%llu connections=%llu queued=%llu",
             static_cast<unsigned long long>(commits), static_cast<unsigned long long>(messages),
             static_cast<unsigned long long>(failed), static_cast<unsigned long long>(accepted),
             static_cast<unsigned long long>(queued));
    for (auto& v : listeners)
        for (int fd : v)
            close(fd);
    for (int r : results)
        if (r != 0) return 1;
    return shared.failed.load() == 0 ? 0 : 1;
}
