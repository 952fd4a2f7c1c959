// sim_hooks.hpp — the clock, the randomness and the few system calls the engine makes outside
// its ring, behind one compile-time seam: the outbound driver's socket() and setsockopt() too
// (its connect, send and receive go through the ring, which the simulator executes).
//
// Production builds inline the real calls here (nothing changes on the data path). Builds with
// RINGMAIL_SIM (the ringmail_core_sim library that the deterministic simulator links, see
// tests/sim/) route them to the simulator through SimHooks, so that one 64-bit seed decides
// every timestamp, every random salt and the outcome of every descriptor operation, and a
// failing run replays exactly.
#pragma once

#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <ctime>

namespace ringmail::sys {

#ifdef RINGMAIL_SIM

// Installed by the simulator before any engine runs; every pointer must be set.
struct SimHooks {
    void* ctx = nullptr;
    uint64_t (*monotonic_us)(void* ctx) = nullptr;
    int64_t (*realtime_us)(void* ctx) = nullptr;
    uint64_t (*random_u64)(void* ctx) = nullptr;
    int (*getpeername)(void* ctx, int fd, sockaddr* addr, socklen_t* len) = nullptr;
    int (*open)(void* ctx, const char* path, int flags, mode_t mode) = nullptr;
    int (*close)(void* ctx, int fd) = nullptr;
    int (*unlink)(void* ctx, const char* path) = nullptr;
    int (*socket)(void* ctx, int domain, int type, int protocol) = nullptr;
    int (*setsockopt)(void* ctx, int fd, int level, int name, const void* value,
                      socklen_t len) = nullptr;
};
SimHooks& sim_hooks();  // core/runtime/reactor.cpp

inline uint64_t monotonic_us() {
    return sim_hooks().monotonic_us(sim_hooks().ctx);
}
inline int64_t realtime_us() {
    return sim_hooks().realtime_us(sim_hooks().ctx);
}
inline uint64_t precise_us() {
    return sim_hooks().monotonic_us(sim_hooks().ctx);
}
inline uint64_t random_u64() {
    return sim_hooks().random_u64(sim_hooks().ctx);
}
inline int getpeername(int fd, sockaddr* addr, socklen_t* len) {
    return sim_hooks().getpeername(sim_hooks().ctx, fd, addr, len);
}
inline int open(const char* path, int flags, mode_t mode = 0) {
    return sim_hooks().open(sim_hooks().ctx, path, flags, mode);
}
inline int close(int fd) {
    return sim_hooks().close(sim_hooks().ctx, fd);
}
inline int unlink(const char* path) {
    return sim_hooks().unlink(sim_hooks().ctx, path);
}
inline int socket(int domain, int type, int protocol) {
    return sim_hooks().socket(sim_hooks().ctx, domain, type, protocol);
}
inline int setsockopt(int fd, int level, int name, const void* value, socklen_t len) {
    return sim_hooks().setsockopt(sim_hooks().ctx, fd, level, name, value, len);
}

#else

inline uint64_t monotonic_us() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}
// The monotonic clock to the microsecond (the timers above tick in milliseconds): for latency
// histograms, read a few times per batch or message (a vDSO call, no system call).
inline uint64_t precise_us() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}
inline int64_t realtime_us() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}
inline uint64_t random_u64() {
    uint64_t v = 0;
    while (getrandom(&v, sizeof v, 0) != sizeof v) {
    }
    return v;
}
inline int getpeername(int fd, sockaddr* addr, socklen_t* len) {
    return ::getpeername(fd, addr, len);
}
inline int open(const char* path, int flags, mode_t mode = 0) {
    return ::open(path, flags, mode);
}
inline int close(int fd) {
    return ::close(fd);
}
inline int unlink(const char* path) {
    return ::unlink(path);
}
inline int socket(int domain, int type, int protocol) {
    return ::socket(domain, type, protocol);
}
inline int setsockopt(int fd, int level, int name, const void* value, socklen_t len) {
    return ::setsockopt(fd, level, name, value, len);
}

#endif

}  // namespace ringmail::sys
