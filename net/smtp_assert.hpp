// smtp_assert.hpp — invariant checks for the pure protocol layer (ringmail_smtp).
//
// The smtp library links nothing else of ringmail (core/log.cpp lives in ringmail_core, which
// depends on this library), so it carries its own abort-on-broken-invariant macro. A failed
// check is a bug, never an operating error: print where and abort.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace ringmail::smtp::detail {

[[noreturn]] inline void smtp_assert_failed(const char* what, const char* file, int line) {
    std::fprintf(stderr, "ringmail: invariant broken: %s at %s:%d\n", what, file, line);
    std::abort();
}

}  // namespace ringmail::smtp::detail

#define SMTP_ASSERT(cond)                                                            \
    do {                                                                             \
        if (__builtin_expect(!(cond), 0))                                            \
            ::ringmail::smtp::detail::smtp_assert_failed(#cond, __FILE__, __LINE__); \
    } while (0)
