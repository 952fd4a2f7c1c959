// sim_resolver.hpp — the resolver of builds with RINGMAIL_SIM (the deterministic simulator,
// tests/sim/): the API of dns::Resolver that Delivery uses, answered by the simulated world
// instead of udns over a socket.
//
// The world says what DNS holds for a domain (MX records, or no data, NXDOMAIN, SERVFAIL, a
// timeout; each host's addresses or a temporary failure) and after how long the answer comes;
// the answer goes through the same pure rules as the real resolver's (destination.hpp: null
// MX, MX order, implicit MX, our own addresses, the destination key), so the simulator runs
// those too. Answers arrive from on_timer() once their delay has passed, or, with no delay,
// before resolve_*() returns (as a cache hit does): both orders the real resolver has. Nothing
// is cached. Production builds never include this file.
#pragma once

#ifndef RINGMAIL_SIM
#error "dns/sim_resolver.hpp is for builds with RINGMAIL_SIM only"
#endif

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dns/destination.hpp"

namespace ringmail::dns {

// What the simulated DNS holds for one mail domain, and how long its answer takes.
struct SimDnsAnswer {
    enum class Mx : uint8_t { records, nodata, nxdomain, servfail, timeout };
    Mx mx = Mx::servfail;
    std::vector<MxRecord> records;  // Mx::records
    // The answers for each host name (MX exchanges, or the domain itself for no data); a name
    // missing here has no address.
    std::vector<HostAnswer> hosts;
    uint32_t ttl_s = 300;
    uint64_t delay_ms = 0;
};

// Installed by the simulator before any engine runs.
struct SimDns {
    void* ctx = nullptr;
    SimDnsAnswer (*query)(void* ctx, std::string_view domain) = nullptr;
};
inline SimDns& sim_dns() {
    static SimDns d;
    return d;
}

class SimResolver {
  public:
    using Callback = void (*)(void* ctx, const ResolutionPtr& result);

    [[nodiscard]] bool init(const DnsConfig& config, OwnAddresses own, std::string*) {
        rng_ = Rng(config.rng_seed);
        own_ = std::move(own);
        return true;
    }
    [[nodiscard]] int fd() const { return -1; }  // nothing to poll: answers come from on_timer()
    void on_readable(uint64_t) {}
    uint64_t on_timer(uint64_t now_ms) {
        // In the order they were asked among those due: the world decides the delays.
        std::vector<Pending> due;
        std::erase_if(pending_, [&](Pending& p) {
            if (p.ready_ms > now_ms) return false;
            due.push_back(std::move(p));
            return true;
        });
        update_deadline();
        for (const Pending& p : due)
            p.cb(p.ctx, p.result);
        return deadline_ms_;
    }
    [[nodiscard]] uint64_t next_deadline_ms() const { return deadline_ms_; }
    [[nodiscard]] size_t lookups_in_flight() const { return pending_.size(); }

    void resolve_destination(std::string_view domain, uint64_t now_ms, Callback cb, void* ctx) {
        const std::string name = normalize_domain(domain);
        if (auto ip = parse_domain_literal(name)) {
            return answer(decide_address(*ip, smtp_port, own_, false), 0, now_ms, 0, cb, ctx);
        }
        const SimDnsAnswer a = sim_dns().query(sim_dns().ctx, name);
        answer(decide(name, a), a.ttl_s, now_ms, a.delay_ms, cb, ctx);
    }
    void resolve_smarthost(const Smarthost& relay, uint64_t now_ms, Callback cb, void* ctx) {
        if (relay.literal) {
            return answer(decide_address(*relay.literal, relay.port, own_, true), 0, now_ms, 0, cb,
                          ctx);
        }
        const SimDnsAnswer a = sim_dns().query(sim_dns().ctx, relay.host);
        HostAnswer h;
        h.host.name = relay.host;
        for (const HostAnswer& x : a.hosts)
            if (x.host.name == relay.host) h = x;
        answer(decide_relay(std::move(h), relay.port, own_), a.ttl_s, now_ms, a.delay_ms, cb, ctx);
    }

  private:
    struct Pending {
        uint64_t ready_ms;
        Callback cb;
        void* ctx;
        ResolutionPtr result;
    };

    // The real resolver's steps (resolver.cpp, mx_answered and the address answers).
    Resolution decide(const std::string& domain, const SimDnsAnswer& a) {
        using Mx = SimDnsAnswer::Mx;
        if (a.mx == Mx::nxdomain)
            return make_bounce("5.1.2", "domain " + domain + " does not exist");
        if (a.mx == Mx::servfail || a.mx == Mx::timeout) {
            return make_defer("4.4.3", "MX lookup for " + domain + " failed: " +
                                           (a.mx == Mx::timeout ? "timed out" : "server failure"));
        }
        std::vector<MxRecord> records = a.records;
        const bool implicit = a.mx == Mx::nodata || records.empty();
        std::vector<HostAnswer> hosts;
        if (implicit) {
            hosts.push_back(host_answer(a, domain));
        } else {
            if (is_null_mx(records)) {
                return make_bounce("5.1.10",
                                   "domain " + domain + " does not accept mail (null MX)");
            }
            order_mx(records, rng_);
            if (records.empty()) {
                return make_bounce("5.1.10", "domain " + domain + " publishes no usable MX host");
            }
            for (const MxRecord& r : records) {
                hosts.push_back(host_answer(a, r.name));
                hosts.back().host.preference = r.preference;
            }
        }
        return decide_mail_domain(domain, implicit, std::move(hosts), own_);
    }
    static HostAnswer host_answer(const SimDnsAnswer& a, const std::string& name) {
        for (const HostAnswer& h : a.hosts)
            if (h.host.name == name) return h;
        HostAnswer none;
        none.host.name = name;
        return none;
    }
    // An answer with no delay is given at once (as a cache hit is), the others from on_timer().
    void answer(Resolution r, uint32_t ttl_s, uint64_t now_ms, uint64_t delay_ms, Callback cb,
                void* ctx) {
        r.ttl_s = ttl_s;
        r.expires_ms = now_ms + delay_ms + uint64_t{ttl_s} * 1000;
        auto p = std::make_shared<const Resolution>(std::move(r));
        if (delay_ms == 0) {
            cb(ctx, p);
            return;
        }
        pending_.push_back(Pending{now_ms + delay_ms, cb, ctx, std::move(p)});
        update_deadline();
    }
    void update_deadline() {
        deadline_ms_ = 0;
        for (const Pending& p : pending_)
            deadline_ms_ = deadline_ms_ == 0 ? p.ready_ms : std::min(deadline_ms_, p.ready_ms);
    }

    OwnAddresses own_;
    Rng rng_{0};
    std::vector<Pending> pending_;
    uint64_t deadline_ms_ = 0;
};

}  // namespace ringmail::dns
