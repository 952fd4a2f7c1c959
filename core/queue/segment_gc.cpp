// segment_gc.cpp — spool segment collection (part of Delivery, see delivery.hpp): the segments
// this core looks after are tracked (spool/lifecycle.hpp); one whose messages are all final is
// unlinked through the ring, oldest first; the live messages of an old segment are copied
// forward (compaction) so they never pin it.
#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "core/queue/delivery.hpp"
#include "core/queue/delivery_parts.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"

namespace ringmail {
namespace {

using sys::realtime_us;  // the simulator's clock in sim builds

}  // namespace

uint16_t Delivery::segdir_for(uint16_t dir) {
    for (size_t i = 0; i < segdirs_.size(); i++)
        if (segdirs_[i]->dir == dir) return static_cast<uint16_t>(i);
    segdirs_.push_back(std::make_unique<SegDir>(
        SegDir{dir, spool::SegmentTracker(static_cast<int64_t>(config_.compact_after_ms))}));
    return static_cast<uint16_t>(segdirs_.size() - 1);
}

void Delivery::add_recovered_segments(uint16_t dir,
                                      const std::vector<spool::SegmentSeen>& segments) {
    SegDir& d = *segdirs_[segdir_for(dir)];
    // A segment keeps the age it had (rule C1 counts from its making, not from this start): a
    // relay restarted more often than --compact-after would otherwise never compact, and its
    // spool would grow with every restart. A header-less segment is as old as can be.
    const int64_t now_ms = static_cast<int64_t>(engine_.now_ms());
    const int64_t real_ms = realtime_us() / 1000;
    for (const spool::SegmentSeen& s : segments) {
        const int64_t age_ms = s.created_unix_us > 0
                                   ? std::max<int64_t>(0, real_ms - s.created_unix_us / 1000)
                                   : real_ms;
        d.tracker.add_segment(s.seq, now_ms - age_ms);
    }
}

void Delivery::segment_created(uint64_t seq) {
    segdirs_[0]->tracker.add_segment(seq, static_cast<int64_t>(engine_.now_ms()));
}

// Unlinks in one linked run: at most the smallest ring (the simulator's) holds at once.
constexpr size_t kUnlinkRunMax = 8;

void Delivery::collect_segments() {
    uint64_t commits = engine_.committer().stats().commits;
    size_t done = 0;
    while (done < finals_.size() && finals_[done].after_commits <= commits) {
        const FinalPending& f = finals_[done++];
        segdirs_[f.segdir]->tracker.message_final(f.slot, f.id);
    }
    finals_.erase(finals_.begin(), finals_.begin() + static_cast<long>(done));
    for (uint16_t i = 0; i < segdirs_.size(); i++) {
        SegDir& d = *segdirs_[i];
        // Our own directory keeps its current segment; another core's old one has none.
        uint64_t current = i == 0 ? engine_.committer().current_segment_seq() : UINT64_MAX;
        // One run of unlinks at a time per directory, each run linked in order: they then
        // complete oldest first, as the tracker (and a crash) requires.
        if (d.unlinks > 0) continue;
        std::vector<uint64_t> seqs = d.tracker.deletable(current);
        // The kernel ends a link chain at the end of a submission: a run that sqe() split to
        // make room would complete as two unordered parts (a newer segment deleted before an
        // older one aborted the tracker: the simulator's seed 76 with an 8-entry ring). A run
        // that fits, reserved; the rest go when it is done.
        if (seqs.size() > kUnlinkRunMax) seqs.resize(kUnlinkRunMax);
        engine_.reactor().reserve(static_cast<uint32_t>(seqs.size()));
        for (size_t k = 0; k < seqs.size(); k++) {
            d.tracker.delete_started(seqs[k]);
            reader_.forget(d.dir, seqs[k]);
            auto* u = new Unlink{{&Delivery::on_unlinked, nullptr},
                                 this,
                                 i,
                                 seqs[k],
                                 spool::core_dir_path(config_.spool_dir, d.dir) + "/" +
                                     spool::segment_file_name(seqs[k])};
            u->op.owner = u;
            io_uring_sqe* s = engine_.reactor().sqe(u->op);
            io_uring_prep_unlinkat(s, AT_FDCWD, u->path.c_str(), 0);
            // Oldest first, in order (rule D4): a crash never keeps an older one alone.
            if (k + 1 < seqs.size()) s->flags |= IOSQE_IO_HARDLINK;  // in order, even past an error
            unlinks_inflight_++;
            d.unlinks++;
        }
    }
}

// --- compaction: live messages of an old segment are copied forward (rules C1-C3) ----------

void Delivery::compact() {
    if (!copies_.empty() || stopping_) return;  // rule C2: one at a time
    int64_t now = static_cast<int64_t>(engine_.now_ms());
    for (uint16_t i = 0; i < segdirs_.size(); i++) {
        SegDir& d = *segdirs_[i];
        uint64_t current = i == 0 ? engine_.committer().current_segment_seq() : UINT64_MAX;
        auto cand = d.tracker.compaction_candidate(now, current);
        if (!cand) continue;
        live_.clear();
        d.tracker.live_messages(*cand, live_);
        LOG_DEBUG(
            "compaction: segment %016llx of core-%u holds %zu live messages: copying them "
            "forward",
            static_cast<unsigned long long>(*cand), d.dir, live_.size());
        for (const spool::LiveMessage& lm : live_) {
            // Find its slot (a scan once per compaction: an hour apart by default).
            for (uint32_t k = 0; k < held_.size(); k++) {
                Held& h = held_[k];
                if (!h.tracked || h.segdir != i || h.id != lm.id ||
                    h.slot.segment_seq != lm.slot.segment_seq || h.slot.index != lm.slot.index)
                    continue;
                sched::MessageRef ref{k, h.generation};
                // Not while bounces wait for their DSN: the copy would restate them as bounced.
                if (!table_.valid(ref) || h.inflight > 0 || h.dsn_busy || !h.bounces.empty())
                    break;  // next round
                auto w = std::make_unique<CopyWaiter>();
                w->owner = this;
                w->ref = ref;
                w->id = h.id;
                w->is_copy = true;
                w->read.at = h.at;
                w->read.user = w.get();
                w->read.done = [](SpoolReader::Read* r, int err) {
                    auto* cw = static_cast<CopyWaiter*>(r->user);
                    cw->owner->copy_read(cw, err);
                };
                CopyWaiter* raw = w.get();
                copies_.push_back(std::move(w));
                reader_.read(&raw->read);
                break;
            }
        }
        if (!copies_.empty()) return;
    }
}

void Delivery::copy_read(CopyWaiter* w, int err) {
    std::optional<spool::MessageView> m;
    if (!err) {
        auto rec = spool::decode_record(std::string_view(w->read.buf.data(), w->read.buf.size()),
                                        w->read.salt, nullptr);
        if (rec) m = spool::decode_message(rec->payload);
    }
    if (!m || m->id != w->id || !table_.valid(w->ref)) {
        copy_finished(w);  // nothing copied; the next round may try again
        return;
    }
    w->msg = std::move(*m);
    const spool::MessageView& v = w->msg;
    w->rcpt_view = v.rcpts;
    w->rcpts = static_cast<uint16_t>(std::min<size_t>(v.rcpts.size(), UINT16_MAX));
    spool::EnvelopeFields env{v.helo,      v.client_addr, v.protocol,
                              v.mail_from, v.mail_params, v.rcpts};
    Committer& c = engine_.committer();
    if (!w->builder.begin(c.pool(), w->id, v.arrival_unix_us, env) || !w->builder.append(v.body)) {
        w->builder.reset();
        copy_finished(w);
        return;
    }
    c.submit(w);
    // The recipients' states follow the copy in the same batch (rule C1), so that the copy
    // alone tells the whole story once the old segment is gone.
    restate_statuses(w->ref, w->id, v.rcpts.size());
}

void Delivery::restate_statuses(sched::MessageRef ref, uint64_t id, size_t rcpts) {
    Committer& c = engine_.committer();
    uint64_t now = engine_.now_ms();
    int64_t real = realtime_us();
    for (uint32_t r = 0; r < rcpts; r++) {
        sched::RcptState st = table_.rcpt_state(ref, r);
        uint32_t attempts = table_.attempts(ref, r);
        if (st == sched::RcptState::pending && attempts == 0) continue;
        spool::Status s;
        s.message_id = id;
        s.rcpt = static_cast<uint16_t>(r);
        s.attempts = static_cast<uint16_t>(attempts);
        s.at_unix_us = real;
        s.reply = "restated by compaction";
        if (st == sched::RcptState::delivered) {
            s.state = spool::StatusState::delivered;
        } else if (st == sched::RcptState::bounced) {
            s.state = spool::StatusState::bounced;
        } else {
            s.state = spool::StatusState::deferred;
            uint64_t next = table_.next_attempt_ms(ref, r);
            s.next_attempt_unix_us =
                real + (next > now ? static_cast<int64_t>(next - now) : 0) * 1000;
        }
        c.append_status(s);
    }
}

void Delivery::copy_committed(const QueueEntry& e, const CommitWaiter& cw) {
    const auto& w = static_cast<const CopyWaiter&>(cw);
    if (!table_.valid(w.ref)) return;
    Held& h = held_[w.ref.index];
    if (!h.tracked || h.id != w.id) return;  // final meanwhile: its old slot is settled (C3)
    // The statuses restated with the copy may have gone in the batch before it, in the
    // previous segment (the copy did not fit there, the statuses did), which can be deleted
    // before the copy's: after a crash the copy was recovered with its delivered recipients
    // pending, and they were delivered again (the simulator's seed 5028). Restated once more,
    // behind the copy; the old copy is dead once they are durable, and the segments after it
    // (that earlier one too) wait for it (rule D1).
    restate_statuses(w.ref, h.id, h.addr_end.size());
    // Called while the committer finishes the copy's batch: that batch is counted in commits
    // and still in batches_inflight, so the batch the restatement rides in is the one after the
    // others in flight. (+1 here waited for a commit an idle relay never makes: the old segment
    // was never deleted.)
    const Committer& c = engine_.committer();
    finals_.push_back(
        FinalPending{h.segdir, h.slot, h.id, c.stats().commits + c.batches_inflight()});
    h.segdir = 0;
    h.slot = segdirs_[0]->tracker.message_added(e.segment_seq, h.id);
    h.at = RecordLocation{e.dir, e.segment_seq, e.offset, e.record_bytes};
    stats_.compacted++;
}

void Delivery::copy_finished(CopyWaiter* w) {
    auto it =
        std::find_if(copies_.begin(), copies_.end(), [&](const auto& p) { return p.get() == w; });
    RM_ASSERT(it != copies_.end());
    copies_.erase(it);
}

void Delivery::on_unlinked(void* self, int res, uint32_t) {
    std::unique_ptr<Unlink> u(static_cast<Unlink*>(self));
    Delivery* d = u->owner;
    d->unlinks_inflight_--;
    d->segdirs_[u->segdir]->unlinks--;
    if (res < 0 && res != -ENOENT) {
        // Left in place: recovery will find only final messages in it. Never retried here.
        LOG_WARN("cannot delete spool segment %s: %s", u->path.c_str(), strerror(-res));
    } else {
        LOG_DEBUG("spool segment %s deleted: all its messages are final", u->path.c_str());
    }
    d->segdirs_[u->segdir]->tracker.segment_deleted(u->seq);
    d->stats_.segments_deleted++;
}

}  // namespace ringmail
