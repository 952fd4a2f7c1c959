// log.hpp — one line per event to stderr, as text (the default) or as one JSON object per line
// (--log-format json), so that lines from different threads never interleave.
//
// Text lines are printf-style. Structured events (a message accepted, a delivery attempt, a
// DSN) are built with log::Event: in JSON mode they are objects with stable keys (the schema
// is in the README); in text mode the caller writes its own line and builds no Event.
//
// A reactor thread buffers its lines (set_thread_buffered) and its loop writes them out with
// flush() once per iteration, so a busy core pays one write(2) per loop, not one per line.
// Other threads write each line at once. An assertion failure flushes before it aborts.
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/base/assert.hpp"

namespace ringmail::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3 };
enum class Format { text, json };

void set_level(Level l);
void set_level(const char* name);  // "error", "warn", "info", "debug"
[[nodiscard]] bool enabled(Level l);
void set_format(Format f);
[[nodiscard]] bool json();
void set_thread_tag(int core);  // lines from a reactor say which core they come from
void set_thread_buffered(bool on);
void flush();  // this thread's buffered lines

[[gnu::format(printf, 2, 3)]] void write(Level l, const char* fmt, ...);

// One JSON object: {"time":"…","level":"…","core":N,"event":"name", fields in call order}.
// Strings are escaped (and invalid UTF-8 replaced by U+FFFD); a field that does not fit the
// line (8 KiB) is cut, the object stays valid.
class Event {
  public:
    Event(Level l, const char* name);
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    Event& str(const char* key, std::string_view value);
    Event& num(const char* key, uint64_t value);
    Event& seconds(const char* key, double value);  // with microseconds
    void emit();

  private:
    void key(const char* k);
    void raw(std::string_view s);
    void escaped(std::string_view s);

    Level level_;
    size_t len_ = 0;
    bool full_ = false;
    char buf_[8192];
};

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
