// assert.hpp — the one assertion of ringmail: a broken invariant is a bug, and a bug stops
// the process loudly (operating errors are returned values, never assertions).
//
// Included by every layer; includes nothing of ours. RM_ASSERT(cond) prints the condition and
// its place and aborts; nothing that a client, peer, disk or flag can do may reach one.
#pragma once

namespace ringmail {
[[noreturn]] void assert_failed(const char* what, const char* file, int line);
}  // namespace ringmail

#define RM_ASSERT(cond)                                                                         \
    do {                                                                                        \
        if (__builtin_expect(!(cond), 0)) ::ringmail::assert_failed(#cond, __FILE__, __LINE__); \
    } while (0)
