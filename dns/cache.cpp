// cache.cpp — bounded TTL cache of destinations. See cache.hpp.
#include "dns/cache.hpp"

#include "core/base/assert.hpp"

namespace ringmail::dns {

DnsCache::DnsCache(uint32_t entries_max) : entries_max_(entries_max) {
    RM_ASSERT(entries_max_ > 0);
}

ResolutionPtr DnsCache::find(std::string_view key, uint64_t now_ms) {
    const auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    if (it->second->value->expires_ms <= now_ms) {
        erase(it->second);
        return nullptr;
    }
    return it->second->value;
}

void DnsCache::insert(std::string_view key, ResolutionPtr value) {
    RM_ASSERT(value != nullptr);
    if (const auto it = map_.find(key); it != map_.end()) erase(it->second);
    while (map_.size() >= entries_max_)
        erase(fifo_.begin());
    fifo_.push_back(Entry{std::string(key), std::move(value)});
    const auto last = std::prev(fifo_.end());
    const bool inserted = map_.emplace(std::string_view(last->key), last).second;
    RM_ASSERT(inserted);
    RM_ASSERT(map_.size() == fifo_.size());
}

void DnsCache::erase(Fifo::iterator it) {
    const size_t erased = map_.erase(std::string_view(it->key));
    RM_ASSERT(erased == 1);
    fifo_.erase(it);
}

}  // namespace ringmail::dns
