// dns_assert.hpp — invariant checks for the resolver layer (ringmail_dns).
//
// ringmail_dns links only ringmail_smtp (for IpAddress), not ringmail_core where the logger
// lives, so it carries its own abort-on-broken-invariant macro. A failed check is a bug, never
// an operating error (DNS failures are values): print where and abort.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace ringmail::dns::detail {

[[noreturn]] inline void dns_assert_failed(const char* what, const char* file, int line) {
    std::fprintf(stderr, "ringmail: invariant broken: %s at %s:%d\n", what, file, line);
    std::abort();
}

}  // namespace ringmail::dns::detail

#define DNS_ASSERT(cond)                                                           \
    do {                                                                           \
        if (__builtin_expect(!(cond), 0))                                          \
            ::ringmail::dns::detail::dns_assert_failed(#cond, __FILE__, __LINE__); \
    } while (0)
