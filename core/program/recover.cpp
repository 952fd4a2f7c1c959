// recover.cpp — see recover.hpp.
#include "core/program/recover.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "core/base/log.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"

namespace ringmail {

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

bool recover(const Config& cfg, Recovered& out) {
    auto t0 = std::chrono::steady_clock::now();
    out.queues.resize(cfg.threads);
    out.pending.resize(cfg.threads);
    out.next_segment_seq.assign(cfg.threads, 1);
    out.segments.assign(cfg.threads, {});
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
                for (const auto& rc : m.message->rcpts)
                    r.rcpts.push_back(RecoveredRcpt{std::string(rc.address)});
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
        out.segments[dir % cfg.threads].push_back(
            RecoveredDir{static_cast<uint16_t>(dir), std::move(st.kept)});
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

}  // namespace ringmail
