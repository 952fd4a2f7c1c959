// reactor.cpp — ring setup, provided buffers. See reactor.hpp.
#include "core/runtime/reactor.hpp"

#include <pthread.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/base/log.hpp"
#include "core/runtime/sim_hooks.hpp"

namespace ringmail {

#ifdef RINGMAIL_SIM

namespace {
SimBackend* g_backend = nullptr;
sys::SimHooks g_hooks;
}  // namespace

sys::SimHooks& sys::sim_hooks() {
    return g_hooks;
}

void set_sim_backend(SimBackend* b) {
    g_backend = b;
}

SimBackend& sim_backend() {
    RM_ASSERT(g_backend != nullptr);
    return *g_backend;
}

Reactor::~Reactor() {
    if (g_backend != nullptr) g_backend->detach(*this);
    free(buffers_);
}

bool Reactor::init(uint32_t entries, uint32_t buffer_bytes, uint32_t buffer_count,
                   std::string* error) {
    sq_.resize(entries);
    buffer_bytes_ = buffer_bytes;
    buffer_count_ = buffer_count;
    buffers_ = static_cast<char*>(malloc(size_t{buffer_bytes} * buffer_count));
    if (!buffers_) {
        *error = "out of memory for receive buffers";
        return false;
    }
    in_app_.assign(buffer_count, 0);
    ring_.reserve(buffer_count);
    for (uint32_t i = 0; i < buffer_count; i++)
        ring_.push_back(static_cast<uint16_t>(i));
    buffers_published_ = buffer_count;
    return true;
}

io_uring_sqe* Reactor::sqe() {
    if (sq_used_ == sq_.size()) submit_prepared();  // full: submit to make room, as io_uring
    io_uring_sqe* s = &sq_[sq_used_++];
    memset(s, 0, sizeof *s);
    return s;
}

void Reactor::submit_prepared() {
    if (sq_used_ == 0) return;
    // Reset first: the backend may run handlers that prepare more.
    const uint32_t n = sq_used_;
    sq_used_ = 0;
    std::vector<io_uring_sqe> batch(sq_.begin(), sq_.begin() + n);
    sim_backend().submit(*this, batch.data(), n);
}

int Reactor::take_buffer() {
    if (ring_head_ == ring_.size()) return -1;
    const uint16_t bid = ring_[ring_head_++];
    if (ring_head_ == ring_.size()) {
        ring_.clear();
        ring_head_ = 0;
    }
    RM_ASSERT(!in_app_[bid]);
    in_app_[bid] = 1;
    return bid;
}

void Reactor::recycle(uint16_t bid) {
    // A buffer given back twice, or one never handed out, would be picked for two receives
    // at once: the kernel cannot tell, the simulator can.
    RM_ASSERT(bid < buffer_count_ && in_app_[bid]);
    in_app_[bid] = 0;
    pending_.push_back(bid);
}

void Reactor::publish_buffers() {
    if (ring_head_ > 0) {
        ring_.erase(ring_.begin(), ring_.begin() + static_cast<long>(ring_head_));
        ring_head_ = 0;
    }
    ring_.insert(ring_.end(), pending_.begin(), pending_.end());
    buffers_published_ += pending_.size();
    pending_.clear();
}

#else

Reactor::~Reactor() {
    if (ring_ok_) {
        if (buf_ring_) io_uring_unregister_buf_ring(&ring_, 0);
        io_uring_queue_exit(&ring_);
    }
    if (buf_ring_) munmap(buf_ring_, buffer_count_ * sizeof(io_uring_buf));
    free(buffers_);
}

bool Reactor::init(uint32_t entries, uint32_t buffer_bytes, uint32_t buffer_count,
                   std::string* error) {
    owner_tid_ = pthread_self();
    io_uring_params p{};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
              IORING_SETUP_SUBMIT_ALL;
    p.cq_entries = entries * 4;
    int r = io_uring_queue_init_params(entries, &ring_, &p);
    if (r == -EINVAL) {
        // Kernels before 6.1 lack DEFER_TASKRUN (and before 6.0 SINGLE_ISSUER).
        io_uring_params q{};
        q.flags = IORING_SETUP_CQSIZE;
        q.cq_entries = entries * 4;
        r = io_uring_queue_init_params(entries, &ring_, &q);
    }
    if (r < 0) {
        *error = std::string("io_uring_queue_init: ") + strerror(-r);
        return false;
    }
    ring_ok_ = true;
    entries_ = ring_.sq.ring_entries;
    if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_)) {
        msg_ring_ = io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
        io_uring_free_probe(probe);
    }

    buffer_bytes_ = buffer_bytes;
    buffer_count_ = buffer_count;
    size_t ring_bytes = buffer_count * sizeof(io_uring_buf);
    void* mem =
        mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *error = "mmap buffer ring failed";
        return false;
    }
    buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(buf_ring_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uintptr_t>(buf_ring_);
    reg.ring_entries = buffer_count;
    reg.bgid = 0;
    r = io_uring_register_buf_ring(&ring_, &reg, 0);
    if (r < 0) {
        munmap(buf_ring_, ring_bytes);
        buf_ring_ = nullptr;
        *error = std::string("io_uring_register_buf_ring: ") + strerror(-r) +
                 " (provided buffer rings need Linux 5.19)";
        return false;
    }
    buffers_ = static_cast<char*>(aligned_alloc(4096, size_t{buffer_bytes} * buffer_count));
    if (!buffers_) {
        *error = "out of memory for receive buffers";
        return false;
    }
    for (uint32_t i = 0; i < buffer_count; i++)
        recycle(static_cast<uint16_t>(i));
    publish_buffers();
    return true;
}

io_uring_sqe* Reactor::sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    while (!s) {
        io_uring_submit(&ring_);
        submits_++;
        s = io_uring_get_sqe(&ring_);
    }
    return s;
}

void Reactor::recycle(uint16_t bid) {
    io_uring_buf_ring_add(buf_ring_, buffer(bid), buffer_bytes_, bid,
                          io_uring_buf_ring_mask(buffer_count_),
                          static_cast<int>(buffers_pending_));
    buffers_pending_++;
}

void Reactor::publish_buffers() {
    if (buffers_pending_ == 0) return;
    io_uring_buf_ring_advance(buf_ring_, static_cast<int>(buffers_pending_));
    buffers_published_ += buffers_pending_;
    buffers_pending_ = 0;
}

bool Reactor::owner_thread() const {
    return pthread_self() == owner_tid_;
}

#endif  // RINGMAIL_SIM

}  // namespace ringmail
