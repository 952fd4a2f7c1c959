// auth_worker.cpp — the password-checking thread behind AuthWorker. See auth_worker.hpp.
#include "tls/auth_worker.hpp"

#include <pthread.h>
#include <string.h>  // explicit_bzero
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

AuthWorker::AuthWorker(const AuthUsers& users, size_t capacity)
    : users_(users), capacity_(capacity), requests_(capacity), results_(capacity) {
    request_fd_ = eventfd(0, EFD_CLOEXEC);
    completion_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (request_fd_ < 0 || completion_fd_ < 0) return;
    thread_ = std::thread([this] { run(); });
    pthread_setname_np(thread_.native_handle(), "ringmail-auth");
}

AuthWorker::~AuthWorker() {
    if (thread_.joinable()) {
        stop_.store(true, std::memory_order_release);
        signal_fd(request_fd_);
        thread_.join();
    }
    if (request_fd_ >= 0) close(request_fd_);
    if (completion_fd_ >= 0) close(completion_fd_);
}

bool AuthWorker::submit(uint64_t token, std::string_view user, std::string_view password) noexcept {
    if (!ok() || in_flight_ == capacity_) return false;
    if (user.size() > auth_field_max_bytes || password.size() > auth_field_max_bytes) return false;
    AuthRequest r;
    r.token = token;
    r.user_len = static_cast<uint16_t>(user.size());
    r.pass_len = static_cast<uint16_t>(password.size());
    std::memcpy(r.user, user.data(), user.size());
    std::memcpy(r.pass, password.data(), password.size());
    const bool pushed = requests_.try_push(r);
    explicit_bzero(r.pass, sizeof r.pass);
    channel_detail::require(pushed, "auth request ring full below its in-flight bound");
    ++in_flight_;
    signal_fd(request_fd_);
    return true;
}

size_t AuthWorker::poll(AuthResult* out, size_t max) noexcept {
    const size_t n = results_.pop_batch(out, max);
    channel_detail::require(n <= in_flight_, "more auth results than requests");
    in_flight_ -= n;
    return n;
}

// Verifies one batch; false when the request ring was empty.
bool AuthWorker::process_batch(CryptScratch& scratch) noexcept {
    AuthRequest batch[batch_max];
    const size_t n = requests_.pop_batch(batch, batch_max);
    for (size_t i = 0; i < n; ++i) {
        AuthRequest& r = batch[i];
        const bool ok = users_.verify({r.user, r.user_len}, {r.pass, r.pass_len}, scratch);
        explicit_bzero(r.pass, sizeof r.pass);
        // Cannot fail: in-flight requests never exceed the completion ring's capacity.
        channel_detail::require(results_.try_push(AuthResult{r.token, ok}),
                                "auth completion ring full");
    }
    if (n != 0) signal_fd(completion_fd_);
    return n != 0;
}

void AuthWorker::run() noexcept {
    CryptScratch scratch;
    for (;;) {
        while (process_batch(scratch)) {
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
