// resolver.cpp — udns driven by the reactor, per-core cache, MX → A/AAAA. See resolver.hpp.
//
// udns 0.4 notes that shaped this file:
//  - dns_submit_*() only queues a query; it is sent by the next dns_timeouts(), so every entry
//    point ends in pump();
//  - udns calls our query callbacks from inside dns_ioevent()/dns_timeouts(); we may submit
//    follow-up queries there (udns allows it), but user callbacks run only after udns has
//    returned (deliver_done), so users may re-enter the resolver freely;
//  - time is whole seconds; 0 means "call time()", so the caller's clock is clamped to >= 1 s;
//  - results are malloc()ed by udns and freed here; dns_free() drops queries in flight
//    without calling back, so a Lookup outlives its queries only inside this object.
#include "dns/resolver.hpp"

#include <netinet/in.h>
#include <sys/random.h>
#include <udns.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

#include "core/base/assert.hpp"
#include "net/smtp/address.hpp"

namespace ringmail::dns {

struct Resolver::Lookup {
    struct Host {
        Lookup* lookup = nullptr;
        std::string name;
        uint16_t preference = 0;
        std::vector<IpAddress> v4;
        std::vector<IpAddress> v6;
        uint32_t pending = 0;
        bool tempfail = false;
    };
    Resolver* resolver = nullptr;
    std::string key;     // cache key: the mail domain, or destination_key_for_relay()
    std::string domain;  // the name asked for MX, or the smarthost's name
    bool relay = false;
    bool implicit_mx = false;
    uint16_t port = smtp_port;
    uint32_t outstanding = 0;  // udns queries in flight for this lookup
    uint32_t ttl_s = 0;        // lowest TTL of the positive answers so far
    std::vector<Host> hosts;   // filled before any address query: never reallocated after
    std::vector<Waiter> waiters;
    ResolutionPtr result;
};

namespace {

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};

time_t udns_now(uint64_t now_ms) {
    return std::max<time_t>(1, static_cast<time_t>(now_ms / 1000));
}

uint64_t random_seed() {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed) {
        seed = static_cast<uint64_t>(time(nullptr)) ^ reinterpret_cast<uintptr_t>(&seed);
    }
    return seed == 0 ? 1 : seed;
}

IpAddress from_v4(const in_addr& a) {
    IpAddress ip;
    ip.bytes[10] = 0xff;
    ip.bytes[11] = 0xff;
    std::memcpy(ip.bytes.data() + 12, &a, 4);
    return ip;
}

IpAddress from_v6(const in6_addr& a) {
    IpAddress ip;
    std::memcpy(ip.bytes.data(), &a, 16);
    return ip;
}

// Bounces that rest on a negative answer (the name or its data does not exist) are cached
// for the negative TTL only (RFC 2308 §5), whatever the TTLs seen on the way.
bool negative_answer(const Resolution& r) {
    return r.outcome == Outcome::bounce &&
           (std::strcmp(r.status, "5.1.2") == 0 || std::strcmp(r.status, "5.4.4") == 0);
}

std::string udns_error(int status) {
    return dns_strerror(status);
}

}  // namespace

Resolver::Resolver() = default;

Resolver::~Resolver() {
    if (ctx_ != nullptr) dns_free(ctx_);
}

bool Resolver::init(const DnsConfig& config, OwnAddresses own, std::string* error) {
    RM_ASSERT(ctx_ == nullptr);
    owner_ = pthread_self();
    config_ = config;
    own_ = std::move(own);
    if (config_.cache_entries == 0) {
        *error = "--dns-cache-entries must be at least 1";
        return false;
    }
    cache_.emplace(config_.cache_entries);
    rng_ = Rng(config_.rng_seed != 0 ? config_.rng_seed : random_seed());

    // The default context is only a template (resolv.conf read once per process); each core
    // copies it and never touches it again, so no two threads share udns state.
    static std::once_flag template_once;
    std::call_once(template_once, [] { (void)dns_init(nullptr, 0); });
    ctx_ = dns_new(nullptr);
    if (ctx_ == nullptr) {
        *error = "dns_new: out of memory";
        return false;
    }
    if (config_.servers.size() > dns_servers_max) {
        *error = "at most " + std::to_string(dns_servers_max) + " --dns-server";
        return false;
    }
    if (!config_.servers.empty()) (void)dns_add_serv(ctx_, nullptr);
    for (const std::string& text : config_.servers) {
        const auto server = parse_dns_server(text);
        if (!server) {
            *error = "bad --dns-server " + text + " (want IP[:PORT] or [IPv6]:PORT)";
            return false;
        }
        if (dns_add_serv_s(ctx_, reinterpret_cast<const sockaddr*>(&server->addr)) < 0) {
            *error = "cannot add DNS server " + text;
            return false;
        }
    }
    if (dns_set_opt(ctx_, DNS_OPT_TIMEOUT, static_cast<int>(config_.query_timeout_s)) < 0 ||
        dns_set_opt(ctx_, DNS_OPT_NTRIES, static_cast<int>(config_.query_tries)) < 0) {
        *error = "DNS timeout must be 1..300 s and tries 1..50";
        return false;
    }
    (void)dns_set_opt(ctx_, DNS_OPT_FLAGS, DNS_NOSRCH);
    (void)dns_add_srch(ctx_, nullptr);
    if (dns_open(ctx_) < 0) {
        *error = std::string("cannot open the DNS socket: ") + std::strerror(errno);
        return false;
    }
    return true;
}

int Resolver::fd() const {
    RM_ASSERT(ctx_ != nullptr);
    return dns_sock(ctx_);
}

void Resolver::assert_owner() const {
    RM_ASSERT(ctx_ != nullptr);
    RM_ASSERT(pthread_equal(owner_, pthread_self()));
}

void Resolver::on_readable(uint64_t now_ms) {
    assert_owner();
    now_ms_ = now_ms;
    dns_ioevent(ctx_, udns_now(now_ms));
    pump(now_ms);
}

uint64_t Resolver::on_timer(uint64_t now_ms) {
    assert_owner();
    now_ms_ = now_ms;
    pump(now_ms);
    return deadline_ms_;
}

void Resolver::resolve_destination(std::string_view domain, uint64_t now_ms, Callback cb,
                                   void* ctx) {
    assert_owner();
    RM_ASSERT(cb != nullptr);
    now_ms_ = now_ms;
    if (!domain.empty() && domain.front() == '[') {
        // RFC 5321 §5.1: a domain literal is the address to connect to; no DNS.
        const auto ip = parse_domain_literal(domain);
        if (!ip) {
            return answer_now(make_bounce("5.1.2", "bad address literal " + std::string(domain)),
                              cb, ctx);
        }
        return answer_now(decide_address(*ip, smtp_port, own_, false), cb, ctx);
    }
    // Normalised on the stack: a cache hit, the common case, allocates nothing.
    char buf[DNS_MAXDN + 1];
    std::string_view name;
    bool utf8 = false;
    dnsc_t dn[DNS_MAXDN];
    if (!normalize_into(domain, buf, sizeof buf, &name) || !smtp::domain_syntax_ok(name, &utf8) ||
        dns_ptodn(name.data(), static_cast<unsigned>(name.size()), dn, sizeof dn, nullptr) <= 0) {
        return answer_now(make_bounce("5.1.2", "bad domain name " + std::string(domain)), cb, ctx);
    }
    if (utf8) {
        // An internationalised domain must be asked as its A-labels (RFC 5890); without IDNA
        // conversion the answer would be a false NXDOMAIN, so wait rather than bounce.
        return answer_now(make_defer("4.4.3", "no IDNA support for " + std::string(name)), cb, ctx);
    }
    Lookup* l = nullptr;
    if (!join_or_start(name, cb, ctx, &l)) return;
    l->domain = std::string(name);
    submit_mx(*l);
    pump(now_ms);
}

void Resolver::resolve_smarthost(const Smarthost& relay, uint64_t now_ms, Callback cb, void* ctx) {
    assert_owner();
    RM_ASSERT(cb != nullptr);
    now_ms_ = now_ms;
    if (relay.literal)
        return answer_now(decide_address(*relay.literal, relay.port, own_, true), cb, ctx);
    RM_ASSERT(!relay.host.empty());
    Lookup* l = nullptr;
    if (!join_or_start(destination_key_for_relay(relay.host, relay.port), cb, ctx, &l)) return;
    l->relay = true;
    l->port = relay.port;
    l->domain = relay.host;
    l->hosts.resize(1);
    l->hosts[0].name = relay.host;
    submit_addresses(*l);
    pump(now_ms);
}

void Resolver::answer_now(Resolution r, Callback cb, void* ctx) {
    r.expires_ms = now_ms_;  // computed, not cached: nothing to reuse
    const ResolutionPtr p = std::make_shared<const Resolution>(std::move(r));
    cb(ctx, p);
}

bool Resolver::join_or_start(std::string_view key, Callback cb, void* ctx, Lookup** started) {
    if (ResolutionPtr hit = cache_->find(key, now_ms_)) {
        stats_.cache_hits++;
        cb(ctx, hit);
        return false;
    }
    stats_.cache_misses++;
    std::string k(key);
    if (const auto it = inflight_.find(k); it != inflight_.end()) {
        stats_.coalesced++;
        it->second->waiters.push_back(Waiter{cb, ctx});
        return false;
    }
    auto l = std::make_unique<Lookup>();
    l->resolver = this;
    l->key = k;
    l->ttl_s = config_.cache_max_ttl_s;
    l->waiters.push_back(Waiter{cb, ctx});
    *started = l.get();
    inflight_.emplace(std::move(k), std::move(l));
    return true;
}

void Resolver::submit_mx(Lookup& l) {
    if (dns_submit_mx(ctx_, l.domain.c_str(), DNS_NOSRCH, &Resolver::on_mx, &l) != nullptr) {
        l.outstanding++;
        stats_.queries++;
        return;
    }
    finish(l, make_defer("4.4.3",
                         "cannot query MX of " + l.domain + ": " + udns_error(dns_status(ctx_))));
}

void Resolver::submit_addresses(Lookup& l) {
    RM_ASSERT(l.outstanding == 0);
    for (Lookup::Host& h : l.hosts) {
        h.lookup = &l;
        if (dns_submit_a4(ctx_, h.name.c_str(), DNS_NOSRCH, &Resolver::on_a4, &h) != nullptr) {
            h.pending++;
        } else {
            h.tempfail = true;
        }
        if (dns_submit_a6(ctx_, h.name.c_str(), DNS_NOSRCH, &Resolver::on_a6, &h) != nullptr) {
            h.pending++;
        } else {
            h.tempfail = true;
        }
        l.outstanding += h.pending;
        stats_.queries += h.pending;
    }
    if (l.outstanding == 0) host_answered(l);
}

void Resolver::on_mx(dns_ctx* ctx, dns_rr_mx* rr, void* data) {
    const std::unique_ptr<dns_rr_mx, FreeDeleter> owned(rr);
    Lookup& l = *static_cast<Lookup*>(data);
    RM_ASSERT(l.outstanding == 1);
    l.outstanding--;
    l.resolver->mx_answered(l, dns_status(ctx), rr);
}

void Resolver::mx_answered(Lookup& l, int status, const dns_rr_mx* rr) {
    if (status == DNS_E_NXDOMAIN) {
        return finish(l, make_bounce("5.1.2", "domain " + l.domain + " does not exist"));
    }
    if (status == DNS_E_NODATA || (rr != nullptr && rr->dnsmx_nrr == 0)) {
        // RFC 5321 §5.1: no MX records — the domain itself is the implicit MX.
        l.implicit_mx = true;
        l.hosts.resize(1);
        l.hosts[0].name = l.domain;
        return submit_addresses(l);
    }
    if (status < 0 || rr == nullptr) {
        return finish(
            l, make_defer("4.4.3", "MX lookup for " + l.domain + " failed: " + udns_error(status)));
    }
    l.ttl_s = std::min<uint32_t>(l.ttl_s, rr->dnsmx_ttl);
    std::vector<MxRecord> records;
    records.reserve(static_cast<size_t>(rr->dnsmx_nrr));
    for (int i = 0; i < rr->dnsmx_nrr; ++i) {
        const int pref = std::clamp(rr->dnsmx_mx[i].priority, 0, 65535);
        records.push_back(MxRecord{rr->dnsmx_mx[i].name, static_cast<uint16_t>(pref)});
    }
    if (is_null_mx(records)) {
        return finish(
            l, make_bounce("5.1.10", "domain " + l.domain + " does not accept mail (null MX)"));
    }
    order_mx(records, rng_);
    if (records.empty()) {  // only root exchanges, none of them a valid null MX
        return finish(l,
                      make_bounce("5.1.10", "domain " + l.domain + " publishes no usable MX host"));
    }
    l.hosts.resize(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
        l.hosts[i].name = std::move(records[i].name);
        l.hosts[i].preference = records[i].preference;
    }
    submit_addresses(l);
}

void Resolver::on_a4(dns_ctx* ctx, dns_rr_a4* rr, void* data) {
    const std::unique_ptr<dns_rr_a4, FreeDeleter> owned(rr);
    Lookup::Host& h = *static_cast<Lookup::Host*>(data);
    Lookup& l = *h.lookup;
    const int status = dns_status(ctx);
    if (rr != nullptr) {
        const auto n = std::min<size_t>(static_cast<size_t>(rr->dnsa4_nrr), host_addresses_max);
        for (size_t i = 0; i < n; ++i)
            h.v4.push_back(from_v4(rr->dnsa4_addr[i]));
        if (n > 0) l.ttl_s = std::min<uint32_t>(l.ttl_s, rr->dnsa4_ttl);
    } else if (status != DNS_E_NXDOMAIN && status != DNS_E_NODATA) {
        h.tempfail = true;
    }
    RM_ASSERT(h.pending > 0 && l.outstanding > 0);
    h.pending--;
    l.outstanding--;
    l.resolver->host_answered(l);
}

void Resolver::on_a6(dns_ctx* ctx, dns_rr_a6* rr, void* data) {
    const std::unique_ptr<dns_rr_a6, FreeDeleter> owned(rr);
    Lookup::Host& h = *static_cast<Lookup::Host*>(data);
    Lookup& l = *h.lookup;
    const int status = dns_status(ctx);
    if (rr != nullptr) {
        const auto n = std::min<size_t>(static_cast<size_t>(rr->dnsa6_nrr), host_addresses_max);
        for (size_t i = 0; i < n; ++i)
            h.v6.push_back(from_v6(rr->dnsa6_addr[i]));
        if (n > 0) l.ttl_s = std::min<uint32_t>(l.ttl_s, rr->dnsa6_ttl);
    } else if (status != DNS_E_NXDOMAIN && status != DNS_E_NODATA) {
        h.tempfail = true;
    }
    RM_ASSERT(h.pending > 0 && l.outstanding > 0);
    h.pending--;
    l.outstanding--;
    l.resolver->host_answered(l);
}

void Resolver::host_answered(Lookup& l) {
    if (l.outstanding > 0) return;
    std::vector<HostAnswer> answers;
    answers.reserve(l.hosts.size());
    for (Lookup::Host& h : l.hosts) {
        HostAnswer a;
        a.host.name = std::move(h.name);
        a.host.preference = h.preference;
        a.host.addresses = std::move(h.v4);
        a.host.addresses.insert(a.host.addresses.end(), h.v6.begin(), h.v6.end());
        a.tempfail = h.tempfail;
        answers.push_back(std::move(a));
    }
    if (l.relay) {
        RM_ASSERT(answers.size() == 1);
        return finish(l, decide_relay(std::move(answers[0]), l.port, own_));
    }
    finish(l, decide_mail_domain(l.domain, l.implicit_mx, std::move(answers), own_));
}

uint32_t Resolver::ttl_for(const Lookup& l, const Resolution& r) const {
    if (r.outcome == Outcome::defer) return 0;
    const uint32_t ttl = negative_answer(r) ? config_.negative_ttl_s : l.ttl_s;
    return std::min(ttl, config_.cache_max_ttl_s);
}

void Resolver::finish(Lookup& l, Resolution r) {
    RM_ASSERT(l.outstanding == 0);
    r.ttl_s = ttl_for(l, r);
    r.expires_ms = now_ms_ + static_cast<uint64_t>(r.ttl_s) * 1000;
    switch (r.outcome) {
        case Outcome::ok:
            stats_.lookups_ok++;
            break;
        case Outcome::bounce:
            stats_.lookups_bounce++;
            break;
        case Outcome::defer:
            stats_.lookups_defer++;
            break;
    }
    l.result = std::make_shared<const Resolution>(std::move(r));
    if (l.result->ttl_s > 0) cache_->insert(l.key, l.result);
    const auto it = inflight_.find(l.key);
    RM_ASSERT(it != inflight_.end() && it->second.get() == &l);
    done_.push_back(std::move(it->second));
    inflight_.erase(it);
}

void Resolver::pump(uint64_t now_ms) {
    const time_t now_s = udns_now(now_ms);
    const int wait_s = dns_timeouts(ctx_, -1, now_s);
    deadline_ms_ = wait_s < 0 ? 0 : static_cast<uint64_t>(now_s + wait_s) * 1000;
    deliver_done();
}

void Resolver::deliver_done() {
    while (!done_.empty()) {
        std::vector<std::unique_ptr<Lookup>> batch;
        batch.swap(done_);
        for (const auto& l : batch) {
            for (const Waiter& w : l->waiters)
                w.cb(w.ctx, l->result);
        }
    }
}

}  // namespace ringmail::dns
