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
#include "core/program/metrics_server.hpp"
#include "core/program/notify.hpp"
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

// Every spool path --check-config can vouch for without creating anything: an existing
// directory we may write, or the nearest existing parent of one to be made.
bool spool_dir_usable(const std::string& dir, std::string* why) {
    struct stat st {};
    std::string at = dir;
    while (stat(at.c_str(), &st) != 0) {
        if (errno != ENOENT) {
            *why = at == dir ? strerror(errno) : at + ": " + strerror(errno);
            return false;
        }
        const size_t slash = at.find_last_of('/');
        if (slash == std::string::npos) {
            at = ".";
        } else {
            at = slash == 0 ? "/" : at.substr(0, slash);
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        *why = at + ": not a directory";
        return false;
    }
    if (access(at.c_str(), W_OK | X_OK) != 0) {
        *why = at + ": " + strerror(errno);
        return false;
    }
    return true;
}

// Waits for SIGTERM or SIGINT. Under a service manager that asked for a watchdog, wakes up
// twice per period and pings it while every engine's timer has ticked since the last ping: a
// wedged core stops the pings, and the manager restarts the relay.
int wait_for_stop(const sigset_t& sigs, const Notifier& notifier,
                  const std::vector<std::unique_ptr<Engine>>& engines) {
    const uint64_t every_us = notifier.watchdog_interval_us();
    if (every_us == 0) {
        int sig = 0;
        sigwait(&sigs, &sig);
        return sig;
    }
    std::vector<uint64_t> seen(engines.size(), 0);
    for (;;) {
        timespec ts{static_cast<time_t>(every_us / 1000000),
                    static_cast<long>(every_us % 1000000) * 1000};
        const int sig = sigtimedwait(&sigs, nullptr, &ts);
        if (sig > 0) return sig;
        bool alive = true;
        for (size_t i = 0; i < engines.size(); i++) {
            const uint64_t t = engines[i]->ticks();
            if (t == seen[i]) {
                alive = false;
                LOG_WARN("core %zu has not ticked for %llu ms: no watchdog ping", i,
                         static_cast<unsigned long long>(every_us / 1000));
            }
            seen[i] = t;
        }
        if (alive) notifier.send("WATCHDOG=1");
    }
}

}  // namespace

int main(int argc, char** argv) {
    Config cfg;
    if (int r = parse_config(argc, argv, cfg); r != 0) return r - 1;
    log::set_level(cfg.log_level.c_str());
    log::set_format(cfg.log_format == "json" ? log::Format::json : log::Format::text);

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

    if (cfg.check_config) {
        std::string why;
        if (!spool_dir_usable(cfg.spool_dir, &why)) {
            fprintf(stderr, "ringmail: --spool-dir %s: %s\n", cfg.spool_dir.c_str(), why.c_str());
            return 2;
        }
        printf("ringmail: configuration ok\n");
        return 0;
    }
    const Notifier notifier = Notifier::from_environment();
    notifier.send("STATUS=recovering the spool");
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
    shared.metrics = std::make_unique<CoreMetrics[]>(cfg.threads);
    // Bound before the cores start, so a taken port is a start failure like a taken SMTP port.
    MetricsServer metrics;
    if (cfg.metrics_listen) {
        std::string merr;
        if (!metrics.start(*cfg.metrics_listen, shared.metrics.get(), cfg.threads, &merr)) {
            LOG_ERROR("%s", merr.c_str());
            return 1;
        }
        LOG_INFO("metrics on http://%s:%u/metrics", cfg.metrics_listen->host.c_str(),
                 cfg.metrics_listen->port);
    }

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
        st.segments = std::move(rec.segments[i]);
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
        notifier.send("READY=1\nSTATUS=listening on" + addrs +
                      "\nMAINPID=" + std::to_string(getpid()));
        const int sig = wait_for_stop(sigs, notifier, engines);
        LOG_INFO("signal %d: stopping", sig);
        notifier.send("STOPPING=1\nSTATUS=stopping: finishing sessions and commits");
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
