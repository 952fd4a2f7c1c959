// listener.hpp — listening sockets: one per reactor thread per address, in one SO_REUSEPORT
// group, so the kernel spreads new connections over the cores without any shared accept
// queue or lock. Created by the main thread before the reactors start, in thread order.
#pragma once

#include <string>
#include <vector>

#include "core/base/config.hpp"

namespace ringmail::net {

// Returns per thread the listening fds (one per address). On failure, an empty result and
// *error says which address failed and why.
std::vector<std::vector<int>> open_listeners(const std::vector<ListenAddress>& addrs,
                                             uint32_t threads, std::string* error);

}  // namespace ringmail::net
