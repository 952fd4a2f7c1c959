// node_resolver.hpp — the resolver a core's delivery uses: udns over the core's ring in
// production (dns/resolver.hpp), the simulated world's answers in builds with RINGMAIL_SIM
// (dns/sim_resolver.hpp, the deterministic simulator). Chosen at compile time: one API, no
// virtual calls.
#pragma once

#ifdef RINGMAIL_SIM
#include "dns/sim_resolver.hpp"
#else
#include "dns/resolver.hpp"
#endif

namespace ringmail::dns {

#ifdef RINGMAIL_SIM
using NodeResolver = SimResolver;
#else
using NodeResolver = Resolver;
#endif

}  // namespace ringmail::dns
