// smtp_relay_policy_test.cpp — IpAddress, Cidr and the no-open-relay decision
// (net/smtp/relay_policy.hpp), including every address trick an open-relay scanner tries.
#include <gtest/gtest.h>

#include "net/smtp/relay_policy.hpp"

namespace ringmail::smtp {
namespace {

IpAddress ip(std::string_view s) {
    const auto a = IpAddress::parse(s);
    EXPECT_TRUE(a.has_value()) << s;
    return a.value_or(IpAddress{});
}

Cidr cidr(std::string_view s) {
    const auto c = Cidr::parse(s);
    EXPECT_TRUE(c.has_value()) << s;
    return c.value_or(Cidr{});
}

TEST(SmtpRelayPolicy, Ipv4IsStoredAsMappedIpv6) {
    const IpAddress a = ip("192.0.2.1");
    const std::array<uint8_t, 16> want{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1};
    EXPECT_EQ(a.bytes, want);
    EXPECT_EQ(ip("::ffff:192.0.2.1"), a);
    EXPECT_EQ(ip("::1").bytes[15], 1);
}

TEST(SmtpRelayPolicy, BadAddressesDoNotParse) {
    for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "::g", "1.2.3.4 ", " ::1",
                            "1.2.3.4/8", "example.com"})
        EXPECT_FALSE(IpAddress::parse(bad).has_value()) << bad;
    EXPECT_FALSE(IpAddress::parse(std::string_view("1.2.3.4\0", 8)).has_value());
}

TEST(SmtpRelayPolicy, CidrV4) {
    const Cidr c = cidr("127.0.0.0/8");
    EXPECT_EQ(c.prefix_bits, 104);
    EXPECT_TRUE(c.contains(ip("127.1.2.3")));
    EXPECT_FALSE(c.contains(ip("128.0.0.1")));
    const Cidr odd = cidr("192.168.0.0/23");
    EXPECT_TRUE(odd.contains(ip("192.168.1.255")));
    EXPECT_FALSE(odd.contains(ip("192.168.2.0")));
    const Cidr host = cidr("10.1.2.3");
    EXPECT_EQ(host.prefix_bits, 128);
    EXPECT_TRUE(host.contains(ip("10.1.2.3")));
    EXPECT_FALSE(host.contains(ip("10.1.2.4")));
    EXPECT_TRUE(cidr("10.9.9.9/8").contains(ip("10.0.0.1")));  // host bits ignored
}

TEST(SmtpRelayPolicy, CidrV6AndMapped) {
    const Cidr c = cidr("2001:db8::/32");
    EXPECT_TRUE(c.contains(ip("2001:db8:1::1")));
    EXPECT_FALSE(c.contains(ip("2001:db9::1")));
    EXPECT_TRUE(cidr("::1/128").contains(ip("::1")));
    EXPECT_FALSE(cidr("::1/128").contains(ip("::2")));
    // v4-mapped both ways: a v4 network holds the mapped form and vice versa.
    EXPECT_TRUE(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.1.1")));
    EXPECT_TRUE(cidr("::ffff:10.0.0.0/104").contains(ip("10.5.5.5")));
    // 0.0.0.0/0 is every IPv4 address, not every address.
    EXPECT_TRUE(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    EXPECT_FALSE(cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
    EXPECT_TRUE(cidr("::/0").contains(ip("2001:db8::1")));
}

TEST(SmtpRelayPolicy, BadCidrsDoNotParse) {
    for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/abc", "10.0.0.0/-1",
                            "/8", "10.0.0.0/8/8", "10.0.0.0/0008"})
        EXPECT_FALSE(Cidr::parse(bad).has_value()) << bad;
}

TEST(SmtpRelayPolicy, NetworkTrusted) {
    const RelayPolicy p({cidr("127.0.0.0/8"), cidr("2001:db8::/32")}, {});
    EXPECT_TRUE(p.network_trusted(ip("127.0.0.1")));
    EXPECT_TRUE(p.network_trusted(ip("2001:db8::5")));
    EXPECT_FALSE(p.network_trusted(ip("192.0.2.1")));
    EXPECT_FALSE(RelayPolicy().network_trusted(ip("127.0.0.1")));
}

TEST(SmtpRelayPolicy, DomainsMatchExactlyOrOnLabelBoundaries) {
    const RelayPolicy p({}, {"Relay.Test", ".sub.test"});
    EXPECT_TRUE(p.domain_accepted("relay.test"));
    EXPECT_TRUE(p.domain_accepted("RELAY.TEST"));
    EXPECT_FALSE(p.domain_accepted("evilrelay.test"));
    EXPECT_FALSE(p.domain_accepted("a.relay.test"));  // no leading dot: exact only
    EXPECT_FALSE(p.domain_accepted("relay.test.evil.example"));
    EXPECT_TRUE(p.domain_accepted("a.sub.test"));
    EXPECT_TRUE(p.domain_accepted("x.y.SUB.test"));
    EXPECT_FALSE(p.domain_accepted("sub.test"));  // ".sub.test" means subdomains
    EXPECT_FALSE(p.domain_accepted("evilsub.test"));
    EXPECT_FALSE(p.domain_accepted(""));
}

class ScannerTricks : public ::testing::Test {
  protected:
    RelayPolicy p{{}, {"relay.test"}};
};

TEST_F(ScannerTricks, OwnDomainAcceptedInAnyCase) {
    EXPECT_TRUE(p.may_send(false, "victim", "relay.test"));
    EXPECT_TRUE(p.may_send(false, "VICTIM", "RELAY.TEST"));
}

TEST_F(ScannerTricks, RoutingOperatorsInLocalPartRefused) {
    EXPECT_FALSE(p.may_send(false, "victim%remote", "relay.test"));
    EXPECT_FALSE(p.may_send(false, "remote!victim", "relay.test"));
    EXPECT_FALSE(p.may_send(false, "\"victim@remote\"", "relay.test"));
    EXPECT_FALSE(p.may_send(false, "\"victim%remote\"", "relay.test"));
}

TEST_F(ScannerTricks, LiteralsTrailingDotsAndSuffixesRefused) {
    EXPECT_FALSE(p.may_send(false, "victim", "[127.0.0.1]"));
    EXPECT_FALSE(p.may_send(false, "victim", "relay.test."));
    EXPECT_FALSE(p.may_send(false, "victim", "relay.test.evil.example"));
    EXPECT_FALSE(p.may_send(false, "victim", "evilrelay.test"));
    EXPECT_FALSE(p.may_send(false, "victim", "remote.example"));
    EXPECT_FALSE(p.may_send(false, "victim", ""));
}

TEST_F(ScannerTricks, TrustedClientsRelayAnywhere) {
    EXPECT_TRUE(p.may_send(true, "victim", "remote.example"));
    EXPECT_TRUE(p.may_send(true, "victim", "[192.0.2.1]"));
}

}  // namespace
}  // namespace ringmail::smtp
