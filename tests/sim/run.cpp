// run.cpp — one seed: the node's configuration and the run's shape drawn from it, then engine
// lives one after another, each started as the daemon starts (core/program/recover.hpp on the
// spool, then an Engine), each ended by a crash at a random instant or, last, by a graceful stop
// once every client has gone. After every recovery the spool is checked against what the clients
// saw: every 250 is there with exactly the bytes sent, nothing else is there but complete
// messages some client sent.
#include <filesystem>
#include <map>

#include "core/engine/engine.hpp"
#include "core/program/recover.hpp"
#include "spool/recovery.hpp"
#include "tests/sim/client.hpp"
#include "tests/sim/sim.hpp"

namespace ringmail::sim {
namespace {

Config make_config(Rng& r, const Options& o) {
    const std::string spool_dir = o.dir + "/spool";
    Config c;
    c.threads = 1;
    c.spool_dir = spool_dir;
    c.hostname = "mx.sim.test";
    c.relay_networks = {"10.0.0.0/8"};
    c.relay_domains = {"example.net"};
    c.delivery = false;
    c.log_level = "error";
    c.recipients_max = 20;
    c.message_size_max_bytes = 256 << 10;
    c.connections_max = static_cast<uint32_t>(r.range(1, 24));
    c.connections_per_ip_max = r.chance(1, 3) ? static_cast<uint32_t>(r.range(1, 4)) : 200;
    c.commit_window_us = r.chance(1, 3) ? static_cast<uint32_t>(r.range(100, 3000)) : 0;
    c.commit_depth = static_cast<uint32_t>(r.range(1, 4));
    c.ring_entries = r.chance(1, 3) ? 8 : 256;  // a small ring submits from inside handlers
    static const uint32_t kBufBytes[] = {512, 1024, 4096, 16384};
    static const uint32_t kBufCount[] = {4, 16, 64, 256};
    c.recv_buffer_bytes = kBufBytes[r.below(4)];
    c.recv_buffer_count = kBufCount[r.below(4)];
    if (o.recv_buffer_count != 0) c.recv_buffer_count = o.recv_buffer_count;  // drawn all the same
    // Any record must fit an empty segment (core/program/config.cpp checks the same relation).
    const uint64_t record_max =
        c.message_size_max_bytes +
        uint64_t{c.recipients_max} * (limits::path_max_bytes + limits::mail_params_max_bytes + 8) +
        (64u << 10);
    c.segment_bytes = record_max + r.range(0, 1 << 20);
    c.staging_memory_max_bytes = c.message_size_max_bytes + (1u << 20) + r.range(0, 4 << 20);
    return c;
}

// What the spool holds now, read with the real recovery scanner, against what clients saw.
void verify_spool(World& w, const Config& cfg, const std::map<std::string, size_t>& by_token,
                  uint32_t life) {
    std::map<std::string, std::string> recovered_ids;  // queue id → token
    std::map<std::string, uint32_t> copies;            // token → records
    std::string error;
    spool::RecoveryStats st;
    const std::string where = " (after life " + std::to_string(life) + ")";
    for (uint32_t dir : core_dirs(cfg.spool_dir)) {
        const bool ok = spool::recover_dir(
            spool::core_dir_path(cfg.spool_dir, dir), "",
            [&](const spool::RecoveredMessage& rm) {
                const spool::MessageView& m = *rm.message;
                char idhex[16];
                smtp::format_queue_id(m.id, idhex);
                const std::string id(idhex, 16);
                const std::string_view body = m.body;
                const size_t t = body.find("X-Sim-Token: ");
                const size_t e = t == std::string_view::npos ? t : body.find("\r\n", t);
                if (e == std::string_view::npos)
                    throw Failure("recovered message " + id + " was sent by no client" + where);
                const std::string token(body.substr(t + 13, e - t - 13));
                auto it = by_token.find(token);
                if (it == by_token.end())
                    throw Failure("recovered message " + id + " has an unknown token " + token);
                const SentMessage& s = w.messages[it->second];
                if (!s.complete)
                    throw Failure("recovered message " + id + " (" + token +
                                  ") was never completely sent: a half-written message" + where);
                const std::string_view head = body.substr(0, t);
                if (!head.starts_with("Received: ") || !head.ends_with("\r\n") ||
                    body.substr(t) != s.content)
                    throw Failure("recovered message " + id + " (" + token +
                                  ") does not hold the bytes its client sent" + where);
                std::vector<std::string> want;
                for (size_t i = 0; i < s.rcpts.size(); i++)
                    if (s.rcpt_ok[i]) want.push_back(s.rcpts[i]);
                // Acknowledged: the client read every RCPT reply before the 250, so the stored
                // recipients are exactly those it saw accepted. Otherwise some replies may be
                // unread: the stored ones are sent ones, in order, among them every one seen
                // accepted.
                bool env_ok = m.mail_from == s.from;
                if (!s.acked_id.empty()) {
                    env_ok = env_ok && m.rcpts.size() == want.size();
                    for (size_t i = 0; env_ok && i < want.size(); i++)
                        env_ok = m.rcpts[i].address == want[i];
                } else {
                    size_t k = 0;
                    for (size_t i = 0; env_ok && i < s.rcpts.size(); i++) {
                        if (k < m.rcpts.size() && m.rcpts[k].address == s.rcpts[i])
                            k++;
                        else if (s.rcpt_ok[i])
                            env_ok = false;
                    }
                    env_ok = env_ok && k == m.rcpts.size();
                }
                if (!env_ok) {
                    std::string got = "<" + std::string(m.mail_from) + ">",
                                sent = "<" + s.from + ">";
                    for (const auto& rc : m.rcpts)
                        got += " " + std::string(rc.address);
                    for (size_t i = 0; i < s.rcpts.size(); i++)
                        sent += " " + s.rcpts[i] + (s.rcpt_ok[i] ? "" : "(refused)");
                    throw Failure("recovered message " + id + " (" + token +
                                  ") has another envelope than its client sent" + where +
                                  ": stored " + got + ", sent " + sent);
                }
                if (!s.acked_id.empty() && s.acked_id != id)
                    throw Failure("message " + token + " was acknowledged as " + s.acked_id +
                                  " but recovered as " + id + where);
                recovered_ids[id] = token;
                copies[token]++;
            },
            st, &error);
        if (!ok) throw Failure("recovery scan failed: " + error);
    }
    for (const SentMessage& s : w.messages) {
        if (s.acked_id.empty()) continue;
        auto it = recovered_ids.find(s.acked_id);
        if (it == recovered_ids.end() || it->second != s.token)
            throw Failure("message " + s.token + " acknowledged as " + s.acked_id +
                          " is not in the recovered spool" + where);
    }
    w.stats.recovered = recovered_ids.size();
    w.stats.unacked_recovered = 0;
    for (const auto& [token, n] : copies) {
        if (w.messages[by_token.at(token)].acked_id.empty()) w.stats.unacked_recovered++;
        w.trace(0x4ec, n, token.size());
    }
    for (const auto& [id, token] : recovered_ids)
        w.trace(0x1d, std::hash<std::string>{}(id));
}

}  // namespace

void run_seed(const Options& o, RunStats& stats, uint64_t& digest) {
    World w(o);
    install_sim_hooks(w);
    set_sim_backend(&w);
    struct Unset {
        ~Unset() { set_sim_backend(nullptr); }
    } unset;
    Rng& r = w.rng;
    const Config cfg = make_config(r, o);
    std::vector<smtp::Cidr> nets;
    for (const auto& n : cfg.relay_networks)
        nets.push_back(*smtp::Cidr::parse(n));
    smtp::RelayPolicy policy(nets, cfg.relay_domains);

    // The run's shape.
    w.clients_total = static_cast<uint32_t>(r.range(1, 40));
    w.arrival_gap_max_us = r.chance(1, 4) ? r.range(100'000, 3'000'000) : r.range(0, 20'000);
    w.next_arrival_us = w.now_us() + r.range(0, 5'000);
    w.trusted_only = r.chance(1, 4);
    w.batch_bias = static_cast<uint32_t>(r.range(1, 4));
    if (r.chance(1, 3)) w.fault_rate_ppm = static_cast<uint32_t>(r.range(2'000, 60'000));
    if (r.chance(1, 6)) w.slow_disk_ppm = 20'000;
    const uint64_t span = w.clients_total * (w.arrival_gap_max_us / 2 + 50'000) + 2'000'000;
    if (r.chance(1, 2)) {
        const uint64_t n = r.range(1, 3);
        for (uint64_t i = 0; i < n; i++)
            w.crash_at_us.push_back(w.now_us() + r.range(0, span));
        std::sort(w.crash_at_us.begin(), w.crash_at_us.end());
    }
    if (r.chance(1, 4)) {
        const uint64_t n = r.range(1, 2);
        for (uint64_t i = 0; i < n; i++)
            w.restart_at_us.push_back(w.now_us() + r.range(0, span));
        std::sort(w.restart_at_us.begin(), w.restart_at_us.end());
    }
    w.trace(cfg.connections_max, cfg.recv_buffer_count, cfg.segment_bytes);

    std::map<std::string, size_t> by_token;
    for (uint32_t life = 0;; life++) {
        if (!make_dirs(cfg.spool_dir)) throw Failure("cannot create " + cfg.spool_dir);
        Recovered rec;
        if (!recover(cfg, rec))
            throw Failure("recovery failed at the start of life " + std::to_string(life));
        for (size_t i = 0; i < w.messages.size(); i++)
            by_token[w.messages[i].token] = i;
        verify_spool(w, cfg, by_token, life);
        w.disk.new_epoch();

        // Leaked when the engine is abandoned at a crash, as a dead process's memory is.
        auto* shared = new Shared;
        shared->config = &cfg;
        shared->settings.hostname = cfg.hostname;
        shared->settings.message_size_max_bytes = cfg.message_size_max_bytes;
        shared->settings.recipients_max = cfg.recipients_max;
        shared->settings.junk_commands_max = cfg.junk_commands_max;
        shared->policy = policy;
        shared->settings.relay = &shared->policy;
        shared->mesh = std::make_unique<ChannelMesh<CoreMsg>>(1, cfg.channel_capacity);
        shared->ring_fds.assign(1, -1);
        shared->text_arenas.assign(1, nullptr);
        shared->start_barrier = std::make_unique<std::barrier<>>(1);
        auto* recovered = new Recovered(std::move(rec));
        EngineStart st;
        const int listen_fd = w.new_fd();
        const int stop_fd = w.new_fd();
        st.listen_fds = {listen_fd};
        st.listen_kinds = {ListenerKind::plain};
        st.stop_fd = stop_fd;
        st.first_segment_seq = recovered->next_segment_seq[0];
        st.first_id_counter =
            std::max<uint64_t>((recovered->max_id >> 8) + 1, uint64_t(w.realtime_us()));
        st.queue = &recovered->queues[0];
        st.recovered = &recovered->pending[0];
        auto* engine = new Engine(0, *shared, std::move(st));
        w.begin_epoch(engine, listen_fd, stop_fd);
        int rc = 0;
        try {
            rc = engine->run();
        } catch (const Crash&) {
            w.crash();
            continue;  // the next life starts on what the disk kept
        }
        if (rc != 0) throw Failure("the engine exited with " + std::to_string(rc));
        delete engine;
        delete recovered;
        delete shared;
        w.end_epoch();
        if (w.disk.open_fds() != 0)
            throw Failure(std::to_string(w.disk.open_fds()) +
                          " file descriptors left open after a graceful stop");
        if (!w.final_stop()) continue;  // a restart: the next life takes over the spool
        if (!w.all_clients_done()) throw Failure("the engine stopped while clients were active");
        // The last check, on the spool the stopped engine left.
        Recovered last;
        if (!recover(cfg, last)) throw Failure("recovery failed after the graceful stop");
        for (size_t i = 0; i < w.messages.size(); i++)
            by_token[w.messages[i].token] = i;
        verify_spool(w, cfg, by_token, life + 1);
        break;
    }
    stats = w.stats;
    digest = w.digest();
}

}  // namespace ringmail::sim
