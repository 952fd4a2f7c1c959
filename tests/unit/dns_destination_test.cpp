// dns_destination_test.cpp — the pure rules of dns/destination: null MX (RFC 7505), MX order
// (RFC 5321 §5.1) with a seeded shuffle, destination keys, literals, flag parsing, the
// mail-loop cut, and the outcome of a set of host answers.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <set>

#include "dns/destination.hpp"

namespace ringmail::dns {
namespace {

IpAddress ip(const char* text) {
    const auto a = IpAddress::parse(text);
    EXPECT_TRUE(a.has_value()) << text;
    return a.value_or(IpAddress{});
}

MxHost host(std::string name, uint16_t pref, std::vector<IpAddress> addrs) {
    MxHost h;
    h.name = std::move(name);
    h.preference = pref;
    h.addresses = std::move(addrs);
    return h;
}

HostAnswer answer(std::string name, uint16_t pref, std::vector<IpAddress> addrs,
                  bool tempfail = false) {
    return HostAnswer{host(std::move(name), pref, std::move(addrs)), tempfail};
}

std::vector<std::string> names(const std::vector<MxRecord>& r) {
    std::vector<std::string> out;
    for (const auto& m : r)
        out.push_back(m.name);
    return out;
}

TEST(NullMx, SingleRootWithPreferenceZeroIsNullMx) {
    EXPECT_TRUE(is_null_mx(std::vector<MxRecord>{{"", 0}}));
    EXPECT_TRUE(is_null_mx(std::vector<MxRecord>{{".", 0}}));
}

TEST(NullMx, AnythingElseIsNot) {
    EXPECT_FALSE(is_null_mx(std::vector<MxRecord>{}));
    EXPECT_FALSE(is_null_mx(std::vector<MxRecord>{{"", 10}}));
    EXPECT_FALSE(is_null_mx(std::vector<MxRecord>{{"mx.example", 0}}));
    EXPECT_FALSE(is_null_mx(std::vector<MxRecord>{{"", 0}, {"mx.example", 10}}));
}

TEST(OrderMx, PreferenceAscendingAndRootDroppedAndLowerCased) {
    std::vector<MxRecord> r{{"C.example", 30}, {"", 0}, {"a.example.", 10}, {"b.example", 20}};
    Rng rng(1);
    order_mx(r, rng);
    EXPECT_EQ(names(r), (std::vector<std::string>{"a.example", "b.example", "c.example"}));
    EXPECT_EQ(r[0].preference, 10);
    EXPECT_EQ(r[2].preference, 30);
}

TEST(OrderMx, EqualPreferenceOrderIsStablePerSeed) {
    const std::vector<MxRecord> in{{"a", 10}, {"b", 10}, {"c", 10}, {"d", 10}, {"z", 5}};
    for (uint64_t seed = 1; seed < 50; ++seed) {
        auto x = in, y = in;
        Rng rx(seed), ry(seed);
        order_mx(x, rx);
        order_mx(y, ry);
        EXPECT_EQ(names(x), names(y)) << "seed " << seed;
        EXPECT_EQ(x[0].name, "z");  // the better preference always first
    }
}

TEST(OrderMx, EqualPreferenceOrderIsRandomisedAcrossSeeds) {
    const std::vector<MxRecord> in{{"a", 10}, {"b", 10}, {"c", 10}, {"low", 20}};
    std::set<std::vector<std::string>> seen;
    for (uint64_t seed = 1; seed < 200; ++seed) {
        auto r = in;
        Rng rng(seed);
        order_mx(r, rng);
        EXPECT_EQ(r.back().name, "low");
        seen.insert(names(r));
    }
    EXPECT_EQ(seen.size(), 6u);  // every permutation of the three equals shows up
}

TEST(OrderMx, KeepsAtMostTheLimit) {
    std::vector<MxRecord> r;
    for (size_t i = 0; i < mx_hosts_max + 5; ++i) {
        r.push_back(MxRecord{"h" + std::to_string(i), static_cast<uint16_t>(i)});
    }
    Rng rng(7);
    order_mx(r, rng);
    ASSERT_EQ(r.size(), mx_hosts_max);
    EXPECT_EQ(r.back().name, "h" + std::to_string(mx_hosts_max - 1));
}

TEST(DestinationKey, SameHostSetInAnotherOrderIsTheSameDestination) {
    const std::vector<MxHost> one{host("mx1.example", 10, {}), host("mx2.example", 20, {})};
    const std::vector<MxHost> two{host("mx2.example", 5, {}), host("mx1.example", 5, {})};
    const std::string k1 = destination_key_for_hosts(one, 25);
    EXPECT_EQ(k1, destination_key_for_hosts(two, 25));
    EXPECT_EQ(k1, "mx:mx1.example,mx2.example:25");
    EXPECT_EQ(destination_hash(k1), destination_hash(destination_key_for_hosts(two, 25)));
}

TEST(DestinationKey, DifferentSetsOrPortsDiffer) {
    const std::vector<MxHost> one{host("mx1.example", 10, {}), host("mx2.example", 20, {})};
    const std::vector<MxHost> sub{host("mx1.example", 10, {})};
    EXPECT_NE(destination_key_for_hosts(one, 25), destination_key_for_hosts(sub, 25));
    EXPECT_NE(destination_key_for_hosts(one, 25), destination_key_for_hosts(one, 587));
    EXPECT_NE(destination_hash("mx:a:25"), destination_hash("mx:b:25"));
    EXPECT_EQ(destination_key_for_relay("Relay.Example.", 587), "relay:relay.example:587");
    EXPECT_EQ(destination_key_for_address(ip("192.0.2.1"), 25), "ip:192.0.2.1:25");
}

TEST(DomainLiteral, Ipv4AndTaggedIpv6) {
    EXPECT_EQ(parse_domain_literal("[192.0.2.1]"), ip("192.0.2.1"));
    EXPECT_EQ(parse_domain_literal("[IPv6:2001:db8::1]"), ip("2001:db8::1"));
    EXPECT_EQ(parse_domain_literal("[ipv6:2001:DB8::1]"), ip("2001:db8::1"));
}

TEST(DomainLiteral, RejectsWhatRfc5321DoesNotAllow) {
    EXPECT_FALSE(parse_domain_literal("192.0.2.1"));
    EXPECT_FALSE(parse_domain_literal("[]"));
    EXPECT_FALSE(parse_domain_literal("[2001:db8::1]"));     // IPv6 needs its tag (§4.1.3)
    EXPECT_FALSE(parse_domain_literal("[IPv6:192.0.2.1]"));  // the tag names the family
    EXPECT_FALSE(parse_domain_literal("[300.0.2.1]"));
    EXPECT_FALSE(parse_domain_literal("[192.0.2.1"));
    EXPECT_FALSE(parse_domain_literal("[x-tag:whatever]"));  // general literals: not routable
}

TEST(FormatIp, CanonicalText) {
    EXPECT_EQ(format_ip(ip("192.0.2.1")), "192.0.2.1");
    EXPECT_EQ(format_ip(ip("2001:DB8:0:0::1")), "2001:db8::1");
}

TEST(Smarthost, NamesLiteralsAndPorts) {
    auto s = parse_smarthost("Relay.Example");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->host, "relay.example");
    EXPECT_EQ(s->port, 25);
    EXPECT_FALSE(s->literal);

    s = parse_smarthost("relay.example:587");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->host, "relay.example");
    EXPECT_EQ(s->port, 587);

    s = parse_smarthost("[relay.example]:2525");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->host, "relay.example");
    EXPECT_EQ(s->port, 2525);

    s = parse_smarthost("192.0.2.7:2525");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->literal, ip("192.0.2.7"));
    EXPECT_EQ(s->port, 2525);

    s = parse_smarthost("[IPv6:2001:db8::7]:26");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->literal, ip("2001:db8::7"));
    EXPECT_EQ(s->port, 26);

    s = parse_smarthost("[2001:db8::7]");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->literal, ip("2001:db8::7"));
    EXPECT_EQ(s->port, 25);
}

TEST(Smarthost, RejectsMalformed) {
    EXPECT_FALSE(parse_smarthost(""));
    EXPECT_FALSE(parse_smarthost("relay.example:"));
    EXPECT_FALSE(parse_smarthost("relay.example:0"));
    EXPECT_FALSE(parse_smarthost("relay.example:70000"));
    EXPECT_FALSE(parse_smarthost("2001:db8::1"));  // ambiguous without brackets
    // No host name at all (found by the fuzzer: resolving it asserted).
    EXPECT_FALSE(parse_smarthost("."));
    EXPECT_FALSE(parse_smarthost("[.]"));
    EXPECT_FALSE(parse_smarthost(".:25"));
    EXPECT_FALSE(parse_smarthost("relay..example"));
    EXPECT_FALSE(parse_smarthost(".relay.example"));
    EXPECT_FALSE(parse_smarthost(std::string(64, 'a') + ".example"));  // a label over 63
    EXPECT_TRUE(parse_smarthost("relay.example."));                    // one trailing dot
    EXPECT_FALSE(parse_smarthost("[192.0.2.1]x"));
    EXPECT_FALSE(parse_smarthost("relay example"));
}

TEST(DnsServer, AddressesAndPorts) {
    auto s = parse_dns_server("127.0.0.1:5353");
    ASSERT_TRUE(s);
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&s->addr);
    EXPECT_EQ(sin->sin_family, AF_INET);
    EXPECT_EQ(ntohs(sin->sin_port), 5353);
    EXPECT_EQ(s->length, sizeof(sockaddr_in));

    s = parse_dns_server("192.0.2.53");
    ASSERT_TRUE(s);
    EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&s->addr)->sin_port), 53);

    s = parse_dns_server("[::1]:5300");
    ASSERT_TRUE(s);
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&s->addr);
    EXPECT_EQ(sin6->sin6_family, AF_INET6);
    EXPECT_EQ(ntohs(sin6->sin6_port), 5300);

    s = parse_dns_server("2001:db8::53");
    ASSERT_TRUE(s);
    EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in6*>(&s->addr)->sin6_port), 53);

    EXPECT_FALSE(parse_dns_server("dns.example"));
    EXPECT_FALSE(parse_dns_server("127.0.0.1:x"));
}

TEST(OwnAddresses, ExplicitListenersMatchExactly) {
    const OwnAddresses own({ip("192.0.2.10")}, {ip("198.51.100.1")});
    EXPECT_TRUE(own.contains(ip("192.0.2.10")));
    EXPECT_FALSE(own.contains(ip("198.51.100.1")));  // interfaces count only for wildcards
    EXPECT_FALSE(own.contains(ip("127.0.0.1")));
}

TEST(OwnAddresses, WildcardMeansEveryLocalAddress) {
    const OwnAddresses own({ip("0.0.0.0")}, {ip("198.51.100.1"), ip("2001:db8::5")});
    EXPECT_TRUE(own.contains(ip("198.51.100.1")));
    EXPECT_TRUE(own.contains(ip("2001:db8::5")));
    EXPECT_TRUE(own.contains(ip("127.0.0.2")));
    EXPECT_TRUE(own.contains(ip("::1")));
    EXPECT_FALSE(own.contains(ip("192.0.2.99")));
    const OwnAddresses v6({ip("::")}, {});
    EXPECT_TRUE(v6.contains(ip("127.0.0.1")));
}

TEST(OwnAddresses, InterfaceListHasLoopback) {
    const auto list = OwnAddresses::interface_addresses();
    EXPECT_NE(std::find(list.begin(), list.end(), ip("127.0.0.1")), list.end());
}

TEST(DecideMailDomain, OkKeepsOrderAndBuildsTheKey) {
    std::vector<HostAnswer> hosts;
    hosts.push_back(answer("mx1.example", 10, {ip("192.0.2.1")}));
    hosts.push_back(answer("mx2.example", 20, {ip("192.0.2.2")}));
    const Resolution r = decide_mail_domain("example.com", false, std::move(hosts), {});
    ASSERT_EQ(r.outcome, Outcome::ok);
    ASSERT_EQ(r.hosts.size(), 2u);
    EXPECT_EQ(r.hosts[0].name, "mx1.example");
    EXPECT_EQ(r.destination_key, "mx:mx1.example,mx2.example:25");
    EXPECT_EQ(r.destination_hash, destination_hash(r.destination_key));
}

TEST(DecideMailDomain, BestMxIsUsIsAMailLoop) {
    const OwnAddresses own({ip("192.0.2.1")}, {});
    std::vector<HostAnswer> hosts;
    hosts.push_back(answer("mx1.example", 10, {ip("192.0.2.1")}));
    hosts.push_back(answer("mx2.example", 20, {ip("192.0.2.2")}));
    const Resolution r = decide_mail_domain("example.com", false, std::move(hosts), own);
    EXPECT_EQ(r.outcome, Outcome::bounce);
    EXPECT_STREQ(r.status, "5.4.6");
}

TEST(DecideMailDomain, BackupMxThatIsUsKeepsOnlyBetterHosts) {
    const OwnAddresses own({ip("192.0.2.2")}, {});
    std::vector<HostAnswer> hosts;
    hosts.push_back(answer("mx1.example", 10, {ip("192.0.2.1")}));
    hosts.push_back(answer("mx2.example", 20, {ip("192.0.2.2")}));
    hosts.push_back(answer("mx3.example", 30, {ip("192.0.2.3")}));
    const Resolution r = decide_mail_domain("example.com", false, std::move(hosts), own);
    ASSERT_EQ(r.outcome, Outcome::ok);
    ASSERT_EQ(r.hosts.size(), 1u);
    EXPECT_EQ(r.hosts[0].name, "mx1.example");
    EXPECT_EQ(r.destination_key, "mx:mx1.example:25");
}

TEST(DecideMailDomain, ImplicitMxThatIsUsIsAMailLoop) {
    const OwnAddresses own({ip("0.0.0.0")}, {});
    std::vector<HostAnswer> hosts;
    hosts.push_back(answer("example.com", 0, {ip("127.0.0.1")}));
    const Resolution r = decide_mail_domain("example.com", true, std::move(hosts), own);
    EXPECT_EQ(r.outcome, Outcome::bounce);
    EXPECT_STREQ(r.status, "5.4.6");
}

TEST(DecideMailDomain, NoAddressForAnyMxDefers) {
    std::vector<HostAnswer> hosts;
    hosts.push_back(answer("mx1.example", 10, {}));
    hosts.push_back(answer("mx2.example", 20, {}));
    const Resolution r = decide_mail_domain("example.com", false, std::move(hosts), {});
    EXPECT_EQ(r.outcome, Outcome::defer);
    EXPECT_STREQ(r.status, "4.4.3");
}

TEST(DecideMailDomain, HostsWithoutAddressesAreSkipped) {
    std::vector<HostAnswer> hosts;
    hosts.push_back(answer("dead.example", 10, {}));
    hosts.push_back(answer("mx2.example", 20, {ip("192.0.2.2")}));
    const Resolution r = decide_mail_domain("example.com", false, std::move(hosts), {});
    ASSERT_EQ(r.outcome, Outcome::ok);
    ASSERT_EQ(r.hosts.size(), 1u);
    EXPECT_EQ(r.hosts[0].name, "mx2.example");
}

TEST(DecideMailDomain, ImplicitMxWithoutAddressBouncesUnlessTemporary) {
    std::vector<HostAnswer> none;
    none.push_back(answer("example.com", 0, {}));
    const Resolution hard = decide_mail_domain("example.com", true, std::move(none), {});
    EXPECT_EQ(hard.outcome, Outcome::bounce);
    EXPECT_STREQ(hard.status, "5.4.4");

    std::vector<HostAnswer> failed;
    failed.push_back(answer("example.com", 0, {}, true));
    const Resolution soft = decide_mail_domain("example.com", true, std::move(failed), {});
    EXPECT_EQ(soft.outcome, Outcome::defer);
    EXPECT_STREQ(soft.status, "4.4.3");
}

TEST(DecideRelay, OkDeferAndLoop) {
    const OwnAddresses own({ip("192.0.2.99")}, {});
    const Resolution ok = decide_relay(answer("relay.example", 0, {ip("192.0.2.1")}), 587, own);
    ASSERT_EQ(ok.outcome, Outcome::ok);
    EXPECT_EQ(ok.port, 587);
    EXPECT_EQ(ok.destination_key, "relay:relay.example:587");

    const Resolution none = decide_relay(answer("relay.example", 0, {}), 25, own);
    EXPECT_EQ(none.outcome, Outcome::defer);

    const Resolution loop = decide_relay(answer("relay.example", 0, {ip("192.0.2.99")}), 25, own);
    EXPECT_EQ(loop.outcome, Outcome::defer);
    EXPECT_STREQ(loop.status, "4.4.6");
}

TEST(DecideAddress, LiteralGoesStraightToTheAddress) {
    const Resolution r = decide_address(ip("192.0.2.1"), 25, {}, false);
    ASSERT_EQ(r.outcome, Outcome::ok);
    ASSERT_EQ(r.hosts.size(), 1u);
    EXPECT_EQ(r.hosts[0].name, "[192.0.2.1]");
    EXPECT_EQ(r.hosts[0].addresses, std::vector<IpAddress>{ip("192.0.2.1")});
    EXPECT_EQ(r.destination_key, "ip:192.0.2.1:25");

    const OwnAddresses own({ip("192.0.2.1")}, {});
    const Resolution loop = decide_address(ip("192.0.2.1"), 25, own, false);
    EXPECT_EQ(loop.outcome, Outcome::bounce);
    EXPECT_STREQ(loop.status, "5.4.6");
}

// A smarthost on one of our addresses is a loop only on a port we listen on: a content filter
// at 127.0.0.1:10025 beside a relay on 127.0.0.1:25 is another program.
TEST(DecideAddress, SmarthostOnOurAddressIsALoopOnlyOnOurPort) {
    OwnAddresses own({ip("127.0.0.1")}, {});
    own.set_listen_ports({25});
    const Resolution filter = decide_address(ip("127.0.0.1"), 10025, own, true);
    EXPECT_EQ(filter.outcome, Outcome::ok);
    const Resolution loop = decide_address(ip("127.0.0.1"), 25, own, true);
    EXPECT_EQ(loop.outcome, Outcome::defer);
    EXPECT_STREQ(loop.status, "4.4.6");
}

}  // namespace
}  // namespace ringmail::dns
