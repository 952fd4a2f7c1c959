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
    [[nodiscard]] uint32_t buffer_bytes() const { return buffer_bytes_; }

    [[nodiscard]] int ring_fd() const { return ring_.ring_fd; }
    [[nodiscard]] bool msg_ring_supported() const { return msg_ring_; }
    [[nodiscard]] bool owner_thread() const;  // asserted at entry points
    [[nodiscard]] uint64_t submits() const { return submits_; }

  private:
    void publish_buffers();

    io_uring ring_{};
    bool ring_ok_ = false;
    bool msg_ring_ = false;
    io_uring_buf_ring* buf_ring_ = nullptr;
    char* buffers_ = nullptr;
    uint32_t buffer_bytes_ = 0;
    uint32_t buffer_count_ = 0;
    uint32_t buffers_pending_ = 0;  // recycled since the last publish
    uint64_t submits_ = 0;
    unsigned long owner_tid_ = 0;
};

template <typename TagFn>
void Reactor::run_once(TagFn&& on_tag) {
    publish_buffers();
    int r = io_uring_submit_and_wait(&ring_, 1);
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

}  // namespace ringmail
