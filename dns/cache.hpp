// cache.hpp — one core's cache of resolved destinations, keyed by mail domain (or smarthost).
//
// Owned by dns::Resolver, on its reactor thread only (no locks). Guarantees: an entry is never
// returned at or after its expires_ms (the TTL, already capped by the resolver); the cache never
// holds more than entries_max entries — inserting into a full cache evicts the oldest insertion
// first (expired or not), so memory stays bounded whatever the traffic.
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dns/destination.hpp"

namespace ringmail::dns {

class DnsCache {
  public:
    explicit DnsCache(uint32_t entries_max);

    // The live entry for key, or null (an expired entry is dropped on the way).
    [[nodiscard]] ResolutionPtr find(std::string_view key, uint64_t now_ms);
    // Replaces any entry for key; value->expires_ms must be set.
    void insert(std::string_view key, ResolutionPtr value);
    [[nodiscard]] size_t size() const { return map_.size(); }
    [[nodiscard]] uint32_t entries_max() const { return entries_max_; }

  private:
    struct Entry {
        std::string key;
        ResolutionPtr value;
    };
    using Fifo = std::list<Entry>;
    void erase(Fifo::iterator it);

    uint32_t entries_max_;
    Fifo fifo_;                                                 // oldest insertion first
    std::unordered_map<std::string_view, Fifo::iterator> map_;  // views into fifo_ keys
};

}  // namespace ringmail::dns
