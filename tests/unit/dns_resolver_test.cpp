// dns_resolver_test.cpp — dns::Resolver against a real dnsmasq started per test on a free
// loopback port: MX order, implicit MX, null MX, NXDOMAIN, REFUSED, timeouts, mail loops,
// destination sharing, the cache (served with dnsmasq stopped; TTL cap and expiry), coalescing,
// literals and the smarthost. The resolver is driven by a poll() loop with a deadline, as the
// engine drives it through the ring.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "dns/resolver.hpp"

namespace ringmail::dns {
namespace {

uint64_t mono_ms() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
}

IpAddress ip(const char* text) {
    return IpAddress::parse(text).value_or(IpAddress{});
}

// A loopback UDP port nobody uses (also free for TCP: dnsmasq binds both).
uint16_t free_port() {
    for (int attempt = 0; attempt < 20; ++attempt) {
        const int u = socket(AF_INET, SOCK_DGRAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            getsockname(u, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
            close(u);
            continue;
        }
        const int t = socket(AF_INET, SOCK_STREAM, 0);
        const bool tcp_free = bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        close(t);
        close(u);
        if (tcp_free) return ntohs(a.sin_port);
    }
    return 0;
}

// The records every test may ask for; the names live under .test, where dnsmasq is
// authoritative (--local), so unknown names are NXDOMAIN and nothing is forwarded.
std::vector<std::string> test_zone() {
    return {
        "--local=/test/",
        "--local-ttl=300",
        "--host-record=ready.test,192.0.2.250",
        // multi.test: one best MX and two equal backups.
        "--mx-host=multi.test,mx-b.test,20",
        "--mx-host=multi.test,mx-a.test,10",
        "--mx-host=multi.test,mx-c.test,20",
        "--host-record=mx-a.test,192.0.2.1,2001:db8::1",
        "--host-record=mx-b.test,192.0.2.2",
        "--host-record=mx-c.test,192.0.2.3",
        // other.test: the same hosts in another order and with other preferences.
        "--mx-host=other.test,mx-c.test,5",
        "--mx-host=other.test,mx-a.test,7",
        "--mx-host=other.test,mx-b.test,9",
        "--host-record=implicit.test,192.0.2.4",
        // RFC 7505 null MX: preference 0, exchange "." (RDATA 0000 00).
        "--dns-rr=nullmx.test,15,000000",
        "--mx-host=loop.test,self.test,10",
        "--host-record=self.test,127.0.0.1",
        "--mx-host=backup.test,self.test,20",
        "--mx-host=backup.test,mx-a.test,10",
        "--mx-host=noaddr.test,ghost.test,10",
    };
}

class Dnsmasq {
  public:
    ~Dnsmasq() { stop(); }

    // Starts dnsmasq and waits until it answers a query. False when it cannot run here.
    bool start() {
        for (int attempt = 0; attempt < 5; ++attempt) {
            port_ = free_port();
            if (port_ == 0) continue;
            if (!spawn()) return false;
            if (wait_ready()) return true;
            stop();
        }
        return false;
    }

    void stop() {
        if (pid_ <= 0) return;
        kill(pid_, SIGTERM);
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    [[nodiscard]] uint16_t port() const { return port_; }

  private:
    bool spawn() {
        std::vector<std::string> args = {"dnsmasq",
                                         "--no-daemon",
                                         "--port=" + std::to_string(port_),
                                         "--listen-address=127.0.0.1",
                                         "--bind-interfaces",
                                         "--no-resolv",
                                         "--no-hosts",
                                         "--conf-file=/dev/null"};
        for (auto& a : test_zone())
            args.push_back(a);
        pid_ = fork();
        if (pid_ < 0) return false;
        if (pid_ == 0) {
            const int null = open("/dev/null", O_RDWR);
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
            std::vector<char*> argv;
            for (auto& a : args)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            execvp("dnsmasq", argv.data());
            execv("/usr/sbin/dnsmasq", argv.data());
            _exit(127);
        }
        return true;
    }

    // Readiness is an answer to a real query (an A query for ready.test), never a sleep.
    bool wait_ready() {
        static const unsigned char query[] = {0x12, 0x34, 0x01, 0x00, 0,   1,   0,   0,   0, 0,
                                              0,    0,    5,    'r',  'e', 'a', 'd', 'y', 4, 't',
                                              'e',  's',  't',  0,    0,   1,   0,   1};
        const int s = socket(AF_INET, SOCK_DGRAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port_);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool ready = false;
        const uint64_t deadline = mono_ms() + 10000;
        while (!ready && mono_ms() < deadline) {
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {  // died: port taken, bad flag...
                pid_ = -1;
                break;
            }
            (void)sendto(s, query, sizeof query, 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
            pollfd p{s, POLLIN, 0};
            if (poll(&p, 1, 20) == 1) {
                unsigned char buf[512];
                ready = recv(s, buf, sizeof buf, 0) > 0;
            }
        }
        close(s);
        return ready;
    }

    pid_t pid_ = -1;
    uint16_t port_ = 0;
};

struct Got {
    int calls = 0;
    ResolutionPtr result;
    std::function<void(const ResolutionPtr&)> then;  // runs inside the callback
};

void on_result(void* ctx, const ResolutionPtr& r) {
    Got* g = static_cast<Got*>(ctx);
    g->calls++;
    g->result = r;
    if (g->then) g->then(r);
}

// Runs the resolver until every Got has its answer or the deadline passes. clock_offset_ms
// shifts the resolver's clock, as a test of TTLs moves time forward.
bool drive(Resolver& r, std::vector<Got*> gots, uint64_t limit_ms = 8000,
           uint64_t clock_offset_ms = 0) {
    const uint64_t deadline = mono_ms() + limit_ms;
    auto all = [&] {
        return std::all_of(gots.begin(), gots.end(), [](Got* g) { return g->calls > 0; });
    };
    while (!all()) {
        uint64_t now = mono_ms();
        if (now >= deadline) return false;
        int wait_ms = 100;
        if (const uint64_t d = r.next_deadline_ms(); d != 0) {
            const uint64_t shifted = now + clock_offset_ms;
            wait_ms = d <= shifted ? 0 : static_cast<int>(std::min<uint64_t>(d - shifted, 100));
        }
        pollfd p{r.fd(), POLLIN, 0};
        const int n = poll(&p, 1, wait_ms);
        now = mono_ms() + clock_offset_ms;
        if (n == 1) r.on_readable(now);
        if (r.next_deadline_ms() != 0 && now >= r.next_deadline_ms()) (void)r.on_timer(now);
    }
    return true;
}

std::vector<std::string> host_names(const Resolution& r) {
    std::vector<std::string> out;
    for (const MxHost& h : r.hosts)
        out.push_back(h.name);
    return out;
}

class ResolverTest : public ::testing::Test {
  protected:
    void SetUp() override {
        // dnsmasq is installed by the test command: a missing one fails, never skips.
        ASSERT_TRUE(dnsmasq_.start()) << "dnsmasq did not start (tools/install-deps.sh test)";
    }

    DnsConfig config() const {
        DnsConfig c;
        c.servers = {"127.0.0.1:" + std::to_string(dnsmasq_.port())};
        c.query_timeout_s = 1;
        c.query_tries = 2;
        c.negative_ttl_s = 7;
        c.rng_seed = 42;
        return c;
    }

    void init(Resolver& r, const DnsConfig& c, OwnAddresses own = {}) {
        std::string error;
        ASSERT_TRUE(r.init(c, std::move(own), &error)) << error;
        ASSERT_GE(r.fd(), 0);
    }

    ResolutionPtr resolve(Resolver& r, std::string_view domain, uint64_t offset_ms = 0) {
        Got g;
        r.resolve_destination(domain, mono_ms() + offset_ms, on_result, &g);
        EXPECT_TRUE(drive(r, {&g}, 8000, offset_ms)) << domain;
        EXPECT_EQ(g.calls, 1);
        return g.result;
    }

    Dnsmasq dnsmasq_;
};

TEST_F(ResolverTest, MxHostsInPreferenceOrderWithTheirAddresses) {
    Resolver r;
    init(r, config());
    const ResolutionPtr res = resolve(r, "Multi.Test.");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->outcome, Outcome::ok) << res->text;
    ASSERT_EQ(res->hosts.size(), 3u);
    EXPECT_EQ(res->hosts[0].name, "mx-a.test");
    EXPECT_EQ(res->hosts[0].preference, 10);
    EXPECT_EQ(res->hosts[1].preference, 20);
    EXPECT_EQ(res->hosts[2].preference, 20);
    EXPECT_EQ(res->hosts[0].addresses,
              (std::vector<IpAddress>{ip("192.0.2.1"), ip("2001:db8::1")}));  // AAAA too
    const std::set<std::string> backups{res->hosts[1].name, res->hosts[2].name};
    EXPECT_EQ(backups, (std::set<std::string>{"mx-b.test", "mx-c.test"}));
    EXPECT_EQ(res->port, 25);
    EXPECT_EQ(res->destination_key, "mx:mx-a.test,mx-b.test,mx-c.test:25");
    EXPECT_EQ(res->ttl_s, 300u);
    EXPECT_EQ(r.lookups_in_flight(), 0u);
}

TEST_F(ResolverTest, EqualPreferenceOrderFollowsTheSeed) {
    std::set<std::vector<std::string>> orders;
    std::vector<std::string> first_with_42;
    for (uint64_t seed : {42, 42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}) {
        Resolver r;
        DnsConfig c = config();
        c.rng_seed = seed;
        init(r, c);
        const ResolutionPtr res = resolve(r, "multi.test");
        ASSERT_TRUE(res && res->outcome == Outcome::ok);
        EXPECT_EQ(res->hosts[0].name, "mx-a.test");
        if (seed == 42 && first_with_42.empty()) {
            first_with_42 = host_names(*res);
        } else if (seed == 42) {
            EXPECT_EQ(host_names(*res), first_with_42);  // same seed, same order
        }
        orders.insert(host_names(*res));
    }
    EXPECT_EQ(orders.size(), 2u);  // both orders of the two equal backups occur
}

TEST_F(ResolverTest, NoMxMeansTheDomainIsItsOwnMx) {
    Resolver r;
    init(r, config());
    const ResolutionPtr res = resolve(r, "implicit.test");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->outcome, Outcome::ok) << res->text;
    ASSERT_EQ(res->hosts.size(), 1u);
    EXPECT_EQ(res->hosts[0].name, "implicit.test");
    EXPECT_EQ(res->hosts[0].addresses, std::vector<IpAddress>{ip("192.0.2.4")});
    EXPECT_EQ(res->destination_key, "mx:implicit.test:25");
}

TEST_F(ResolverTest, NullMxBounces5110) {
    Resolver r;
    init(r, config());
    const ResolutionPtr res = resolve(r, "nullmx.test");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->outcome, Outcome::bounce);
    EXPECT_STREQ(res->status, "5.1.10");
    EXPECT_TRUE(res->hosts.empty());
}

TEST_F(ResolverTest, NxdomainBounces512AndIsCachedForTheNegativeTtl) {
    Resolver r;
    init(r, config());
    const ResolutionPtr res = resolve(r, "nx.test");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->outcome, Outcome::bounce);
    EXPECT_STREQ(res->status, "5.1.2");
    EXPECT_EQ(res->ttl_s, 7u);
    EXPECT_EQ(r.cache_size(), 1u);
}

TEST_F(ResolverTest, RefusedDefers443) {
    Resolver r;
    init(r, config());
    // Outside .test dnsmasq has no upstream and answers REFUSED.
    const ResolutionPtr res = resolve(r, "example.org");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->outcome, Outcome::defer);
    EXPECT_STREQ(res->status, "4.4.3");
    EXPECT_EQ(r.cache_size(), 0u);  // temporary: not cached
}

TEST_F(ResolverTest, TimeoutDefersWithinTheConfiguredTime) {
    // A bound UDP socket that never answers: every try times out.
    const int silent = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ASSERT_EQ(bind(silent, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(getsockname(silent, reinterpret_cast<sockaddr*>(&a), &len), 0);

    Resolver r;
    DnsConfig c = config();
    c.servers = {"127.0.0.1:" + std::to_string(ntohs(a.sin_port))};
    init(r, c);
    const uint64_t start = mono_ms();
    Got g;
    r.resolve_destination("multi.test", start, on_result, &g);
    EXPECT_NE(r.next_deadline_ms(), 0u);
    ASSERT_TRUE(drive(r, {&g}, 10000));
    const uint64_t elapsed = mono_ms() - start;
    close(silent);
    EXPECT_EQ(g.result->outcome, Outcome::defer);
    EXPECT_STREQ(g.result->status, "4.4.3");
    // udns: 1 s then 2 s (timeout << try), counted in whole seconds.
    EXPECT_GE(elapsed, 1000u);
    EXPECT_LE(elapsed, 5000u);
    EXPECT_EQ(r.next_deadline_ms(), 0u);
}

TEST_F(ResolverTest, MxThatIsUsBounces546) {
    Resolver r;
    init(r, config(), OwnAddresses({ip("127.0.0.1")}, {}));
    const ResolutionPtr res = resolve(r, "loop.test");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->outcome, Outcome::bounce);
    EXPECT_STREQ(res->status, "5.4.6");
}

TEST_F(ResolverTest, BackupMxThatIsUsKeepsOnlyBetterHosts) {
    Resolver r;
    init(r, config(), OwnAddresses({ip("0.0.0.0")}, OwnAddresses::interface_addresses()));
    const ResolutionPtr res = resolve(r, "backup.test");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->outcome, Outcome::ok) << res->text;
    EXPECT_EQ(host_names(*res), std::vector<std::string>{"mx-a.test"});
}

TEST_F(ResolverTest, MxWithoutAddressDefersAndIsNotCached) {
    Resolver r;
    init(r, config());
    const ResolutionPtr res = resolve(r, "noaddr.test");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->outcome, Outcome::defer);
    EXPECT_STREQ(res->status, "4.4.3");
    const uint64_t queries = r.stats().queries;
    const ResolutionPtr again = resolve(r, "noaddr.test");
    EXPECT_GT(r.stats().queries, queries);  // asked DNS again
    EXPECT_EQ(again->outcome, Outcome::defer);
}

TEST_F(ResolverTest, DomainsWithTheSameMxHostsShareADestination) {
    Resolver r;
    init(r, config());
    const ResolutionPtr one = resolve(r, "multi.test");
    const ResolutionPtr two = resolve(r, "other.test");
    ASSERT_TRUE(one && two);
    ASSERT_EQ(one->outcome, Outcome::ok);
    ASSERT_EQ(two->outcome, Outcome::ok);
    EXPECT_EQ(one->destination_key, two->destination_key);
    EXPECT_EQ(one->destination_hash, two->destination_hash);
    EXPECT_EQ(two->hosts[0].name, "mx-c.test");  // each keeps its own order
    const ResolutionPtr implicit = resolve(r, "implicit.test");
    EXPECT_NE(implicit->destination_key, one->destination_key);
}

TEST_F(ResolverTest, SecondLookupIsAnsweredFromTheCacheWithDnsGone) {
    Resolver r;
    init(r, config());
    const ResolutionPtr first = resolve(r, "multi.test");
    ASSERT_TRUE(first && first->outcome == Outcome::ok);
    const uint64_t queries = r.stats().queries;
    dnsmasq_.stop();

    Got g;
    r.resolve_destination("MULTI.test", mono_ms(), on_result, &g);
    EXPECT_EQ(g.calls, 1);  // answered before resolve_destination returned
    EXPECT_EQ(g.result, first);
    EXPECT_EQ(r.stats().queries, queries);
    EXPECT_EQ(r.stats().cache_hits, 1u);
    EXPECT_EQ(r.lookups_in_flight(), 0u);
}

TEST_F(ResolverTest, CacheHonoursTheTtlCapAndExpires) {
    Resolver r;
    DnsConfig c = config();
    c.cache_max_ttl_s = 100;  // below dnsmasq's 300
    init(r, c);
    const ResolutionPtr first = resolve(r, "multi.test");
    ASSERT_TRUE(first && first->outcome == Outcome::ok);
    EXPECT_EQ(first->ttl_s, 100u);

    Got hit;
    r.resolve_destination("multi.test", mono_ms() + 98'000, on_result, &hit);
    EXPECT_EQ(hit.calls, 1);
    EXPECT_EQ(hit.result, first);

    const uint64_t queries = r.stats().queries;
    const ResolutionPtr later = resolve(r, "multi.test", 101'000);  // past the cap
    ASSERT_TRUE(later);
    EXPECT_NE(later, first);
    EXPECT_GT(r.stats().queries, queries);
    EXPECT_EQ(later->destination_key, first->destination_key);
}

TEST_F(ResolverTest, ConcurrentLookupsOfOneDomainShareTheQueries) {
    Resolver r;
    init(r, config());
    Got a, b;
    r.resolve_destination("multi.test", mono_ms(), on_result, &a);
    const uint64_t queries = r.stats().queries;
    r.resolve_destination("multi.test", mono_ms(), on_result, &b);
    EXPECT_EQ(r.stats().queries, queries);
    EXPECT_EQ(r.stats().coalesced, 1u);
    EXPECT_EQ(r.lookups_in_flight(), 1u);
    ASSERT_TRUE(drive(r, {&a, &b}));
    EXPECT_EQ(a.calls, 1);
    EXPECT_EQ(b.calls, 1);
    EXPECT_EQ(a.result, b.result);
    EXPECT_EQ(r.stats().queries, 1u + 2u * 3u);  // MX, then A and AAAA of three hosts
}

TEST_F(ResolverTest, CallbackMayResolveAgain) {
    Resolver r;
    init(r, config());
    Got inner, outer;
    outer.then = [&](const ResolutionPtr&) {
        r.resolve_destination("implicit.test", mono_ms(), on_result, &inner);
    };
    r.resolve_destination("multi.test", mono_ms(), on_result, &outer);
    ASSERT_TRUE(drive(r, {&outer, &inner}));
    EXPECT_EQ(outer.result->outcome, Outcome::ok);
    EXPECT_EQ(inner.result->outcome, Outcome::ok);
    EXPECT_EQ(inner.result->hosts[0].name, "implicit.test");
}

TEST_F(ResolverTest, DomainLiteralNeedsNoDns) {
    Resolver r;
    init(r, config());
    Got g;
    r.resolve_destination("[IPv6:2001:db8::9]", mono_ms(), on_result, &g);
    ASSERT_EQ(g.calls, 1);
    ASSERT_EQ(g.result->outcome, Outcome::ok);
    EXPECT_EQ(g.result->hosts[0].addresses, std::vector<IpAddress>{ip("2001:db8::9")});
    EXPECT_EQ(g.result->destination_key, "ip:2001:db8::9:25");
    EXPECT_EQ(r.stats().queries, 0u);

    Got bad;
    r.resolve_destination("[999.1.1.1]", mono_ms(), on_result, &bad);
    ASSERT_EQ(bad.calls, 1);
    EXPECT_EQ(bad.result->outcome, Outcome::bounce);
}

TEST_F(ResolverTest, MalformedDomainBouncesWithoutDns) {
    Resolver r;
    init(r, config());
    Got g;
    r.resolve_destination("bad..test", mono_ms(), on_result, &g);
    ASSERT_EQ(g.calls, 1);
    EXPECT_EQ(g.result->outcome, Outcome::bounce);
    EXPECT_STREQ(g.result->status, "5.1.2");

    Got long_name;
    r.resolve_destination(std::string(300, 'a') + ".test", mono_ms(), on_result, &long_name);
    ASSERT_EQ(long_name.calls, 1);
    EXPECT_STREQ(long_name.result->status, "5.1.2");

    Got label;  // a label over 63 octets (RFC 1035 §2.3.4)
    r.resolve_destination(std::string(64, 'a') + ".test", mono_ms(), on_result, &label);
    ASSERT_EQ(label.calls, 1);
    EXPECT_STREQ(label.result->status, "5.1.2");

    Got idn;  // no IDNA yet: wait rather than bounce on a false NXDOMAIN
    r.resolve_destination(
        "b\xc3\xbc"
        "cher.test",
        mono_ms(), on_result, &idn);
    ASSERT_EQ(idn.calls, 1);
    EXPECT_EQ(idn.result->outcome, Outcome::defer);
    EXPECT_EQ(r.stats().queries, 0u);
}

TEST_F(ResolverTest, SmarthostByNameIsItsAddressesOnItsPort) {
    Resolver r;
    init(r, config());
    const auto relay = parse_smarthost("mx-a.test:2525");
    ASSERT_TRUE(relay);
    Got g;
    r.resolve_smarthost(*relay, mono_ms(), on_result, &g);
    ASSERT_TRUE(drive(r, {&g}));
    ASSERT_EQ(g.result->outcome, Outcome::ok) << g.result->text;
    EXPECT_EQ(g.result->port, 2525);
    ASSERT_EQ(g.result->hosts.size(), 1u);
    EXPECT_EQ(g.result->hosts[0].addresses,
              (std::vector<IpAddress>{ip("192.0.2.1"), ip("2001:db8::1")}));
    EXPECT_EQ(g.result->destination_key, "relay:mx-a.test:2525");
    EXPECT_EQ(r.stats().queries, 2u);  // A and AAAA, no MX

    Got missing;
    r.resolve_smarthost(*parse_smarthost("nothere.test"), mono_ms(), on_result, &missing);
    ASSERT_TRUE(drive(r, {&missing}));
    EXPECT_EQ(missing.result->outcome, Outcome::defer);  // config error: mail waits
}

TEST_F(ResolverTest, SmarthostLiteralNeedsNoDns) {
    Resolver r;
    init(r, config());
    Got g;
    r.resolve_smarthost(*parse_smarthost("[192.0.2.77]:587"), mono_ms(), on_result, &g);
    ASSERT_EQ(g.calls, 1);
    ASSERT_EQ(g.result->outcome, Outcome::ok);
    EXPECT_EQ(g.result->port, 587);
    EXPECT_EQ(g.result->destination_key, "ip:192.0.2.77:587");
    EXPECT_EQ(r.stats().queries, 0u);
}

TEST(ResolverInit, RejectsBadServers) {
    Resolver r;
    DnsConfig c;
    c.servers = {"dns.example"};
    std::string error;
    EXPECT_FALSE(r.init(c, {}, &error));
    EXPECT_NE(error.find("dns.example"), std::string::npos);
}

TEST(ResolverInit, DefaultsToResolvConf) {
    Resolver r;
    std::string error;
    ASSERT_TRUE(r.init(DnsConfig{}, {}, &error)) << error;
    EXPECT_GE(r.fd(), 0);
    EXPECT_EQ(r.next_deadline_ms(), 0u);
}

}  // namespace
}  // namespace ringmail::dns
