// world.cpp — the SimBackend: operations in flight, their execution against the simulated
// sockets and disk, completions in an order the seed picks, and the virtual clock, which jumps
// to the next event instead of waiting for it.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/engine/engine.hpp"
#include "core/queue/delivery.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "net/outbound/destinations.hpp"
#include "tests/sim/client.hpp"
#include "tests/sim/sim.hpp"

namespace ringmail::sim {

void install_sim_hooks(World& w) {
    sys::SimHooks& h = sys::sim_hooks();
    h.ctx = &w;
    h.monotonic_us = [](void* c) { return static_cast<World*>(c)->now_us(); };
    h.realtime_us = [](void* c) { return static_cast<World*>(c)->realtime_us(); };
    h.random_u64 = [](void* c) { return static_cast<World*>(c)->rng.next(); };
    h.getpeername = [](void* c, int fd, sockaddr* a, socklen_t* l) {
        return static_cast<World*>(c)->getpeername(fd, a, l);
    };
    h.open = [](void* c, const char* p, int f, mode_t m) {
        const int r = static_cast<World*>(c)->disk.open(p, f, m);
        if (r >= 0) return r;
        errno = -r;
        return -1;
    };
    h.close = [](void* c, int fd) {
        const int r = static_cast<World*>(c)->disk.close(fd);
        if (r >= 0) return r;
        errno = -r;
        return -1;
    };
    h.unlink = [](void* c, const char* p) {
        const int r = static_cast<World*>(c)->disk.unlink(p);
        if (r >= 0) return r;
        errno = -r;
        return -1;
    };
    h.socket = [](void* c, int domain, int type, int) {
        const int r = static_cast<World*>(c)->sim_socket(domain, type);
        if (r >= 0) return r;
        errno = -r;
        return -1;
    };
    h.setsockopt = [](void* c, int fd, int, int, const void*, socklen_t) {
        if (static_cast<World*>(c)->socket_of(fd) != nullptr) return 0;
        errno = EBADF;
        return -1;
    };
    dns::sim_dns().ctx = &w;
    dns::sim_dns().query = [](void* c, std::string_view d) {
        return static_cast<World*>(c)->dns_query(d);
    };
}

World::World(const Options& o) : rng(o.seed), disk(rng), opt(o) {}

World::~World() = default;

void World::trace(uint64_t a, uint64_t b, uint64_t c) {
    for (uint64_t v : {a, b, c, now_us_}) {
        digest_ ^= v;
        digest_ *= 1099511628211ull;
    }
}

Socket* World::socket_of(int fd) {
    auto it = sockets.find(fd);
    return it == sockets.end() ? nullptr : &it->second;
}

// The far end has something to do (bytes arrived, the engine closed): its next step.
void World::wake_peer(Socket& s, uint64_t delay_us) {
    if (s.mx == Socket::kInbound) {
        wake_client(s.client, delay_us);
    } else if (s.mx >= 0) {
        MxSession& m = mx_sessions[static_cast<size_t>(s.mx)];
        if (m.phase != MxSession::Phase::gone) m.next_us = std::min(m.next_us, now_us_ + delay_us);
    }
}

int World::getpeername(int fd, sockaddr* addr, socklen_t* len) {
    Socket* s = socket_of(fd);
    if (s == nullptr || s->rst) {
        errno = s ? ENOTCONN : EBADF;
        return -1;
    }
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(s->ip);
    sin.sin_port = htons(static_cast<uint16_t>(40000 + s->client % 20000));
    memcpy(addr, &sin, std::min<size_t>(*len, sizeof sin));
    *len = sizeof sin;
    return 0;
}

bool World::all_clients_done() const {
    if (clients.size() < clients_total) return false;
    for (const auto& c : clients)
        if (c->state != Client::State::done) return false;
    return true;
}

size_t World::server_sockets_open() const {
    size_t n = 0;
    for (const auto& [fd, s] : sockets)
        if (s.mx == Socket::kInbound && !s.server_closed) n++;
    return n;
}

void World::begin_epoch(Engine* engine, int listen_fd, int stop_fd, uint32_t life_index,
                        const std::vector<RecoveredQueueEntry>* recovered) {
    engine_ = engine;
    recovered_ = recovered;
    life = life_index;
    listen_fd_ = listen_fd;
    stop_fd_ = stop_fd;
    stop_requested_ = false;
    settle_deadline_us_ = 0;
    drain_deadline_us_ = 0;
    baseline_checked_ = false;
}

// The process exits after a graceful stop: the kernel closes whatever it still held (the
// engine gives up on connections still open after its grace period), and connections waiting
// in the listener's backlog are reset.
void World::end_epoch() {
    for (auto& [fd, s] : sockets) {
        if (s.server_closed) continue;
        s.server_closed = true;
        if (s.unread_by_server() > 0) s.rst = true;  // unread data: the kernel resets
        wake_peer(s, 1);
    }
    backlog.clear();
    engine_ = nullptr;
}

// The power cut: the engine is abandoned where it stands. Every connection is reset (the
// clients learn nothing more), nothing in flight completes, and the disk keeps only what a
// crash may keep.
void World::crash() {
    trace(0xc4a5, stats.crashes);
    stats.crashes++;
    ops_.clear();
    for (auto& [fd, s] : sockets) {
        s.rst = true;
        s.server_closed = true;
        wake_peer(s, 1);
    }
    backlog.clear();
    disk.crash();
    engine_ = nullptr;
}

// --- submission ------------------------------------------------------------------------------

void World::submit(Reactor& r, const io_uring_sqe* sqes, uint32_t n) {
    Op* prev_link = nullptr;
    for (uint32_t i = 0; i < n; i++) {
        auto op = std::make_unique<Op>();
        op->seq = ++seq_;
        op->r = &r;
        op->sqe = sqes[i];
        const uint8_t code = op->sqe.opcode;
        switch (code) {
            case IORING_OP_NOP:
            case IORING_OP_RECV:
            case IORING_OP_SEND:
            case IORING_OP_CLOSE:
            case IORING_OP_ASYNC_CANCEL:
            case IORING_OP_ACCEPT:
            case IORING_OP_TIMEOUT:
            case IORING_OP_READ:
            case IORING_OP_WRITE:
            case IORING_OP_WRITEV:
            case IORING_OP_FSYNC:
            case IORING_OP_FALLOCATE:
            case IORING_OP_SYNC_FILE_RANGE:
            case IORING_OP_OPENAT:
            case IORING_OP_UNLINKAT:
            case IORING_OP_MSG_RING:
            case IORING_OP_CONNECT:
                break;
            default:
                throw Failure("the simulator does not model io_uring opcode " +
                              std::to_string(code));
        }
        if (prev_link) {
            prev_link->link_next = op.get();
            op->st = Op::St::linked;
        }
        const uint8_t f = op->sqe.flags;
        op->hard_link = f & IOSQE_IO_HARDLINK;
        prev_link = (f & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK)) ? op.get() : nullptr;
        Op* raw = op.get();
        ops_.push_back(std::move(op));
        trace(0x5b, code, raw->seq);
        if (raw->st == Op::St::active) activate(*raw);
    }
}

uint64_t World::file_latency_us(uint8_t opcode) {
    if (slow_disk_ppm && rng.below(1'000'000) < slow_disk_ppm) return rng.range(50'000, 2'000'000);
    switch (opcode) {
        case IORING_OP_FSYNC:
            return rng.range(50, 3'000);
        case IORING_OP_WRITE:
        case IORING_OP_WRITEV:
            return rng.range(5, 300);
        default:
            return rng.range(2, 100);
    }
}

void World::activate(Op& op) {
    op.st = Op::St::active;
    const io_uring_sqe& s = op.sqe;
    switch (s.opcode) {
        case IORING_OP_TIMEOUT: {
            const auto* ts = reinterpret_cast<const __kernel_timespec*>(s.addr);
            op.ready_at = now_us_ + uint64_t(ts->tv_sec) * 1'000'000 + uint64_t(ts->tv_nsec) / 1000;
            return;
        }
        case IORING_OP_ASYNC_CANCEL:
            cancel(op);  // runs at once, as the kernel's does
            op.ready_at = now_us_;
            return;
        case IORING_OP_CONNECT:
            op.connect_res = connect_verdict(s, &op.never);
            op.ready_at = now_us_ + rng.range(50, 40'000);
            return;
        case IORING_OP_NOP:
        case IORING_OP_MSG_RING:
        case IORING_OP_RECV:
        case IORING_OP_SEND:
        case IORING_OP_ACCEPT:
            op.ready_at = now_us_;
            return;
        case IORING_OP_CLOSE:
        case IORING_OP_READ:
            op.ready_at = now_us_ + (disk.is_file(s.fd) ? file_latency_us(s.opcode) : 0);
            return;
        default:
            op.ready_at = now_us_ + file_latency_us(s.opcode);
    }
}

// IORING_OP_ASYNC_CANCEL by user_data or by fd (IORING_ASYNC_CANCEL_FD), one or all
// (IORING_ASYNC_CANCEL_ALL). Operations waiting on a socket or a timer are cancelled; file
// operations already running are not (-EALREADY), as with io-wq work.
void World::cancel(Op& c) {
    const bool by_fd = c.sqe.cancel_flags & IORING_ASYNC_CANCEL_FD;
    const bool all = c.sqe.cancel_flags & IORING_ASYNC_CANCEL_ALL;
    int found = 0, cancelled = 0;
    for (auto& p : ops_) {
        Op& t = *p;
        if (&t == &c || t.r != c.r || t.st != Op::St::active) continue;
        if (t.sqe.opcode == IORING_OP_ASYNC_CANCEL) continue;
        const bool match = by_fd ? t.sqe.fd == c.sqe.fd : t.sqe.user_data == c.sqe.addr;
        if (!match) continue;
        found++;
        const uint8_t code = t.sqe.opcode;
        const bool waits = code == IORING_OP_RECV || code == IORING_OP_SEND ||
                           code == IORING_OP_ACCEPT || code == IORING_OP_TIMEOUT ||
                           code == IORING_OP_CONNECT ||
                           (code == IORING_OP_READ && !disk.is_file(t.sqe.fd));
        if (waits) {
            t.st = Op::St::cancelled;
            cancelled++;
        }
        if (!all) break;
    }
    int res;
    if (all)
        res = cancelled;
    else
        res = found == 0 ? -ENOENT : (cancelled ? 0 : -EALREADY);
    c.sqe.len = static_cast<uint32_t>(res);  // kept for the completion
    c.sqe.off = static_cast<uint64_t>(static_cast<int64_t>(res));
    trace(0xca, static_cast<uint64_t>(found), static_cast<uint64_t>(cancelled));
}

// --- readiness and execution -------------------------------------------------------------------

bool World::ready(const Op& op) const {
    if (op.st == Op::St::cancelled) return true;
    if (op.st != Op::St::active || now_us_ < op.ready_at) return false;
    const io_uring_sqe& s = op.sqe;
    switch (s.opcode) {
        case IORING_OP_RECV: {
            auto it = sockets.find(s.fd);
            if (it == sockets.end()) return true;  // -EBADF
            const Socket& k = it->second;
            return k.rst || k.unread_by_server() > 0 || k.client_fin;
        }
        case IORING_OP_SEND: {
            auto it = sockets.find(s.fd);
            if (it == sockets.end()) return true;
            const Socket& k = it->second;
            return k.rst || k.client_closed || k.unread_by_client() < k.window;
        }
        case IORING_OP_ACCEPT:
            return s.fd != listen_fd_ || !backlog.empty();
        case IORING_OP_CONNECT:
            return !op.never;
        case IORING_OP_READ:
            if (s.fd == stop_fd_) return stop_requested_;
            return true;
        default:
            return true;
    }
}

int World::file_fault(uint8_t opcode) {
    if (fault_rate_ppm == 0 || rng.below(1'000'000) >= fault_rate_ppm) return 0;
    stats.faults++;
    switch (opcode) {
        case IORING_OP_FALLOCATE:
            return -ENOSPC;
        case IORING_OP_WRITE:
        case IORING_OP_WRITEV:
            return rng.chance(1, 2) ? -EIO : -ENOSPC;
        case IORING_OP_FSYNC:
        case IORING_OP_SYNC_FILE_RANGE:
            return -EIO;
        case IORING_OP_OPENAT:
            return -ENOSPC;
        default:
            return 0;
    }
}

void World::execute(Op& op, std::vector<SimCqe>& out) {
    const io_uring_sqe& s = op.sqe;
    if (op.st == Op::St::cancelled) return complete(op, -ECANCELED, 0, out);
    switch (s.opcode) {
        case IORING_OP_NOP:
            return complete(op, 0, 0, out);
        case IORING_OP_TIMEOUT:
            timeouts_fired_++;
            return complete(op, -ETIME, 0, out);
        case IORING_OP_ASYNC_CANCEL:
            return complete(op, static_cast<int>(static_cast<int64_t>(s.off)), 0, out);
        case IORING_OP_MSG_RING:
            // One core only: a wake to ourselves (or a dead ring) has nothing to carry.
            return complete(op, -EBADFD, 0, out);
        case IORING_OP_CONNECT: {
            Socket* k = socket_of(s.fd);
            if (k == nullptr || k->server_closed) return complete(op, -EBADF, 0, out);
            if (k->mx != Socket::kUnconnected) return complete(op, -EISCONN, 0, out);
            if (op.connect_res == 0) mx_connected(*k);
            return complete(op, op.connect_res, 0, out);
        }
        case IORING_OP_ACCEPT: {
            if (s.fd != listen_fd_) return complete(op, -EBADF, 0, out);
            const int fd = backlog.front();
            backlog.pop_front();
            // The kernel may end a multishot at any completion; the engine must re-arm.
            const bool more = !rng.chance(1, 25);
            return complete(op, fd, more ? IORING_CQE_F_MORE : 0, out);
        }
        case IORING_OP_RECV: {
            Socket* k = socket_of(s.fd);
            if (k == nullptr) return complete(op, -EBADF, 0, out);
            if (k->rst) return complete(op, -ECONNRESET, 0, out);
            if (k->unread_by_server() == 0) return complete(op, 0, 0, out);  // FIN
            const int bid = op.r->take_buffer();
            if (bid < 0) {
                check_enobufs(op);
                return complete(op, -ENOBUFS, 0, out);
            }
            size_t n = std::min<size_t>(k->unread_by_server(), op.r->buffer_bytes());
            if (rng.chance(1, 4)) n = rng.range(1, n);  // a partial receive
            memcpy(op.r->buffer(static_cast<uint16_t>(bid)), k->to_server.data() + k->to_server_off,
                   n);
            k->to_server_off += n;
            k->server_read_total += n;
            if (k->to_server_off == k->to_server.size()) {
                k->to_server.clear();
                k->to_server_off = 0;
            }
            const bool more = !rng.chance(1, 40);
            uint32_t flags = IORING_CQE_F_BUFFER | (uint32_t(bid) << IORING_CQE_BUFFER_SHIFT) |
                             (more ? IORING_CQE_F_MORE : 0);
            return complete(op, static_cast<int>(n), flags, out);
        }
        case IORING_OP_SEND: {
            Socket* k = socket_of(s.fd);
            if (k == nullptr) return complete(op, -EBADF, 0, out);
            if (k->rst) return complete(op, rng.chance(1, 2) ? -ECONNRESET : -EPIPE, 0, out);
            if (k->client_closed) {
                // Data to a closed peer is answered with an RST: this send succeeds, the
                // connection is reset.
                k->rst = true;
                return complete(op, static_cast<int>(s.len), 0, out);
            }
            size_t room = k->window - k->unread_by_client();
            size_t n = std::min<size_t>(s.len, room);
            if (n > 1 && rng.chance(1, 8)) n = rng.range(1, n);  // a short send
            k->to_client.append(reinterpret_cast<const char*>(s.addr), n);
            wake_peer(*k, rng.range(20, 400));
            return complete(op, static_cast<int>(n), 0, out);
        }
        case IORING_OP_CLOSE: {
            if (Socket* k = socket_of(s.fd)) {
                if (k->server_closed) return complete(op, -EBADF, 0, out);
                for (auto& p : ops_)
                    if (p.get() != &op && p->sqe.fd == s.fd && p->st != Op::St::linked &&
                        p->sqe.opcode != IORING_OP_CLOSE && p->sqe.opcode != IORING_OP_ASYNC_CANCEL)
                        throw Failure("close of socket " + std::to_string(s.fd) +
                                      " with an operation still in flight on it (opcode " +
                                      std::to_string(p->sqe.opcode) + ")");
                k->server_closed = true;
                wake_peer(*k, rng.range(20, 400));
                return complete(op, 0, 0, out);
            }
            return complete(op, disk.close(s.fd), 0, out);
        }
        case IORING_OP_READ: {
            if (s.fd == stop_fd_) {
                uint64_t one = 1;
                memcpy(reinterpret_cast<void*>(s.addr), &one, std::min<size_t>(s.len, 8));
                return complete(op, 8, 0, out);
            }
            return complete(op, disk.pread(s.fd, reinterpret_cast<char*>(s.addr), s.len, s.off), 0,
                            out);
        }
        default:
            break;
    }
    // File operations, with injected faults.
    if (int fault = file_fault(s.opcode); fault != 0) {
        trace(0xfa17, s.opcode, static_cast<uint64_t>(-fault));
        return complete(op, fault, 0, out);
    }
    switch (s.opcode) {
        case IORING_OP_WRITE: {
            size_t n = s.len;
            if (fault_rate_ppm && n > 1 && rng.below(1'000'000) < fault_rate_ppm)
                n = rng.range(1, n - 1);  // a short write (a full disk mid-write)
            return complete(op, disk.pwrite(s.fd, reinterpret_cast<const char*>(s.addr), n, s.off),
                            0, out);
        }
        case IORING_OP_WRITEV: {
            const auto* iov = reinterpret_cast<const iovec*>(s.addr);
            size_t total = 0;
            for (uint32_t i = 0; i < s.len; i++)
                total += iov[i].iov_len;
            size_t n = total;
            if (fault_rate_ppm && n > 1 && rng.below(1'000'000) < fault_rate_ppm)
                n = rng.range(1, n - 1);
            return complete(op, disk.pwritev(s.fd, iov, static_cast<int>(s.len), s.off, n), 0, out);
        }
        case IORING_OP_FSYNC:
            return complete(op, disk.sync(s.fd), 0, out);
        case IORING_OP_SYNC_FILE_RANGE:
            return complete(op, disk.is_file(s.fd) ? 0 : -EBADF, 0, out);
        case IORING_OP_FALLOCATE:
            return complete(op, disk.fallocate(s.fd, s.off, s.addr), 0, out);
        case IORING_OP_OPENAT: {
            if (s.fd != AT_FDCWD) throw Failure("openat relative to a directory fd");
            const int fd = disk.open(reinterpret_cast<const char*>(s.addr),
                                     static_cast<int>(s.open_flags), static_cast<mode_t>(s.len));
            return complete(op, fd, 0, out);
        }
        case IORING_OP_UNLINKAT:
            if (delivery) {
                // What the segment held, for run.cpp's checks of what delivery deleted.
                const std::string path = reinterpret_cast<const char*>(s.addr);
                if (path.ends_with(".seg") && before_unlink) before_unlink(path);
            }
            return complete(op, disk.unlink(reinterpret_cast<const char*>(s.addr)), 0, out);
        default:
            throw Failure("unhandled opcode " + std::to_string(s.opcode));
    }
}

// A receive re-armed after ENOBUFS can only fail again until a buffer comes back: one re-armed
// with no buffer published since its last failure, and no tick, is a busy loop of failing
// receives (the engine re-armed starved connections at every iteration).
void World::check_enobufs(const Op& op) {
    stats.recv_enobufs++;
    const Starved now{op.r->buffers_published(), timeouts_fired_};
    auto [it, first] = starved_.try_emplace(op.sqe.fd, now);
    if (!first && it->second.published == now.published && it->second.timeouts == now.timeouts)
        throw Failure("socket " + std::to_string(op.sqe.fd) +
                      ": a receive failed with ENOBUFS again with no buffer returned to the ring "
                      "and no tick since the last one (a starved receive re-armed in a busy loop)");
    it->second = now;
}

// A completion: posted (unless IOSQE_CQE_SKIP_SUCCESS hides a success), then the link chain
// moves on. A failed or short link member cancels the rest of a soft link chain.
void World::complete(Op& op, int res, uint32_t flags, std::vector<SimCqe>& out) {
    const io_uring_sqe& s = op.sqe;
    const bool skip = (s.flags & IOSQE_CQE_SKIP_SUCCESS) && res >= 0;
    const bool file_fd_res = s.opcode == IORING_OP_OPENAT && res >= 0;
    trace(0xc0e, s.opcode, static_cast<uint64_t>(file_fd_res ? 0 : res) ^ (uint64_t(flags) << 32));
    if (!skip) out.push_back(SimCqe{s.user_data, res, flags});
    stats.cqes++;
    if (flags & IORING_CQE_F_MORE) {
        op.fired = true;
        return;
    }
    bool failed = res < 0;
    if ((s.opcode == IORING_OP_WRITE || s.opcode == IORING_OP_READ) && res >= 0 &&
        static_cast<uint32_t>(res) != s.len)
        failed = true;
    if (s.opcode == IORING_OP_WRITEV && res >= 0) {
        const auto* iov = reinterpret_cast<const iovec*>(s.addr);
        size_t total = 0;
        for (uint32_t i = 0; i < s.len; i++)
            total += iov[i].iov_len;
        if (static_cast<size_t>(res) != total) failed = true;
    }
    Op* next = op.link_next;
    const bool hard = op.hard_link;
    remove(op);
    while (next) {
        if (!failed || hard) {
            activate(*next);
            return;
        }
        // The rest of the chain is cancelled, each with its own completion.
        Op* after = next->link_next;
        const bool next_hard = next->hard_link;
        out.push_back(SimCqe{next->sqe.user_data, -ECANCELED, 0});
        trace(0xc0e, next->sqe.opcode, static_cast<uint64_t>(-ECANCELED));
        remove(*next);
        next = after;
        if (next_hard) failed = false;  // a hard link after it runs whatever happened
    }
}

void World::remove(Op& op) {
    for (size_t i = 0; i < ops_.size(); i++) {
        if (ops_[i].get() == &op) {
            ops_.erase(ops_.begin() + static_cast<long>(i));
            return;
        }
    }
}

void World::detach(Reactor& r) {
    std::erase_if(ops_, [&](const std::unique_ptr<Op>& p) { return p->r == &r; });
}

// --- the loop ------------------------------------------------------------------------------

void World::run_clients() {
    // Arrivals, while an engine listens (a stopping one has closed its listener: clients
    // come back to the next one).
    while (clients.size() < clients_total && next_arrival_us <= now_us_ && engine_ != nullptr &&
           !stop_requested_) {
        if (model != nullptr)
            model->spawn(*this);
        else
            spawn_client();
        next_arrival_us = now_us_ + rng.range(0, arrival_gap_max_us);
    }
    // Clients due now, in id order (a client may make another due: a later pass runs it).
    for (size_t i = 0; i < clients.size(); i++) {
        Client& c = *clients[i];
        if (c.state == Client::State::done || c.next_us > now_us_) continue;
        if (model != nullptr)
            model->step(*this, c);
        else
            client_step(c);
    }
    for (size_t i = 0; i < mx_sessions.size(); i++) {
        MxSession& m = mx_sessions[i];
        if (m.phase != MxSession::Phase::gone && m.next_us <= now_us_) mx_step(m);
    }
}

uint64_t World::next_event_us() const {
    uint64_t t = kNever;
    for (const auto& p : ops_)
        if (p->st == Op::St::active && p->ready_at > now_us_) t = std::min(t, p->ready_at);
    for (const auto& c : clients)
        if (c->state != Client::State::done) t = std::min(t, c->next_us);
    for (const auto& m : mx_sessions)
        if (m.phase != MxSession::Phase::gone) t = std::min(t, m.next_us);
    if (clients.size() < clients_total && !stop_requested_) t = std::min(t, next_arrival_us);
    if (crash_index_ < crash_at_us.size()) t = std::min(t, crash_at_us[crash_index_]);
    if (restart_index_ < restart_at_us.size() && !stop_requested_)
        t = std::min(t, restart_at_us[restart_index_]);
    return t;
}

void World::wait(Reactor& r, std::vector<SimCqe>& out) {
    stats.steps++;
    if (stats.steps > opt.steps_max)
        throw Failure("the run did not end within " + std::to_string(opt.steps_max) + " steps" +
                      describe());
    // Every loop iteration costs the engine some CPU time: a loop that spins (a receive
    // re-armed while no buffer is free) lets the rest of the world move on, as it does on
    // a real machine.
    now_us_ += rng.range(1, 20);
    check_iteration(r);
    for (;;) {
        if (crash_index_ < crash_at_us.size() && crash_at_us[crash_index_] <= now_us_) {
            crash_index_++;
            throw Crash{};
        }
        if (restart_index_ < restart_at_us.size() && restart_at_us[restart_index_] <= now_us_ &&
            !stop_requested_) {
            restart_index_++;
            stop_requested_ = true;  // the stop read completes: a graceful stop, clients or not
            trace(0x4e57);
        }
        run_clients();
        std::vector<Op*> ready_ops;
        for (auto& p : ops_)
            if (p->r == &r && ready(*p)) ready_ops.push_back(p.get());
        if (!ready_ops.empty()) {
            // A random part of what is ready, in a random order: the rest comes next round.
            for (size_t i = ready_ops.size(); i > 1; i--)
                std::swap(ready_ops[i - 1], ready_ops[rng.below(i)]);
            size_t take = rng.chance(1, batch_bias) ? 1 : rng.range(1, ready_ops.size());
            ready_ops.resize(take);
            for (Op* op : ready_ops) {
                // An earlier completion of this batch may have removed or cancelled it.
                bool alive = false;
                for (auto& p : ops_)
                    alive = alive || p.get() == op;
                if (alive && ready(*op)) execute(*op, out);
            }
            if (!out.empty()) return;
            continue;
        }
        const uint64_t t = next_event_us();
        if (t == kNever)
            throw Failure("deadlock: the engine waits and nothing in the world can wake it" +
                          describe());
        now_us_ = std::max(now_us_, t);
    }
}

// At the top of each engine iteration (a consistent point): once every client has gone, the
// engine must come back to its baseline, then it is asked to stop.
void World::check_iteration(Reactor& r) {
    if (engine_ == nullptr || stop_requested_ || !all_clients_done()) return;
    // A crash or a restart is still to come.
    if (crash_index_ < crash_at_us.size() || restart_index_ < restart_at_us.size()) return;
    if (settle_deadline_us_ == 0) settle_deadline_us_ = now_us_ + 400ull * 1000 * 1000;
    Engine& e = *engine_;
    // A connection refused for lack of slots gets its 421 and close with nothing tracking
    // them in the engine (Engine::refuse_busy): they may still be in flight.
    const bool inbound_settled =
        e.open_connections() == 0 && backlog.empty() && server_sockets_open() == 0;
    const bool settled = inbound_settled && e.committer().idle();
    // With delivery, the run goes on until the queue is empty or the drain time has passed,
    // and stops at an instant when no outbound connection is open.
    // Not before the engine has handed its recovered messages to delivery (it runs the ring
    // before that, waiting for its first segment).
    if (delivery && recovered_ != nullptr && !recovered_->empty()) return;
    // (Delivery's statuses keep the committer busy meanwhile: it is waited for with them.)
    if (inbound_settled && e.delivery() != nullptr) {
        if (drain_deadline_us_ == 0) drain_deadline_us_ = now_us_ + drain_us;
        const Delivery& d = *e.delivery();
        const bool drained = d.queued() == 0 || now_us_ > drain_deadline_us_;
        const bool outbound_idle = e.destinations() == nullptr || e.destinations()->idle();
        if (!drained || !outbound_idle || !settled) {
            if (now_us_ > drain_deadline_us_ + 400ull * 1000 * 1000)
                throw Failure(
                    "delivery or the committer never went idle 400 s after the drain time" +
                    describe());
            return;
        }
    }
    if (!settled) {
        if (now_us_ > settle_deadline_us_)
            throw Failure("every client has gone, and after 400 s the engine still has " +
                          std::to_string(e.open_connections()) + " connections open" + describe());
        return;
    }
    check_baseline(r);
    stop_requested_ = true;
    trace(0x5709);
}

// What is going on, for a failure's report.
std::string World::describe() const {
    std::string d = "\n  at " + std::to_string(now_us_) + " us; clients not done:";
    for (const auto& c : clients) {
        if (c->state == Client::State::done) continue;
        auto it = sockets.find(c->fd);
        d += "\n    client " + std::to_string(c->id) + " fd " + std::to_string(c->fd) + " state " +
             std::to_string(static_cast<int>(c->state)) + " pc " + std::to_string(c->pc) + "/" +
             std::to_string(c->script.size()) + " expects " + std::to_string(c->expects.size()) +
             " next " + std::to_string(c->next_us);
        if (it != sockets.end())
            d += " sock fin " + std::to_string(it->second.client_fin) + " rst " +
                 std::to_string(it->second.rst) + " srv_closed " +
                 std::to_string(it->second.server_closed) + " to_server " +
                 std::to_string(it->second.unread_by_server()) + " to_client " +
                 std::to_string(it->second.unread_by_client());
    }
    d += "\n  operations in flight:";
    for (const auto& p : ops_)
        d += "\n    opcode " + std::to_string(p->sqe.opcode) + " fd " + std::to_string(p->sqe.fd) +
             " state " + std::to_string(static_cast<int>(p->st)) + " ready_at " +
             std::to_string(p->ready_at);
    if (engine_) {
        Committer& c = engine_->committer();
        d += "\n  engine connections open: " + std::to_string(engine_->open_connections()) +
             "; committer idle " + std::to_string(c.idle()) + " batches in flight " +
             std::to_string(c.batches_inflight()) + " segment settled " +
             std::to_string(c.segment_settled()) + " messages " +
             std::to_string(c.stats().messages) + " failed " + std::to_string(c.stats().failed);
    }
    return d;
}

void World::check_baseline(Reactor& r) {
    Engine& e = *engine_;
    if (e.addresses_with_permits() != 0)
        throw Failure("no connection is open, yet " + std::to_string(e.addresses_with_permits()) +
                      " client addresses hold permits");
    if (server_sockets_open() != 0)
        throw Failure(std::to_string(server_sockets_open()) +
                      " sockets never closed by the engine after their clients left");
    if (r.buffers_in_kernel() + r.buffers_recycled_unpublished() != r.buffer_count())
        throw Failure(std::to_string(r.buffer_count() - r.buffers_in_kernel() -
                                     r.buffers_recycled_unpublished()) +
                      " receive buffers still held with no connection open");
    for (const auto& p : ops_) {
        const uint8_t code = p->sqe.opcode;
        if (code == IORING_OP_RECV || code == IORING_OP_SEND)
            throw Failure("a socket operation is in flight with no connection open");
    }
    baseline_checked_ = true;
}

}  // namespace ringmail::sim
