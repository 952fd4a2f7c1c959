// log.cpp — see log.hpp.
#include "core/base/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace ringmail::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::info)};
std::atomic<bool> g_json{false};
thread_local int t_core = -1;
const char* const kNames[] = {"error", "warn", "info", "debug"};
constexpr size_t line_max = 8192;

// A reactor thread's pending lines; written by flush() or when the next line would not fit.
struct Pending {
    bool on = false;
    size_t len = 0;
    char buf[64 * 1024];
};
thread_local Pending t_pending;

void write_out(const char* p, size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(2, p, n);
        if (w <= 0) return;  // stderr gone: logs are not worth a stall or a crash
        p += w;
        n -= static_cast<size_t>(w);
    }
}

void put_line(const char* p, size_t n) {
    Pending& t = t_pending;
    if (!t.on) return write_out(p, n);
    if (t.len + n > sizeof t.buf) flush();
    if (n > sizeof t.buf) return write_out(p, n);
    memcpy(t.buf + t.len, p, n);
    t.len += n;
}

// "2026-12-08T04:00:50.877123Z" (RFC 3339, UTC, microseconds) or, for text lines,
// milliseconds.
size_t timestamp(char* out, size_t cap, bool micro) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t;
    gmtime_r(&ts.tv_sec, &t);
    const int n =
        micro ? snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", t.tm_year + 1900,
                         t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000)
              : snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900,
                         t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                         ts.tv_nsec / 1000000);
    return n < 0 ? 0 : static_cast<size_t>(n);
}

// Length of the valid UTF-8 sequence at p (1-4), or 0 when it is not one.
size_t utf8_sequence(const unsigned char* p, size_t left) {
    const unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    static constexpr uint32_t min_for[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

}  // namespace

void set_level(Level l) {
    g_level.store(static_cast<int>(l), std::memory_order_relaxed);
}

void set_level(const char* name) {
    for (int i = 0; i < 4; i++)
        if (strcmp(name, kNames[i]) == 0) set_level(static_cast<Level>(i));
}

bool enabled(Level l) {
    return static_cast<int>(l) <= g_level.load(std::memory_order_relaxed);
}

void set_format(Format f) {
    g_json.store(f == Format::json, std::memory_order_relaxed);
}

bool json() {
    return g_json.load(std::memory_order_relaxed);
}

void set_thread_tag(int core) {
    t_core = core;
}

void set_thread_buffered(bool on) {
    if (!on) flush();
    t_pending.on = on;
}

void flush() {
    Pending& t = t_pending;
    if (t.len == 0) return;
    write_out(t.buf, t.len);
    t.len = 0;
}

void write(Level l, const char* fmt, ...) {
    char msg[line_max];
    va_list ap;
    va_start(ap, fmt);
    const int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const size_t mlen = m < 0 ? 0 : std::min(static_cast<size_t>(m), sizeof msg - 1);
    if (json()) {
        Event(l, "log").str("message", std::string_view(msg, mlen)).emit();
        return;
    }
    char line[line_max + 128];
    size_t n = timestamp(line, sizeof line, false);
    n += static_cast<size_t>(
        snprintf(line + n, sizeof line - n, " ringmail[%d]", static_cast<int>(getpid())));
    if (t_core >= 0)
        n += static_cast<size_t>(snprintf(line + n, sizeof line - n, " core%d", t_core));
    n += static_cast<size_t>(
        snprintf(line + n, sizeof line - n, " %s: ", kNames[static_cast<int>(l)]));
    const size_t room = sizeof line - n - 1;
    const size_t take = std::min(mlen, room);
    memcpy(line + n, msg, take);
    n += take;
    line[n++] = '\n';
    put_line(line, n);
}

// --- Event ---------------------------------------------------------------------------------

Event::Event(Level l, const char* name) : level_(l) {
    raw("{\"time\":\"");
    char ts[40];
    raw(std::string_view(ts, timestamp(ts, sizeof ts, true)));
    raw("\",\"level\":\"");
    raw(kNames[static_cast<int>(l)]);
    raw("\"");
    if (t_core >= 0) num("core", static_cast<uint64_t>(t_core));
    str("event", name);
}

void Event::raw(std::string_view s) {
    // Room is kept for the closing "}\n" (and a closing quote of a cut string).
    if (full_ || len_ + s.size() > sizeof buf_ - 4) {
        full_ = true;
        return;
    }
    memcpy(buf_ + len_, s.data(), s.size());
    len_ += s.size();
}

void Event::escaped(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    size_t i = 0;
    while (i < s.size() && !full_) {
        const unsigned char c = p[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = static_cast<char>(c);
            raw(std::string_view(esc, 2));
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            raw(std::string_view(esc, 6));
            i++;
        } else if (const size_t n = utf8_sequence(p + i, s.size() - i); n > 0) {
            raw(std::string_view(s.data() + i, n));
            i += n;
        } else {
            raw("\\ufffd");
            i++;
        }
    }
}

void Event::key(const char* k) {
    raw(",\"");
    raw(k);
    raw("\":");
}

Event& Event::str(const char* k, std::string_view value) {
    const size_t at = len_;
    key(k);
    raw("\"");
    escaped(value);
    if (full_) {
        // Cut: drop the whole field rather than leave half a string.
        len_ = at;
        return *this;
    }
    raw("\"");
    return *this;
}

Event& Event::num(const char* k, uint64_t value) {
    char v[24];
    const int n = snprintf(v, sizeof v, "%llu", static_cast<unsigned long long>(value));
    key(k);
    raw(std::string_view(v, static_cast<size_t>(n)));
    return *this;
}

Event& Event::seconds(const char* k, double value) {
    char v[40];
    const int n = snprintf(v, sizeof v, "%.6f", value);
    key(k);
    raw(std::string_view(v, static_cast<size_t>(n)));
    return *this;
}

void Event::emit() {
    if (!enabled(level_)) return;
    buf_[len_++] = '}';
    buf_[len_++] = '\n';
    put_line(buf_, len_);
}

}  // namespace ringmail::log
