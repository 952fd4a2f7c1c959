// dns_cache_test.cpp — the per-core destination cache on a fake clock: TTL expiry to the
// millisecond, the entry bound with oldest-first eviction, and replacement of a key.
#include <gtest/gtest.h>

#include "dns/cache.hpp"

namespace ringmail::dns {
namespace {

ResolutionPtr entry(uint64_t expires_ms, std::string text = "") {
    auto r = std::make_shared<Resolution>();
    r->outcome = Outcome::ok;
    r->expires_ms = expires_ms;
    r->text = std::move(text);
    return r;
}

TEST(DnsCache, EntryLivesUntilItsExpiry) {
    DnsCache cache(10);
    const ResolutionPtr r = entry(5000);
    cache.insert("example.com", r);
    EXPECT_EQ(cache.find("example.com", 0), r);
    EXPECT_EQ(cache.find("example.com", 4999), r);
    EXPECT_EQ(cache.find("example.com", 5000), nullptr);
    EXPECT_EQ(cache.size(), 0u);  // an expired entry is dropped when seen
    EXPECT_EQ(cache.find("example.com", 1), nullptr);
}

TEST(DnsCache, MissForUnknownKey) {
    DnsCache cache(10);
    cache.insert("a.example", entry(100));
    EXPECT_EQ(cache.find("b.example", 0), nullptr);
}

TEST(DnsCache, FullCacheEvictsTheOldestInsertion) {
    DnsCache cache(3);
    cache.insert("a", entry(1000));
    cache.insert("b", entry(1000));
    cache.insert("c", entry(1000));
    cache.insert("d", entry(1000));
    EXPECT_EQ(cache.size(), 3u);
    EXPECT_EQ(cache.find("a", 0), nullptr);
    EXPECT_NE(cache.find("b", 0), nullptr);
    EXPECT_NE(cache.find("c", 0), nullptr);
    EXPECT_NE(cache.find("d", 0), nullptr);
}

TEST(DnsCache, ReinsertReplacesAndRenewsAge) {
    DnsCache cache(3);
    cache.insert("a", entry(1000, "old"));
    cache.insert("b", entry(1000));
    cache.insert("c", entry(1000));
    cache.insert("a", entry(2000, "new"));
    EXPECT_EQ(cache.size(), 3u);
    EXPECT_EQ(cache.find("a", 1500)->text, "new");
    cache.insert("d", entry(3000));  // evicts b, now the oldest
    EXPECT_EQ(cache.find("b", 0), nullptr);
    EXPECT_NE(cache.find("a", 0), nullptr);
}

TEST(DnsCache, ManyInsertionsStayBounded) {
    DnsCache cache(100);
    for (int i = 0; i < 10000; ++i)
        cache.insert("d" + std::to_string(i), entry(1000));
    EXPECT_EQ(cache.size(), 100u);
    EXPECT_NE(cache.find("d9999", 0), nullptr);
    EXPECT_EQ(cache.find("d9899", 0), nullptr);
}

}  // namespace
}  // namespace ringmail::dns
