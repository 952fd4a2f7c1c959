// spool_reader.cpp — see spool_reader.hpp.
#include "spool/io/spool_reader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/base/log.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "spool/record.hpp"
#include "spool/recovery.hpp"

namespace ringmail {

SpoolReader::SpoolReader(Reactor& reactor, std::string spool_dir, uint32_t fds_max)
    : reactor_(reactor), spool_dir_(std::move(spool_dir)), fds_max_(fds_max) {
    open_.reserve(fds_max);
}

SpoolReader::~SpoolReader() {
    for (const Open& o : open_)
        sys::close(o.fd);
}

// Opening a segment is a blocking syscall on the reactor, once per segment per core (and a
// segment is 64 MiB of messages); the reads themselves go through the ring.
int SpoolReader::fd_for(uint16_t dir, uint64_t seq, uint64_t* salt) {
    clock_++;
    for (Open& o : open_) {
        if (o.dir == dir && o.seq == seq) {
            o.used = clock_;
            *salt = o.salt;
            return o.fd;
        }
    }
    std::string path = spool::core_dir_path(spool_dir_, dir) + "/" + spool::segment_file_name(seq);
    int fd = sys::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    // The segment header carries the salt every record of the segment is sealed with.
    char head[128];
    ssize_t n = pread(fd, head, sizeof head, 0);
    size_t len = 0;
    auto rec = n > 0 ? spool::decode_record(std::string_view(head, static_cast<size_t>(n)), 0, &len)
                     : std::nullopt;
    auto h = rec && rec->type == spool::RecordType::segment_header
                 ? spool::decode_segment_header(rec->payload)
                 : std::nullopt;
    if (!h) {
        sys::close(fd);
        return -EBADMSG;
    }
    *salt = h->salt;
    if (open_.size() == fds_max_) {
        size_t lru = 0;
        for (size_t i = 1; i < open_.size(); i++)
            if (open_[i].used < open_[lru].used) lru = i;
        sys::close(open_[lru].fd);
        open_[lru] = open_.back();
        open_.pop_back();
    }
    open_.push_back({dir, seq, fd, h->salt, clock_});
    return fd;
}

void SpoolReader::forget(uint16_t dir, uint64_t seq) {
    for (size_t i = 0; i < open_.size(); i++) {
        if (open_[i].dir == dir && open_[i].seq == seq) {
            sys::close(open_[i].fd);
            open_[i] = open_.back();
            open_.pop_back();
            return;
        }
    }
}

// A few fstat()s of files already open, once a second: no I/O, unlike the open() above. Only a
// segment whose messages are all final is unlinked, so no read of it is pending here.
void SpoolReader::close_unlinked() {
    for (size_t i = 0; i < open_.size();) {
        struct stat st;
        if (fstat(open_[i].fd, &st) == 0 && st.st_nlink == 0) {
            sys::close(open_[i].fd);
            open_[i] = open_.back();
            open_.pop_back();
            continue;
        }
        i++;
    }
}

void SpoolReader::read(Read* r) {
    RM_ASSERT(r->done != nullptr && r->at.record_bytes > 0);
    r->reader = this;
    r->op = IoOp{&SpoolReader::on_read, r};
    r->buf.resize(r->at.record_bytes);
    r->fd = fd_for(r->at.dir, r->at.segment_seq, &r->salt);
    if (r->fd < 0) {
        // Report from a completion like every other outcome: a nop carries the error.
        io_uring_sqe* s = reactor_.sqe(r->op);
        io_uring_prep_nop(s);
        return;
    }
    io_uring_sqe* s = reactor_.sqe(r->op);
    io_uring_prep_read(s, r->fd, r->buf.data(), r->at.record_bytes, r->at.offset);
}

void SpoolReader::on_read(void* self, int res, uint32_t) {
    auto* r = static_cast<Read*>(self);
    int err = 0;
    if (r->fd < 0) {
        err = -r->fd;
    } else if (res < 0) {
        err = -res;
    } else if (static_cast<uint32_t>(res) != r->at.record_bytes) {
        err = EIO;  // a short read of an immutable, committed record: the file was cut
    } else if (!spool::decode_record(std::string_view(r->buf.data(), r->buf.size()), r->salt,
                                     nullptr)) {
        err = EBADMSG;  // never deliver what does not verify
    }
    r->done(r, err);
}

}  // namespace ringmail
