// log.cpp — see log.hpp.
#include "core/base/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace ringmail::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::info)};
thread_local int t_core = -1;
const char* const kNames[] = {"error", "warn", "info", "debug"};
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

void set_thread_tag(int core) {
    t_core = core;
}

void write(Level l, const char* fmt, ...) {
    char line[2048];
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t;
    gmtime_r(&ts.tv_sec, &t);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ringmail[%d]",
                     t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                     ts.tv_nsec / 1000000, static_cast<int>(getpid()));
    if (t_core >= 0) n += snprintf(line + n, sizeof line - n, " core%d", t_core);
    n += snprintf(line + n, sizeof line - n, " %s: ", kNames[static_cast<int>(l)]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    n = m < 0 ? n : (n + m > static_cast<int>(sizeof line) - 2 ? sizeof line - 2 : n + m);
    line[n++] = '\n';
    ssize_t w = ::write(2, line, n);
    (void)w;
}

}  // namespace ringmail::log
