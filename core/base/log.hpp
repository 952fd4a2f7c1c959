// log.hpp — one line per event to stderr, written with a single write(2) so that lines from
// different reactor threads never interleave. printf-style; the hot path logs nothing at the
// default level.
#pragma once

#include <cstdarg>

#include "core/base/assert.hpp"

namespace ringmail::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };

void set_level(Level l);
void set_level(const char* name);  // "error", "warn", "info", "debug"
[[nodiscard]] bool enabled(Level l);
void set_thread_tag(int core);  // lines from a reactor say which core they come from

[[gnu::format(printf, 2, 3)]] void write(Level l, const char* fmt, ...);

}  // namespace ringmail::log

#define RM_LOG(level, ...)                                                      \
    do {                                                                        \
        if (::ringmail::log::enabled(::ringmail::log::Level::level))            \
            ::ringmail::log::write(::ringmail::log::Level::level, __VA_ARGS__); \
    } while (0)
#define LOG_ERROR(...) RM_LOG(error, __VA_ARGS__)
#define LOG_WARN(...) RM_LOG(warn, __VA_ARGS__)
#define LOG_INFO(...) RM_LOG(info, __VA_ARGS__)
#define LOG_DEBUG(...) RM_LOG(debug, __VA_ARGS__)
