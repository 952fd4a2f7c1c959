// disk.cpp — the simulated disk (sim.hpp): real files, tracked durability, crash images.
//
// Files are real so that the real recovery code reads them; nothing is ever fsynced for
// real (the process does not lose its page cache: only the model's crash does). What the
// model does not cover: an unlink is durable at once (a crash never brings a deleted file
// back), and files the engine did not create through the ring (those of earlier lives,
// recovery's quarantine) count as durable.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tests/sim/sim.hpp"

namespace ringmail::sim {
namespace {

std::string parent_of(const std::string& path) {
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

void write_whole(const std::string& path, const std::string& data) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) throw Failure("crash image: cannot open " + path + ": " + strerror(errno));
    size_t off = 0;
    while (off < data.size()) {
        ssize_t w = ::pwrite(fd, data.data() + off, data.size() - off, static_cast<off_t>(off));
        if (w <= 0) throw Failure("crash image: cannot write " + path);
        off += static_cast<size_t>(w);
    }
    ::close(fd);
}

}  // namespace

int Disk::open(const char* path, int flags, mode_t mode) {
    const int fd = ::open(path, flags, mode);
    if (fd < 0) return -errno;
    Fd d;
    d.path = path;
    d.dir = (flags & O_DIRECTORY) != 0;
    if (!d.dir) {
        auto [it, fresh] = files_.try_emplace(d.path);
        File& f = it->second;
        if (fresh) {
            f.path = d.path;
            f.dir = parent_of(d.path);
            // A file that existed before this life (not created now) is durable as it is.
            const bool created = (flags & O_CREAT) && (flags & O_EXCL);
            if (!created) {
                struct stat st {};
                if (fstat(fd, &st) == 0 && st.st_size > 0) {
                    f.data.resize(static_cast<size_t>(st.st_size));
                    if (::pread(fd, f.data.data(), f.data.size(), 0) < 0) f.data.clear();
                }
                f.durable = f.data;
                f.entry_durable = true;
            }
        }
    }
    fds_[fd] = std::move(d);
    return fd;
}

int Disk::close(int fd) {
    auto it = fds_.find(fd);
    if (it == fds_.end()) return -EBADF;
    fds_.erase(it);
    return ::close(fd) == 0 ? 0 : -errno;
}

int Disk::unlink(const char* path) {
    if (::unlink(path) != 0) return -errno;
    files_.erase(path);
    return 0;
}

void Disk::write_at(File& f, uint64_t off, const char* p, size_t n) {
    if (f.data.size() < off + n) f.data.resize(off + n);
    memcpy(f.data.data() + off, p, n);
    f.pending.push_back(Pending{off, std::string(p, n), 0});
}

int Disk::pwrite(int fd, const char* p, size_t n, uint64_t off) {
    auto it = fds_.find(fd);
    if (it == fds_.end() || it->second.dir) return -EBADF;
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) return -errno;
    write_at(files_.at(it->second.path), off, p, static_cast<size_t>(w));
    return static_cast<int>(w);
}

int Disk::pwritev(int fd, const iovec* iov, int n, uint64_t off, size_t limit) {
    size_t done = 0;
    for (int i = 0; i < n && done < limit; i++) {
        const size_t len = std::min(iov[i].iov_len, limit - done);
        const int r = pwrite(fd, static_cast<const char*>(iov[i].iov_base), len, off + done);
        if (r < 0) return done ? static_cast<int>(done) : r;
        done += static_cast<size_t>(r);
    }
    return static_cast<int>(done);
}

int Disk::pread(int fd, char* p, size_t n, uint64_t off) {
    if (!is_file(fd)) return -EBADF;
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    return r < 0 ? -errno : static_cast<int>(r);
}

int Disk::sync(int fd) {
    auto it = fds_.find(fd);
    if (it == fds_.end()) return -EBADF;
    if (it->second.dir) {
        // The directory's entries are durable: every file created in it so far survives.
        for (auto& [path, f] : files_)
            if (f.dir == it->second.path) f.entry_durable = true;
        return 0;
    }
    File& f = files_.at(it->second.path);
    f.durable = f.data;
    f.pending.clear();
    return 0;
}

int Disk::fallocate(int fd, uint64_t off, uint64_t len) {
    auto it = fds_.find(fd);
    if (it == fds_.end() || it->second.dir) return -EBADF;
    if (::posix_fallocate(fd, static_cast<off_t>(off), static_cast<off_t>(len)) != 0)
        return -ENOSPC;
    File& f = files_.at(it->second.path);
    if (f.data.size() < off + len) {
        f.data.resize(off + len);
        f.pending.push_back(Pending{0, {}, off + len});
    }
    return 0;
}

// A power cut. Per file: a new file whose directory was never synced may vanish; otherwise
// it holds its durable image, then each write since its last sync lands whole, not at all,
// or in part (a random subset of its 512-byte sectors), in any combination.
void Disk::crash() {
    for (auto& [fd, d] : fds_)
        ::close(fd);
    fds_.clear();
    for (auto it = files_.begin(); it != files_.end();) {
        File& f = it->second;
        if (!f.entry_durable && rng_.chance(1, 2)) {
            ::unlink(f.path.c_str());
            it = files_.erase(it);
            continue;
        }
        std::string img = f.durable;
        for (const Pending& p : f.pending) {
            if (p.resize) {
                if (rng_.chance(1, 2) && img.size() < p.resize) img.resize(p.resize);
                continue;
            }
            const uint32_t mode = static_cast<uint32_t>(rng_.below(3));
            if (mode == 0) continue;  // lost
            if (mode == 2) crashes_torn++;
            for (uint64_t s = p.off & ~uint64_t{511}; s < p.off + p.bytes.size(); s += 512) {
                if (mode == 2 && rng_.chance(1, 2)) continue;  // this sector did not make it
                const uint64_t lo = std::max(s, p.off);
                const uint64_t hi = std::min<uint64_t>(s + 512, p.off + p.bytes.size());
                if (img.size() < hi) img.resize(hi);
                memcpy(img.data() + lo, p.bytes.data() + (lo - p.off), hi - lo);
            }
        }
        write_whole(f.path, img);
        f.data = img;
        f.durable = img;
        f.pending.clear();
        f.entry_durable = true;
        ++it;
    }
}

void Disk::new_epoch() {
    if (!fds_.empty()) throw Failure("a new engine starts with file descriptors still open");
    files_.clear();
}

}  // namespace ringmail::sim
