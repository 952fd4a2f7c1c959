// run.cpp — one seed: the node's configuration and the run's shape drawn from it, then engine
// lives one after another, each started as the daemon starts (core/program/recover.hpp on the
// spool, then an Engine), each ended by a crash at a random instant or, last, by a graceful stop
// once every client has gone. After every recovery the spool is checked against what the clients
// saw: every 250 is there with exactly the bytes sent, nothing else is there but complete
// messages some client sent (and DSNs).
//
// With delivery (most seeds), the run goes on after the clients until the queue is empty or a
// drain time has passed, and then every acknowledged message's recipients must each be
// delivered (taken by a simulated MX server), bounced with a DSN to a non-null sender, or
// still queued; copies beyond one are counted, and fail the run unless a crash, a restart or
// a reply lost with its connection explains them. A segment delivery deletes must hold only
// messages that are final or have a later copy (check_unlinked).
#include <filesystem>
#include <map>
#include <set>

#include "core/engine/engine.hpp"
#include "core/program/recover.hpp"
#include "spool/recovery.hpp"
#include "tests/sim/client.hpp"
#include "tests/sim/sim.hpp"

namespace ringmail::sim {
namespace {

// Delivery's settings for a run: retries, lifetimes and timeouts short enough that messages
// reach their final states within the run's simulated time. Drawn from their own generator,
// so that a seed's clients and faults are those it had before delivery was simulated.
void delivery_config(Rng& r, Config& c) {
    c.delivery = true;
    c.outbound_tls = "none";
    c.retry_first_ms = r.range(300, 4'000);
    c.retry_max_ms = c.retry_first_ms * r.range(1, 8);
    c.queue_lifetime_ms = r.range(5'000, 90'000);
    c.compact_after_ms = r.range(3'000, 60'000);
    c.timeout_connect_ms = static_cast<uint32_t>(r.range(500, 10'000));
    c.outbound_timeout_scale_percent = static_cast<uint32_t>(r.range(1, 3));
    c.outbound_idle_ms = static_cast<uint32_t>(r.range(10, 3'000));
    c.connections_per_destination_max = static_cast<uint32_t>(r.range(1, 4));
    c.messages_per_connection_max = static_cast<uint32_t>(r.range(1, 20));
    c.recipients_per_transaction_max = static_cast<uint32_t>(r.chance(1, 3) ? r.range(1, 3) : 100);
    c.active_queue_max = static_cast<uint32_t>(r.chance(1, 3) ? r.range(1, 8) : 20'000);
    c.outbound_connections_max = static_cast<uint32_t>(r.range(1, 16));
    c.destinations_max = static_cast<uint32_t>(r.chance(1, 3) ? r.range(1, 3) : 10'000);
}

// --- what delivery did, against what the spool and the MX servers say -----------------------

// One message record as a scan of the spool found it.
struct Found {
    std::string token;  // X-Sim-Token of a client's message; of the bounced one for a DSN
    bool dsn = false;
    std::vector<std::string> rcpts;  // a DSN: its Final-Recipients
    uint64_t segment_seq = 0;
    uint16_t dir = 0;
};
struct Scan {
    std::map<std::string, std::vector<Found>> messages;  // by queue id: every copy
    std::map<std::pair<std::string, uint16_t>, spool::StatusState> status;  // the last
};

std::string id_text(uint64_t id) {
    char t[16];
    smtp::format_queue_id(id, t);
    return std::string(t, 16);
}

std::string value_after(std::string_view text, std::string_view name, size_t from = 0) {
    const size_t at = text.find(name, from);
    if (at == std::string_view::npos) return "";
    const size_t b = at + name.size();
    const size_t e = text.find("\r\n", b);
    return std::string(text.substr(b, e == std::string_view::npos ? e : e - b));
}

// Every record of the spool as its files hold it now (statuses included), read-only.
Scan scan_spool(const Config& cfg) {
    Scan sc;
    std::string error;
    spool::RecoveryStats st;
    for (uint32_t dir : core_dirs(cfg.spool_dir)) {
        const bool ok = spool::recover_dir(
            spool::core_dir_path(cfg.spool_dir, dir), "",
            [&](const spool::RecoveredMessage& rm) {
                const spool::MessageView& m = *rm.message;
                Found f;
                f.segment_seq = rm.segment_seq;
                f.dir = static_cast<uint16_t>(dir);
                f.dsn = m.protocol == "LOCAL";
                f.token = value_after(m.body, "X-Sim-Token: ");
                if (f.dsn) {
                    const std::string_view b = m.body;
                    for (size_t at = b.find("Final-Recipient: rfc822; "); at != b.npos;
                         at = b.find("Final-Recipient: rfc822; ", at + 1))
                        f.rcpts.push_back(value_after(b, "Final-Recipient: rfc822; ", at));
                } else {
                    for (const auto& rc : m.rcpts)
                        f.rcpts.emplace_back(rc.address);
                }
                sc.messages[id_text(m.id)].push_back(std::move(f));
            },
            [&](const spool::Status& s, uint64_t) {
                sc.status[{id_text(s.message_id), s.rcpt}] = s.state;
            },
            st, &error);
        if (!ok) throw Failure("spool scan failed: " + error);
    }
    return sc;
}

bool final_state(spool::StatusState s) {
    return s == spool::StatusState::delivered || s == spool::StatusState::bounced ||
           s == spool::StatusState::expired;
}

// What left the spool with the segments delivery deleted: each message final then.
struct Ledger {
    std::map<std::string, std::vector<spool::StatusState>> gone;  // by queue id
    std::map<std::string, DsnSeen> dsns;                          // every DSN ever seen stored
    std::map<std::string, std::string> dropped;  // deleted while not final: queue id → segment
};

void note_dsns(const Scan& sc, Ledger& led) {
    for (const auto& [id, copies] : sc.messages)
        for (const Found& f : copies)
            if (f.dsn && !led.dsns.contains(id)) led.dsns[id] = DsnSeen{id, f.token, f.rcpts};
}

// The engine is about to delete a segment: every acknowledged message in it must be final, or
// have a copy in a later segment (compaction moved it). (A record whose commit failed may be
// in it too: its client got no 250, and it is not the engine's to deliver.)
void check_unlinked(World& w, const Config& cfg, Ledger& led, const std::string& path) {
    const size_t slash = path.rfind('/');
    const uint64_t seq = strtoull(path.c_str() + slash + 1, nullptr, 16);
    const std::string dir_path = path.substr(0, slash);
    const Scan sc = scan_spool(cfg);
    note_dsns(sc, led);
    // Its client may read the 250 only later: every message is judged, the acknowledged ones
    // at the end (verify_spool, check_delivery).
    for (const auto& [id, copies] : sc.messages) {
        bool here = false, elsewhere = false;
        const Found* f = nullptr;
        for (const Found& c : copies) {
            const bool same =
                c.segment_seq == seq && spool::core_dir_path(cfg.spool_dir, c.dir) == dir_path;
            (same ? here : elsewhere) = true;
            if (same) f = &c;
        }
        if (!here) continue;
        // Final: remembered, whatever other copies there are (a later one may be the record of
        // a failed commit, which a later unlink may not see). Not final: only with another copy.
        std::vector<spool::StatusState> states;
        bool final = true;
        for (uint16_t i = 0; i < f->rcpts.size(); i++) {
            auto it = sc.status.find({id, i});
            final = final && it != sc.status.end() && final_state(it->second);
            states.push_back(final ? it->second : spool::StatusState::deferred);
        }
        if (final) {
            led.gone[id] = std::move(states);
        } else if (!elsewhere) {
            led.dropped[id] = path.substr(slash + 1);
        }
    }
    w.trace(0x9e1, seq, led.gone.size());
}

// Before a recovery, which may delete segments whose messages are all final: the final
// acknowledged messages are remembered as check_unlinked does.
void note_final(World& w, const Config& cfg, Ledger& led) {
    const Scan sc = scan_spool(cfg);
    note_dsns(sc, led);
    for (const SentMessage& m : w.messages) {
        auto it = sc.messages.find(m.acked_id);
        if (m.acked_id.empty() || it == sc.messages.end()) continue;
        std::vector<spool::StatusState> states;
        bool final = true;
        for (uint16_t i = 0; final && i < it->second.front().rcpts.size(); i++) {
            auto st = sc.status.find({m.acked_id, i});
            final = st != sc.status.end() && final_state(st->second);
            if (final) states.push_back(st->second);
        }
        if (final) led.gone[m.acked_id] = std::move(states);
    }
}

// The end of a run with delivery: every acknowledged message's fate.
void check_delivery(World& w, const Config& cfg, Ledger& led) {
    const Scan sc = scan_spool(cfg);
    note_dsns(sc, led);
    std::map<std::string, DsnSeen> dsns = led.dsns;
    for (const DsnSeen& d : w.dsns_delivered)
        if (!dsns.contains(d.dsn_id)) dsns[d.dsn_id] = d;
    std::map<std::pair<std::string, std::string>, uint32_t> dsn_count;  // (token, rcpt)
    for (const auto& [id, d] : dsns)
        for (const std::string& rc : d.rcpts)
            dsn_count[{d.token, rc}]++;
    std::map<std::pair<std::string, std::string>, std::vector<const Delivered*>> copies;
    for (const Delivered& d : w.delivered)
        copies[{d.token, d.rcpt}].push_back(&d);
    auto ambiguous = [&](const Delivered& d) {
        // The 250 was written, and the connection ended before the engine read all of it.
        const Socket* k = w.socket_of(d.fd);
        return k == nullptr || k->server_read_total < d.reply_end;
    };
    w.stats.dsns = dsns.size();
    for (const SentMessage& s : w.messages) {
        if (s.acked_id.empty()) continue;
        std::vector<std::string> want;
        for (size_t i = 0; i < s.rcpts.size(); i++)
            if (s.rcpt_ok[i]) want.push_back(s.rcpts[i]);
        std::vector<spool::StatusState> states(want.size(), spool::StatusState::deferred);
        if (sc.messages.contains(s.acked_id)) {
            for (uint16_t i = 0; i < want.size(); i++) {
                auto it = sc.status.find({s.acked_id, i});
                if (it != sc.status.end()) states[i] = it->second;
                if (!final_state(states[i])) w.stats.queued_at_end++;
            }
        } else if (auto g = led.gone.find(s.acked_id); g != led.gone.end()) {
            states = g->second;
        } else {
            throw Failure("message " + s.token + " acknowledged as " + s.acked_id +
                          " is neither in the spool nor in a segment deleted when final");
        }
        std::map<std::string, std::array<uint32_t, 3>> by_addr;  // delivered, bounced, pending
        for (size_t i = 0; i < want.size(); i++) {
            auto& n = by_addr[want[i]];
            if (states[i] == spool::StatusState::delivered)
                n[0]++;
            else if (final_state(states[i]))
                n[1]++;
            else
                n[2]++;
        }
        for (const auto& [addr, n] : by_addr) {
            const auto& got = copies[{s.token, addr}];
            const uint32_t dsn = dsn_count[{s.token, addr}];
            const std::string who =
                "message " + s.token + " (" + s.acked_id + ") to <" + addr + ">";
            bool explained = false;
            for (const Delivered* d : got)
                explained = explained || ambiguous(*d) || d->life < w.life;
            const bool restarted = w.life > 0;
            if (got.size() < n[0])
                throw Failure(who + " is recorded delivered, but no server took it");
            if (got.size() > n[0] + n[2] && got.size() > 1) {
                w.stats.duplicates += got.size() - 1;
                if (!explained)
                    throw Failure(who + " was delivered " + std::to_string(got.size()) +
                                  " times with no crash, restart or lost reply to explain it");
            }
            // (An address given twice in one message may be delivered once and bounced once.)
            if (n[1] > 0 && got.size() > n[0]) {
                if (!explained) throw Failure(who + " was both delivered and bounced, unexplained");
                w.stats.duplicates++;
            }
            if (n[1] > 0 && !s.from.empty() && dsn == 0)
                throw Failure(who + " bounced without a DSN to <" + s.from + ">");
            if (s.from.empty() && dsn > 0)
                throw Failure(who + " has a DSN though its sender is <>");
            if (dsn > n[1] + n[2] && dsn > 1) {
                w.stats.dsn_duplicates += dsn - 1;
                if (!restarted)
                    throw Failure(who + " is in " + std::to_string(dsn) +
                                  " DSNs with no crash or restart to explain it");
            }
            if (n[0] > 0 && n[1] + n[2] == 0 && dsn > 0 && !restarted && !explained)
                throw Failure(who + " was delivered and is in a DSN");
            w.stats.delivered += n[0];
            w.stats.bounced += n[1];
        }
    }
}

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
                  uint32_t life, const Ledger& led) {
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
                if (m.protocol == "LOCAL" && m.mail_from.empty()) {
                    // A DSN (delivery's own message): check_delivery judges it.
                    copies["dsn:" + id]++;
                    return;
                }
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
        if (auto d = led.dropped.find(s.acked_id); d != led.dropped.end())
            throw Failure("segment " + d->second + " was deleted while message " + s.token + " (" +
                          s.acked_id + ") in it was not final");
        auto it = recovered_ids.find(s.acked_id);
        if (it == recovered_ids.end() && led.gone.contains(s.acked_id)) continue;  // delivered
        if (it == recovered_ids.end() || it->second != s.token)
            throw Failure("message " + s.token + " acknowledged as " + s.acked_id +
                          " is not in the recovered spool" + where);
    }
    w.stats.recovered = recovered_ids.size();
    w.stats.unacked_recovered = 0;
    for (const auto& [token, n] : copies) {
        if (token.starts_with("dsn:")) continue;
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
    Config config = make_config(r, o);
    // Delivery in three seeds of four, its settings from a generator of their own.
    Rng dr(o.seed ^ 0xde11'7e27'0000'0001ull);
    w.delivery = !dr.chance(1, 4);
    if (w.delivery) delivery_config(dr, config);
    const Config& cfg = config;
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
    Ledger led;
    if (w.delivery) {
        w.make_destinations(span + cfg.queue_lifetime_ms * 1000);
        // Long enough for a message to expire and its DSN to be delivered or expire too.
        w.drain_us = 2 * (cfg.queue_lifetime_ms + cfg.retry_max_ms) * 1000 + 30'000'000;
        // Crashes while delivery is at work, after the clients too.
        if (dr.chance(1, 3)) {
            w.crash_at_us.push_back(w.now_us() + span + dr.range(0, cfg.queue_lifetime_ms * 1000));
            std::sort(w.crash_at_us.begin(), w.crash_at_us.end());
        }
        w.before_unlink = [&](const std::string& path) { check_unlinked(w, cfg, led, path); };
    }
    w.trace(cfg.connections_max, cfg.recv_buffer_count, cfg.segment_bytes);

    std::map<std::string, size_t> by_token;
    for (uint32_t life = 0;; life++) {
        if (!make_dirs(cfg.spool_dir)) throw Failure("cannot create " + cfg.spool_dir);
        if (w.delivery) note_final(w, cfg, led);
        Recovered rec;
        if (!recover(cfg, rec))
            throw Failure("recovery failed at the start of life " + std::to_string(life));
        for (size_t i = 0; i < w.messages.size(); i++)
            by_token[w.messages[i].token] = i;
        verify_spool(w, cfg, by_token, life, led);
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
        w.begin_epoch(engine, listen_fd, stop_fd, life, &recovered->pending[0]);
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
            throw Failure(
                std::to_string(w.disk.open_fds()) +
                " file descriptors left open after a graceful stop:" + w.disk.open_paths());
        if (!w.final_stop()) continue;  // a restart: the next life takes over the spool
        if (!w.all_clients_done()) throw Failure("the engine stopped while clients were active");
        // The last check, on the spool the stopped engine left.
        if (w.delivery) note_final(w, cfg, led);
        Recovered last;
        if (!recover(cfg, last)) throw Failure("recovery failed after the graceful stop");
        for (size_t i = 0; i < w.messages.size(); i++)
            by_token[w.messages[i].token] = i;
        verify_spool(w, cfg, by_token, life + 1, led);
        if (w.delivery) check_delivery(w, cfg, led);
        break;
    }
    stats = w.stats;
    digest = w.digest();
}

}  // namespace ringmail::sim
