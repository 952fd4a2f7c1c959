// resolver.hpp — one core's DNS resolver for outbound delivery: udns over one UDP socket,
// driven by the reactor, with a per-core cache.
//
// Called by the engine (its reactor thread only; asserted): it polls fd() for readability
// (multishot IORING_OP_POLL_ADD) and calls on_readable(), and calls on_timer() once
// next_deadline_ms() has passed (its tick is fine: udns counts in whole seconds). The resolver
// never blocks after init() (which may read /etc/resolv.conf), throws nothing and allocates only
// per looked-up domain, never per message.
//
// Guarantees:
//  - every resolve_*() call gets exactly one callback, on the calling thread: either before
//    resolve_*() returns (domain literal, cache hit, malformed name, udns refusing the query)
//    or later from on_readable()/on_timer(); never from inside udns, so a callback may call
//    resolve_*() again;
//  - concurrent lookups of the same domain share one set of queries;
//  - positive answers (ok, null MX, mail loop) are cached for min(TTL, cache_max_ttl_s),
//    NXDOMAIN-like answers for min(negative_ttl_s, cache_max_ttl_s); defers are not cached
//    (the next message retries DNS; concurrent ones still share one lookup);
//  - mail domains are queried as absolute names (DNS_NOSRCH): a search list must never turn
//    "example" into "example.corp.internal".
//
// Outcomes (design.md "The scheduler"): MX → A+AAAA of each host; no MX → A+AAAA of the domain
// (RFC 5321 §5.1 implicit MX); NXDOMAIN → bounce 5.1.2; null MX → bounce 5.1.10 (RFC 7505);
// MX host that is us → bounce 5.4.6; SERVFAIL, REFUSED, timeout, or no MX host with an address
// → defer 4.4.3; a domain that exists with neither MX nor address → bounce 5.4.4.
#pragma once

#include <pthread.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dns/cache.hpp"
#include "dns/destination.hpp"

struct dns_ctx;
struct dns_rr_mx;
struct dns_rr_a4;
struct dns_rr_a6;

namespace ringmail::dns {

class Resolver {
  public:
    // result stays valid for as long as the callee keeps the pointer.
    using Callback = void (*)(void* ctx, const ResolutionPtr& result);

    Resolver();
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // On the owning thread, before the reactor loop. own: our listening addresses (wildcards
    // already expanded, see OwnAddresses).
    [[nodiscard]] bool init(const DnsConfig& config, OwnAddresses own, std::string* error);

    [[nodiscard]] int fd() const;
    // The socket is readable: read every reply, send follow-up queries, run callbacks.
    void on_readable(uint64_t now_ms);
    // Retransmit or fail the queries whose time is up, run callbacks. Returns
    // next_deadline_ms().
    uint64_t on_timer(uint64_t now_ms);
    // When on_timer() should next run; 0 when no query is in flight.
    [[nodiscard]] uint64_t next_deadline_ms() const { return deadline_ms_; }

    // The destination of mail for `domain` (the part after '@'; a domain literal is allowed).
    void resolve_destination(std::string_view domain, uint64_t now_ms, Callback cb, void* ctx);
    // The single destination of --smarthost.
    void resolve_smarthost(const Smarthost& relay, uint64_t now_ms, Callback cb, void* ctx);

    struct Stats {
        uint64_t cache_hits = 0;
        uint64_t cache_misses = 0;
        uint64_t coalesced = 0;  // a lookup already in flight answered this call too
        uint64_t queries = 0;    // udns queries submitted
        uint64_t lookups_ok = 0;
        uint64_t lookups_bounce = 0;
        uint64_t lookups_defer = 0;
    };
    [[nodiscard]] const Stats& stats() const { return stats_; }
    [[nodiscard]] size_t lookups_in_flight() const { return inflight_.size(); }
    [[nodiscard]] size_t cache_size() const { return cache_ ? cache_->size() : 0; }

    struct Lookup;  // one domain (or smarthost) being resolved; defined in resolver.cpp

  private:
    struct Waiter {
        Callback cb;
        void* ctx;
    };

    void assert_owner() const;
    void answer_now(Resolution r, Callback cb, void* ctx);
    [[nodiscard]] bool join_or_start(std::string_view key, Callback cb, void* ctx,
                                     Lookup** started);
    void submit_mx(Lookup& l);
    void submit_addresses(Lookup& l);
    void finish(Lookup& l, Resolution r);
    void pump(uint64_t now_ms);
    void deliver_done();
    [[nodiscard]] uint32_t ttl_for(const Lookup& l, const Resolution& r) const;

    static void on_mx(dns_ctx* ctx, dns_rr_mx* rr, void* data);
    static void on_a4(dns_ctx* ctx, dns_rr_a4* rr, void* data);
    static void on_a6(dns_ctx* ctx, dns_rr_a6* rr, void* data);
    void mx_answered(Lookup& l, int status, const dns_rr_mx* rr);
    void host_answered(Lookup& l);

    dns_ctx* ctx_ = nullptr;
    DnsConfig config_;
    OwnAddresses own_;
    std::optional<DnsCache> cache_;
    Rng rng_{0};
    pthread_t owner_{};
    uint64_t now_ms_ = 0;
    uint64_t deadline_ms_ = 0;
    std::unordered_map<std::string, std::unique_ptr<Lookup>> inflight_;  // by cache key
    std::vector<std::unique_ptr<Lookup>> done_;  // finished, callbacks not yet run
    Stats stats_;
};

}  // namespace ringmail::dns
