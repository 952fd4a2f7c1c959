// assert.cpp — see assert.hpp.
#include "core/base/assert.hpp"

#include <cstdio>
#include <cstdlib>

namespace ringmail {

void assert_failed(const char* what, const char* file, int line) {
    std::fprintf(stderr, "ringmail: invariant broken: %s at %s:%d\n", what, file, line);
    std::abort();
}

}  // namespace ringmail
