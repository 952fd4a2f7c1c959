// reactor.hpp — one io_uring per core thread, and the completion contexts that ride on it.
//
// A Reactor is created on, and only ever used from, its own thread (SINGLE_ISSUER). Every
// operation's user_data is the address of an IoOp embedded in the object that owns the
// operation (a connection embeds its recv, send and close ops), so nothing is allocated per
// operation. The loop is batched: submit everything prepared, wait, reap every completion and
// run its handler, then let the owner run its end-of-iteration work (group commit, wakes).
//
// The provided buffer ring (IORING_REGISTER_PBUF_RING) feeds multishot recv: the kernel picks
// a buffer per completion; the owner hands it back with recycle() once parsed.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/assert.hpp"
#include "core/runtime/sim_hooks.hpp"

namespace ringmail {

struct IoOp {
    using Fn = void (*)(void* owner, int res, uint32_t cqe_flags);
    Fn fn = nullptr;
    void* owner = nullptr;
    [[nodiscard]] uint64_t user_data() { return reinterpret_cast<uintptr_t>(this); }
};

// user_data values below this are tags, not IoOp addresses.
inline constexpr uint64_t kTagIgnore = 0;  // completions nobody waits for (cancels)
inline constexpr uint64_t kTagWake = 1;    // a MSG_RING from another core: drain the channels
inline constexpr uint64_t kTagMax = 16;

#ifdef RINGMAIL_SIM

// The simulated reactor (builds with RINGMAIL_SIM: the deterministic simulator of tests/sim/).
// It has the production API, so the drivers compile unchanged: they fill SQEs from its own
// array with liburing's inline io_uring_prep_* helpers, and run_once hands what they prepared
// to a SimBackend (the simulated world), which executes it against simulated sockets, disks
// and clocks and answers with completions in an order chosen by the seed. Virtual calls are
// acceptable here: only the simulator has them.
struct SimCqe {
    uint64_t user_data;
    int res;
    uint32_t flags;
};

class Reactor;
class SimBackend {
  public:
    // The SQEs prepared since the last call, in order (links run in this order).
    virtual void submit(Reactor& r, const io_uring_sqe* sqes, uint32_t n) = 0;
    // Runs the world (advancing its virtual clock) until at least one completion of r is
    // ready and appends them to out. May throw to end the engine at that instant (a crash).
    virtual void wait(Reactor& r, std::vector<SimCqe>& out) = 0;
    // The reactor is going away: its operations in flight are dropped.
    virtual void detach(Reactor& r) = 0;

  protected:
    ~SimBackend() = default;
};
void set_sim_backend(SimBackend* b);  // core/runtime/reactor.cpp
SimBackend& sim_backend();

class Reactor {
  public:
    Reactor() = default;
    ~Reactor();
    Reactor(const Reactor&) = delete;
    Reactor& operator=(const Reactor&) = delete;

    [[nodiscard]] bool init(uint32_t entries, uint32_t buffer_bytes, uint32_t buffer_count,
                            std::string* error);
    io_uring_sqe* sqe();
    io_uring_sqe* sqe(IoOp& op) {
        io_uring_sqe* s = sqe();
        io_uring_sqe_set_data64(s, op.user_data());
        return s;
    }
    // See the io_uring Reactor's reserve().
    void reserve(uint32_t n) {
        RM_ASSERT(n <= sq_.size());
        if (sq_.size() - sq_used_ < n) submit_prepared();
    }
    template <typename TagFn>
    void run_once(TagFn&& on_tag);

    [[nodiscard]] uint16_t buffer_group() const { return 0; }
    [[nodiscard]] char* buffer(uint16_t bid) const {
        return buffers_ + static_cast<size_t>(bid) * buffer_bytes_;
    }
    void recycle(uint16_t bid);
    // See the io_uring Reactor's.
    [[nodiscard]] uint64_t buffers_recycled() const { return buffers_published_ + pending_.size(); }
    [[nodiscard]] uint64_t buffers_published() const { return buffers_published_; }
    [[nodiscard]] uint32_t buffer_bytes() const { return buffer_bytes_; }
    [[nodiscard]] int ring_fd() const { return ring_fd_; }
    [[nodiscard]] bool msg_ring_supported() const { return true; }
    [[nodiscard]] bool owner_thread() const { return true; }
    [[nodiscard]] uint64_t submits() const { return submits_; }
    [[nodiscard]] uint64_t wait_us() const { return 0; }  // simulated time is not idle time

    // For the backend: the simulated ring's identity and its provided buffers.
    void set_ring_fd(int fd) { ring_fd_ = fd; }
    [[nodiscard]] int take_buffer();  // the next provided buffer (kernel order), or -1
    [[nodiscard]] uint32_t buffers_in_kernel() const { return static_cast<uint32_t>(ring_.size()); }
    [[nodiscard]] uint32_t buffer_count() const { return buffer_count_; }
    [[nodiscard]] uint32_t buffers_recycled_unpublished() const {
        return static_cast<uint32_t>(pending_.size());
    }

  private:
    void submit_prepared();
    void publish_buffers();

    std::vector<io_uring_sqe> sq_;
    uint32_t sq_used_ = 0;
    std::vector<SimCqe> cq_;
    char* buffers_ = nullptr;
    uint32_t buffer_bytes_ = 0;
    uint32_t buffer_count_ = 0;
    std::vector<uint16_t> ring_;  // FIFO of buffers the "kernel" may pick, oldest first
    size_t ring_head_ = 0;
    std::vector<uint16_t> pending_;  // recycled since the last publish
    std::vector<uint8_t> in_app_;    // per buffer: handed to the application, not yet recycled
    uint64_t buffers_published_ = 0;
    uint64_t submits_ = 0;
    int ring_fd_ = -1;
};

template <typename TagFn>
void Reactor::run_once(TagFn&& on_tag) {
    publish_buffers();
    submit_prepared();
    submits_++;
    cq_.clear();
    sim_backend().wait(*this, cq_);
    // Handlers may prepare new SQEs; they go to the backend at the next run_once.
    for (size_t i = 0; i < cq_.size(); i++) {
        const SimCqe c = cq_[i];
        if (c.user_data < kTagMax) {
            if (c.user_data != kTagIgnore) on_tag(c.user_data, c.res);
            continue;
        }
        IoOp* op = reinterpret_cast<IoOp*>(static_cast<uintptr_t>(c.user_data));
        op->fn(op->owner, c.res, c.flags);
    }
}

#else

class Reactor {
  public:
    Reactor() = default;
    ~Reactor();
    Reactor(const Reactor&) = delete;
    Reactor& operator=(const Reactor&) = delete;

    // On the owning thread. buffer_count must be a power of two.
    [[nodiscard]] bool init(uint32_t entries, uint32_t buffer_bytes, uint32_t buffer_count,
                            std::string* error);

    // Never null: submits to make room when the submission queue is full.
    io_uring_sqe* sqe();
    io_uring_sqe* sqe(IoOp& op) {
        io_uring_sqe* s = sqe();
        io_uring_sqe_set_data64(s, op.user_data());
        return s;
    }
    // Room for a chain of n linked operations before its first sqe(): the kernel ends a link
    // chain at the end of a submission, so a chain that sqe() split to make room would run as
    // two unordered parts (an fdatasync before the write it was to cover, and a 250 for a
    // record that was not durable: the simulator's seed 20372 with a small ring).
    void reserve(uint32_t n) {
        RM_ASSERT(n <= entries_);
        if (io_uring_sq_space_left(&ring_) < n) {
            io_uring_submit(&ring_);
            submits_++;
        }
    }

    // Submit and wait for at least one completion, then dispatch every completion.
    // on_tag is called for tagged completions (kTagWake).
    template <typename TagFn>
    void run_once(TagFn&& on_tag);

    // Provided receive buffers (buffer group 0).
    [[nodiscard]] uint16_t buffer_group() const { return 0; }
    [[nodiscard]] char* buffer(uint16_t bid) const {
        return buffers_ + static_cast<size_t>(bid) * buffer_bytes_;
    }
    void recycle(uint16_t bid);  // published to the kernel at the next submit
    // Buffers handed back since start (a counter that only grows), and of those the ones
    // published to the kernel: a receive that found the ring empty can succeed only once
    // buffers_recycled() has passed what buffers_published() was when it failed.
    [[nodiscard]] uint64_t buffers_recycled() const {
        return buffers_published_ + buffers_pending_;
    }
    [[nodiscard]] uint64_t buffers_published() const { return buffers_published_; }
    [[nodiscard]] uint32_t buffer_bytes() const { return buffer_bytes_; }

    [[nodiscard]] int ring_fd() const { return ring_.ring_fd; }
    [[nodiscard]] bool msg_ring_supported() const { return msg_ring_; }
    [[nodiscard]] bool owner_thread() const;  // asserted at entry points
    [[nodiscard]] uint64_t submits() const { return submits_; }
    [[nodiscard]] uint64_t wait_us() const { return wait_us_; }

  private:
    void publish_buffers();

    io_uring ring_{};
    bool ring_ok_ = false;
    bool msg_ring_ = false;
    io_uring_buf_ring* buf_ring_ = nullptr;
    char* buffers_ = nullptr;
    uint32_t buffer_bytes_ = 0;
    uint32_t buffer_count_ = 0;
    uint32_t entries_ = 0;            // submission queue entries
    uint32_t buffers_pending_ = 0;    // recycled since the last publish
    uint64_t buffers_published_ = 0;  // in all, including the initial ones
    uint64_t submits_ = 0;
    uint64_t wait_us_ = 0;  // in io_uring_submit_and_wait: the core's idle time, for metrics
    unsigned long owner_tid_ = 0;
};

template <typename TagFn>
void Reactor::run_once(TagFn&& on_tag) {
    publish_buffers();
    const uint64_t t0 = sys::precise_us();
    int r = io_uring_submit_and_wait(&ring_, 1);
    wait_us_ += sys::precise_us() - t0;
    submits_++;
    (void)r;  // -EINTR / -EAGAIN: just reap what is there and come back
    unsigned head, n = 0;
    io_uring_cqe* cqe;
    // Reap in a bounded batch; handlers may prepare new SQEs (they are submitted next round).
    io_uring_for_each_cqe(&ring_, head, cqe) {
        n++;
        uint64_t ud = cqe->user_data;
        int res = cqe->res;
        uint32_t flags = cqe->flags;
        if (ud < kTagMax) {
            if (ud != kTagIgnore) on_tag(ud, res);
            continue;
        }
        IoOp* op = reinterpret_cast<IoOp*>(static_cast<uintptr_t>(ud));
        op->fn(op->owner, res, flags);
    }
    io_uring_cq_advance(&ring_, n);
}

#endif  // RINGMAIL_SIM

}  // namespace ringmail
