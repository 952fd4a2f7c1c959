// commit.cpp — see commit.hpp.
#include "spool/io/commit.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "core/base/log.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"

namespace ringmail {
namespace {

// The seed decides these in sim builds (core/runtime/sim_hooks.hpp).
using sys::random_u64;
using sys::realtime_us;

// Each writev carries at most this many iovecs (IOV_MAX is 1024 on Linux).
constexpr size_t kIovPerWrite = 1024;
// A batch's writes and its fdatasync are one linked chain, submitted whole (Reactor::reserve):
// it must fit the smallest ring. Its text is in staging chunks, one iovec each, plus a header
// and trailer per message and one for the statuses.
constexpr uint64_t kBatchIovMax =
    std::max(limits::commit_batch_bytes_max, limits::message_size_max_bytes_max + (1u << 20)) /
        limits::staging_chunk_bytes +
    2 * limits::commit_batch_messages_max + 1;
static_assert((kBatchIovMax + kIovPerWrite - 1) / kIovPerWrite + 1 <= limits::ring_entries_min);

// New segments are overwritten with zeros in writes of this size; while commits run, one
// write-through chunk of kZeroPacedBytes at a time (see zero_next_chunk).
constexpr uint64_t kZeroBytes = 1 << 20;
constexpr uint64_t kZeroPacedBytes = 256 << 10;
const char* zeros() {
    static const char* z = static_cast<const char*>(calloc(1, kZeroBytes));
    return z;
}

}  // namespace

uint64_t segment_bytes_after_enospc(uint64_t failed_bytes, uint64_t free_bytes, uint32_t cores) {
    constexpr uint64_t floor = limits::segment_bytes_min;
    if (failed_bytes <= floor) return 0;
    const uint64_t share = free_bytes / std::max<uint32_t>(cores, 1);
    uint64_t bytes = std::max(failed_bytes / 2, floor);
    while (bytes > floor && bytes > share / 2)
        bytes = std::max(bytes / 2, floor);
    return bytes;
}

Committer::Committer(Reactor& reactor, const Config& config, uint32_t core, Queue& queue)
    : reactor_(reactor),
      config_(config),
      core_(core),
      queue_(queue),
      pool_(limits::staging_chunk_bytes, config.staging_memory_max_bytes) {
    pending_.reserve(limits::commit_batch_messages_max);
    failing_.reserve(limits::commit_batch_messages_max);
    depth_ = std::clamp<uint32_t>(config.commit_depth, 1, kDepthMax);
    for (uint32_t i = 0; i < kDepthMax; i++) {
        Batch& b = batches_[i];
        b.owner = this;
        b.op = IoOp{&Committer::on_batch_op, &b};
        if (i >= depth_) continue;
        b.waiters.reserve(limits::commit_batch_messages_max);
        b.iov.reserve(limits::commit_batch_messages_max * 2);
    }
}

Committer::~Committer() {
    shutdown();
}

std::string Committer::segment_path(uint64_t seq) const {
    return dir_ + "/" + spool::segment_file_name(seq);
}

bool Committer::open(uint64_t first_segment_seq, uint64_t first_id_counter, std::string* error) {
    salt_ = random_u64();
    id_counter_ = first_id_counter;
    next_seq_ = first_segment_seq;
    first_seq_ = first_segment_seq;
    dir_ = spool::core_dir_path(config_.spool_dir, core_);
    if (mkdir(dir_.c_str(), 0750) != 0 && errno != EEXIST) {
        *error = "mkdir " + dir_ + ": " + strerror(errno);
        return false;
    }
    dir_fd_ = sys::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd_ < 0) {
        *error = "open " + dir_ + ": " + strerror(errno);
        return false;
    }
    // Segments are made through the ring, the first one too (messages wait for it). A full
    // disk at start is not fatal: messages get 452 until space comes back.
    prepare_next();
    return true;
}

void Committer::shutdown() {
    for (const Retired& r : retired_)
        sys::close(r.fd);
    retired_.clear();
    if (current_.fd >= 0) sys::close(current_.fd);
    if (next_.fd >= 0) sys::close(next_.fd);
    // An unused preallocated segment is removed so that restarts do not pile them up.
    if (prep_ == Prep::ready && next_.offset <= spool::record_header_bytes + 64)
        sys::unlink(segment_path(next_.seq).c_str());
    current_.fd = next_.fd = -1;
    prep_ = Prep::none;
    if (dir_fd_ >= 0) sys::close(dir_fd_);
    dir_fd_ = -1;
}

// --- segment preparation: openat → fallocate → header write + fsync + dir fsync -----------

void Committer::prepare_next() {
    RM_ASSERT(prep_ == Prep::none || prep_ == Prep::failed);
    next_ = Segment{};
    next_.seq = next_seq_++;
    next_.size = config_.segment_bytes;
    prep_path_ = segment_path(next_.seq);
    prep_ = Prep::opening;
    io_uring_sqe* s = reactor_.sqe(prep_op_);
    io_uring_prep_openat(s, AT_FDCWD, prep_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                         0640);
}

void Committer::on_prep_op(void* self, int res, uint32_t) {
    static_cast<Committer*>(self)->prep_step(res);
}

// One chunk of zeros at a time, each written through to the device (write, then
// sync_file_range that waits for its writeback) while the current segment takes commits. Issued
// all at once, 64 MiB of zeros queued in the page cache and then flushed by one fsync sat in
// front of every commit's fdatasync for tens of milliseconds at each rotation (p99 end-of-data
// to 250 was 60 ms at 1000 sessions, ~1 ms without rotations). A chunk at a time bounds what a
// commit can find queued ahead of it on the device; the pages stay cached, so the records
// written over them later need no reads. With no segment to write to yet (the first one, or
// one filled before its successor was ready) nothing is waiting on the device but these zeros,
// and the whole segment goes at once.
void Committer::zero_next_chunk() {
    const bool paced = current_.fd >= 0 && !current_.fenced && !starved_;
    const uint64_t chunk = paced ? kZeroPacedBytes : kZeroBytes;
    prep_ops_left_ = 0;
    do {
        uint64_t off = prep_zero_off_;
        auto n = static_cast<unsigned>(std::min<uint64_t>(chunk, next_.size - off));
        reactor_.reserve(paced ? 2 : 1);  // write → sync_file_range, linked
        io_uring_sqe* s = reactor_.sqe(prep_op_);
        io_uring_prep_write(s, next_.fd, zeros(), n, off);
        prep_ops_left_++;
        if (paced) {
            s->flags |= IOSQE_IO_LINK;
            s = reactor_.sqe(prep_op_);
            io_uring_prep_sync_file_range(
                s, next_.fd, n, off,
                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
            prep_ops_left_++;
        }
        prep_zero_off_ += n;
    } while (!paced && prep_zero_off_ < next_.size);
}

void Committer::prep_step(int res) {
    switch (prep_) {
        case Prep::opening: {
            if (res < 0) break;
            next_.fd = res;
            prep_ = Prep::allocating;
            io_uring_sqe* s = reactor_.sqe(prep_op_);
            io_uring_prep_fallocate(s, next_.fd, 0, 0, static_cast<off_t>(next_.size));
            return;
        }
        case Prep::allocating: {
            if ((res == -ENOSPC || res == -EDQUOT) && shrink_next()) return;
            if (res < 0) break;
            // Write zeros over the whole segment. fallocate alone leaves "unwritten" extents, and
            // then every fdatasync must also commit the journal entry that converts them: about
            // 10x slower per commit on ext4 than overwriting blocks already written (measured
            // here: ~740 us against ~75 us). The zeros are also what recovery reads as the end.
            prep_ = Prep::zeroing;
            prep_zero_off_ = 0;
            prep_zero_failed_ = 0;
            zero_next_chunk();
            return;
        }
        case Prep::zeroing: {
            if (res < 0 && prep_zero_failed_ == 0) prep_zero_failed_ = res;
            if (--prep_ops_left_ > 0) return;
            if (prep_zero_failed_ < 0) {
                res = prep_zero_failed_;
                break;
            }
            if (prep_zero_off_ < next_.size) {
                zero_next_chunk();
                return;
            }
            spool::SegmentHeader h;
            h.core = core_;
            h.segment_seq = next_.seq;
            h.salt = salt_;
            h.created_unix_us = realtime_us();
            size_t n = spool::encode_segment_header(h, header_buf_);
            next_.start = next_.offset = n;
            prep_ = Prep::finishing;
            // header write → fsync(file) → fsync(dir), linked: the segment exists durably, with
            // its size, before any record that a 250 depends on is written into it.
            reactor_.reserve(3);
            io_uring_sqe* s = reactor_.sqe();
            io_uring_prep_write(s, next_.fd, header_buf_, static_cast<unsigned>(n), 0);
            io_uring_sqe_set_data64(s, kTagIgnore);
            s->flags |= IOSQE_IO_LINK;
            s = reactor_.sqe();
            io_uring_prep_fsync(s, next_.fd, 0);
            io_uring_sqe_set_data64(s, kTagIgnore);
            s->flags |= IOSQE_IO_LINK;
            s = reactor_.sqe(prep_op_);
            io_uring_prep_fsync(s, dir_fd_, 0);
            return;
        }
        case Prep::finishing:
            if (res < 0) break;
            prep_ = Prep::ready;
            stats_.segments++;
            if (segment_listener_) segment_listener_(segment_listener_ctx_, next_.seq);
            if (next_.size < config_.segment_bytes)
                LOG_WARN("spool disk nearly full: segment %s made with %llu bytes instead of %llu",
                         prep_path_.c_str(), static_cast<unsigned long long>(next_.size),
                         static_cast<unsigned long long>(config_.segment_bytes));
            else
                LOG_DEBUG("segment %s ready (%llu bytes)", prep_path_.c_str(),
                          static_cast<unsigned long long>(next_.size));
            return;
        default:
            RM_ASSERT(false);
    }
    // Failure at any step: the file is removed and the next message tries again (after a
    // pause, so that a full disk is not hammered).
    prep_errno_ = -res;
    LOG_ERROR("cannot prepare spool segment %s: %s", prep_path_.c_str(), strerror(-res));
    if (next_.fd >= 0) sys::close(next_.fd);  // rare path: a blocking close is acceptable
    sys::unlink(prep_path_.c_str());
    next_.fd = -1;
    prep_ = Prep::failed;
    prep_retry_after_us_ = now_us_ + 1000000;
}

// fallocate found no room for next_.size bytes: try a smaller segment rather than refuse
// every message while the disk still has room for thousands. False when even the floor did
// not fit (the disk is full: 452 4.3.1 until a later try finds room).
bool Committer::shrink_next() {
    struct statvfs vfs {};
    const uint64_t free_bytes =
        fstatvfs(next_.fd, &vfs) == 0 ? uint64_t{vfs.f_bavail} * vfs.f_frsize : 0;
    const uint64_t bytes = segment_bytes_after_enospc(next_.size, free_bytes, config_.threads);
    if (bytes == 0) return false;
    // A failed fallocate may keep the blocks it got (ext4 does): give them back before asking
    // for fewer. Blocking, on this rare path only; the file is still empty.
    if (ftruncate(next_.fd, 0) != 0) return false;
    next_.size = bytes;
    io_uring_sqe* s = reactor_.sqe(prep_op_);
    io_uring_prep_fallocate(s, next_.fd, 0, 0, static_cast<off_t>(next_.size));
    return true;
}

// Make the prepared segment current. False when none is ready.
bool Committer::rotate() {
    if (prep_ != Prep::ready) return false;
    if (current_.fd >= 0) {
        // A batch still in flight on it keeps the fd until it is done: a linked fdatasync
        // looks its fd up only when it starts, and a reused number would sync another file.
        if (inflight_ > 0)
            retired_.push_back(Retired{current_.fd, serial_started_});
        else
            close_segment_fd(current_.fd);
    }
    current_ = next_;
    next_ = Segment{};
    starved_ = false;
    prep_ = Prep::none;
    prepare_next();
    return true;
}

// --- batches ------------------------------------------------------------------------------

void Committer::submit(CommitWaiter* w) {
    if (pending_.empty()) window_start_us_ = now_us_;
    pending_.push_back(w);
}

void Committer::flush(uint64_t now_us) {
    now_us_ = now_us;
    if (prep_ == Prep::failed && now_us >= prep_retry_after_us_) prepare_next();
    if (inflight_ >= depth_ || (pending_.empty() && statuses_.empty() && statuses_retry_.empty()))
        return;
    if (config_.commit_window_us && now_us - window_start_us_ < config_.commit_window_us &&
        pending_.size() < limits::commit_batch_messages_max)
        return;
    start_batch();
}

void Committer::fail_pending(smtp::CommitResult r) {
    // A waiter told of its failure may submit its next message at once (a pipelining client
    // whose next message is already received): that one waits for the next batch. Iterating
    // pending_ itself lost it (and the session waited for its commit forever).
    failing_.swap(pending_);
    for (CommitWaiter* w : failing_) {
        w->builder.reset();
        w->sealed = false;
        stats_.failed++;
        w->commit_finished(r);
    }
    failing_.clear();
}

// The head of the queue cannot be placed now: it alone gets r, the others stay. Its waiter may
// submit again at once (unsealed, at the back).
void Committer::fail_head(smtp::CommitResult r) {
    CommitWaiter* w = pending_.front();
    pending_.erase(pending_.begin());
    w->builder.reset();
    w->sealed = false;
    stats_.failed++;
    w->commit_finished(r);
}

void Committer::append_status(const spool::Status& st) {
    size_t at = statuses_.size();
    statuses_.resize(at + spool::status_record_max_bytes);
    size_t n = spool::encode_status(
        st, salt_, std::span<char>(statuses_.data() + at, spool::status_record_max_bytes));
    statuses_.resize(at + n);
    stats_.statuses++;
}

void Committer::close_segment_fd(int fd) {
    io_uring_sqe* s = reactor_.sqe(close_op_);
    io_uring_prep_close(s, fd);
    closes_inflight_++;
}

void Committer::seal_pending() {
    for (CommitWaiter* w : pending_) {
        if (w->sealed) continue;
        RM_ASSERT(w->builder.seal(salt_));
        w->sealed = true;
    }
}

void Committer::start_batch() {
    Batch& b = batches_[(head_ + inflight_) % kDepthMax];
    RM_ASSERT(!b.active && b.waiters.empty());
    // Seal every waiting message; all segments of this run share the salt, so a record can be
    // sealed before we know which segment it lands in.
    size_t first = 0;
    b.iov.clear();
    // Statuses of a failed batch go first, in their order, then the new ones.
    const uint64_t status_bytes = statuses_retry_.size() + statuses_.size();
    uint64_t bytes = status_bytes;
    seal_pending();
    bool placed = false;
    for (;;) {
        if (current_.fd < 0 || current_.fenced || current_.size - current_.offset < status_bytes) {
            if (!rotate()) break;
            continue;
        }
        uint64_t room = current_.size - current_.offset;
        while (first < pending_.size() && b.waiters.size() < limits::commit_batch_messages_max) {
            uint64_t n = pending_[first]->builder.record_bytes();
            if (n > room - bytes) break;
            if (!b.waiters.empty() && bytes + n > limits::commit_batch_bytes_max) break;
            b.waiters.push_back(pending_[first]);
            bytes += n;
            first++;
        }
        placed = !b.waiters.empty() || status_bytes > 0;
        if (placed || first == pending_.size()) break;
        if (current_.offset == current_.start && current_.size < config_.segment_bytes) {
            // Not even an empty segment holds the head: one shrunk for a nearly full disk.
            // That message is refused as for a full disk; the ones after it may fit.
            fail_head(smtp::CommitResult::no_space);
            seal_pending();
            continue;
        }
        // The head does not fit what is left of this segment: move to the next one.
        if (!rotate()) break;
    }
    if (!placed) {
        if (pending_.empty()) return;  // the only messages were refused above
        // No segment can take the head message now.
        if (prep_ == Prep::failed) {
            smtp::CommitResult r = prep_errno_ == ENOSPC || prep_errno_ == EDQUOT
                                       ? smtp::CommitResult::no_space
                                       : smtp::CommitResult::failed;
            fail_pending(r);
        } else {
            starved_ = true;  // messages wait for the segment being prepared: no more pacing
        }
        return;  // flush() comes back
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(first));
    for (CommitWaiter* w : b.waiters)
        w->builder.iovecs(b.iov);
    // Status records ride at the end of the batch: each follows the message it is about,
    // which was committed before its delivery began.
    b.statuses.swap(statuses_retry_);
    b.statuses.insert(b.statuses.end(), statuses_.begin(), statuses_.end());
    statuses_.clear();
    statuses_retry_.clear();
    if (!b.statuses.empty()) b.iov.push_back(iovec{b.statuses.data(), b.statuses.size()});

    // The batch's place in the segment is taken now; the next batch goes after it, possibly
    // before this one is durable. Results are handed out in batch order (drain_batches).
    b.active = true;
    b.ok = true;
    b.serial = ++serial_started_;
    b.fd = current_.fd;
    b.seg_seq = current_.seq;
    b.offset = current_.offset;
    current_.offset += bytes;
    inflight_++;
    uint64_t off = b.offset;
    size_t nwrites = (b.iov.size() + kIovPerWrite - 1) / kIovPerWrite;
    b.ops_left = static_cast<uint32_t>(nwrites + (config_.fsync ? 1 : 0));
    b.bytes_expected = 0;
    b.bytes_written = 0;
    reactor_.reserve(b.ops_left);  // one chain in one submission, or the link does not hold
    for (size_t i = 0; i < nwrites; i++) {
        size_t lo = i * kIovPerWrite, hi = std::min(b.iov.size(), lo + kIovPerWrite);
        uint64_t len = 0;
        for (size_t k = lo; k < hi; k++)
            len += b.iov[k].iov_len;
        io_uring_sqe* s = reactor_.sqe(b.op);
        io_uring_prep_writev(s, b.fd, &b.iov[lo], static_cast<unsigned>(hi - lo), off);
        b.bytes_expected += len;
        // A short write breaks the link: the fdatasync is then cancelled and the batch fails.
        if (i + 1 < nwrites || config_.fsync) s->flags |= IOSQE_IO_LINK;
        off += len;
    }
    if (config_.fsync) {
        io_uring_sqe* s = reactor_.sqe(b.op);
        io_uring_prep_fsync(s, b.fd, IORING_FSYNC_DATASYNC);
    }
}

void Committer::on_batch_op(void* p, int res, uint32_t) {
    auto* b = static_cast<Batch*>(p);
    RM_ASSERT(b->active && b->ops_left > 0);
    if (res < 0 || b->serial == b->owner->fail_serial_) b->ok = false;
    if (res > 0) b->bytes_written += static_cast<uint64_t>(res);  // writes; an fsync gives 0
    if (--b->ops_left > 0) return;
    // A short write fails the batch whatever its link did: its records are not all on disk.
    if (b->bytes_written != b->bytes_expected) b->ok = false;
    b->owner->drain_batches();
}

// Batches complete in any order but are answered in the order they were written: a later
// batch's records are reachable by recovery only through the earlier ones of its segment.
void Committer::drain_batches() {
    while (inflight_ > 0) {
        Batch& b = batches_[head_];
        if (b.ops_left > 0) return;
        finish_batch(b);
        b.active = false;
        b.waiters.clear();
        b.statuses.clear();
        head_ = (head_ + 1) % kDepthMax;
        inflight_--;
        serial_finished_ = b.serial;
    }
    // Segments rotated away from while their batches ran can be closed now.
    size_t kept = 0;
    for (const Retired& r : retired_) {
        if (r.last_serial <= serial_finished_)
            close_segment_fd(r.fd);
        else
            retired_[kept++] = r;
    }
    retired_.resize(kept);
}

void Committer::finish_batch(Batch& b) {
    // A failed batch fails every batch started before its failure was handled: they lie after
    // it (a hole recovery stops at) or carry statuses that must not overtake its own.
    const bool ok = b.ok && b.serial > fail_through_serial_;
    if (!ok) {
        if (!b.ok)
            LOG_ERROR("spool write/fdatasync failed on segment %016llx of core %u: segment fenced",
                      static_cast<unsigned long long>(b.seg_seq), core_);
        if (current_.fd >= 0 && current_.seq == b.seg_seq) current_.fenced = true;
        fail_through_serial_ = std::max(fail_through_serial_, serial_started_);
        // The statuses were sealed with this run's salt: they are valid in any segment, so
        // they go again with the next batch rather than being lost.
        statuses_retry_.insert(statuses_retry_.end(), b.statuses.begin(), b.statuses.end());
    } else {
        stats_.commits++;
    }
    uint64_t off = b.offset;
    for (CommitWaiter* w : b.waiters) {
        if (ok) {
            QueueEntry e;
            e.id = w->builder.id();
            e.segment_seq = b.seg_seq;
            e.offset = off;
            e.record_bytes = static_cast<uint32_t>(w->builder.record_bytes());
            e.dir = static_cast<uint16_t>(core_);
            e.rcpts = w->rcpts;
            queue_.add(e);
            if (listener_) listener_(listener_ctx_, e, *w);
            off += w->builder.record_bytes();
            stats_.messages++;
            stats_.bytes += w->builder.record_bytes();
        } else {
            stats_.failed++;
        }
        w->builder.reset();
        w->sealed = false;
        w->commit_finished(ok ? smtp::CommitResult::ok : smtp::CommitResult::failed);
    }
}

}  // namespace ringmail
