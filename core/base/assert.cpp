// assert.cpp — see assert.hpp.
#include "core/base/assert.hpp"

#include "core/base/log.hpp"

#include <cstdio>
#include <cstdlib>

namespace ringmail {

void assert_failed(const char* what, const char* file, int line) {
    log::flush();  // what this thread logged before, in order
    std::fprintf(stderr, "ringmail: invariant broken: %s at %s:%d\n", what, file, line);
    std::abort();
}

}  // namespace ringmail
