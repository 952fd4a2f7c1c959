// dkim_worker.cpp — the signing thread behind DkimWorker. See dkim_worker.hpp.
#include "tls/dkim_worker.hpp"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace ringmail::tls {
namespace {

void signal_fd(int fd) noexcept {
    const uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the wake is pending anyway.
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

constexpr size_t batch_max = 16;

}  // namespace

DkimWorker::DkimWorker(size_t capacity)
    : capacity_(capacity), requests_(capacity), results_(capacity) {
    request_fd_ = eventfd(0, EFD_CLOEXEC);
    completion_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (request_fd_ < 0 || completion_fd_ < 0) return;
    thread_ = std::thread([this] { run(); });
    pthread_setname_np(thread_.native_handle(), "ringmail-dkim");
}

DkimWorker::~DkimWorker() {
    if (thread_.joinable()) {
        stop_.store(true, std::memory_order_release);
        signal_fd(request_fd_);
        thread_.join();
    }
    if (request_fd_ >= 0) close(request_fd_);
    if (completion_fd_ >= 0) close(completion_fd_);
}

bool DkimWorker::submit(uint64_t token, const DkimKey& key, const DkimDigest& digest) noexcept {
    if (!ok() || in_flight_ == capacity_) return false;
    channel_detail::require(requests_.try_push(DkimSignRequest{token, &key, digest}),
                            "dkim request ring full below its in-flight bound");
    ++in_flight_;
    signal_fd(request_fd_);
    return true;
}

size_t DkimWorker::poll(DkimSignResult* out, size_t max) noexcept {
    const size_t n = results_.pop_batch(out, max);
    channel_detail::require(n <= in_flight_, "more dkim results than requests");
    in_flight_ -= n;
    return n;
}

// Signs one batch; false when the request ring was empty.
bool DkimWorker::process_batch() noexcept {
    DkimSignRequest batch[batch_max];
    const size_t n = requests_.pop_batch(batch, batch_max);
    for (size_t i = 0; i < n; ++i) {
        DkimSignResult r;
        r.token = batch[i].token;
        r.signature_len = static_cast<uint16_t>(
            batch[i].key->sign(batch[i].digest, r.signature, sizeof r.signature));
        // Cannot fail: in-flight requests never exceed the completion ring's capacity.
        channel_detail::require(results_.try_push(r), "dkim completion ring full");
        // Announce each signature at once: an RSA batch of 16 would otherwise hold the first
        // 250 back for ~5 ms.
        signal_fd(completion_fd_);
    }
    return n != 0;
}

void DkimWorker::run() noexcept {
    for (;;) {
        while (process_batch()) {
        }
        if (stop_.load(std::memory_order_acquire)) return;
        // Blocks until a submit (or stop) signalled since the read before: a push that raced
        // the drain above has its signal counted, so this read returns at once.
        uint64_t count = 0;
        while (read(request_fd_, &count, sizeof count) < 0 && errno == EINTR) {
        }
    }
}

}  // namespace ringmail::tls
