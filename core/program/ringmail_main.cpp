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
#include "core/program/recover.hpp"
#include "net/inbound/listener.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"
#include "tls/auth.hpp"
#include "tls/tls_session.hpp"

using namespace ringmail;

namespace {

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
            // A flag's file that does not work is a usage error, like a value out of range.
            fprintf(stderr, "ringmail: --tls-cert/--tls-key: %s\n", tls_error.c_str());
            return 2;
        }
        shared.tls_server = tls_server.get();
        shared.settings.starttls_available = true;
    }
    if (!cfg.auth_users_file.empty()) {
        std::string auth_error;
        if (!auth_users.load_file(cfg.auth_users_file, &auth_error)) {
            fprintf(stderr, "ringmail: --auth-users: %s\n", auth_error.c_str());
            return 2;
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
    shared.text_arenas.assign(cfg.threads, nullptr);
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
