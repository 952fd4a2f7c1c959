// text_arena.hpp — one core's pool of fixed-size slots for the text of its cross-core messages.
//
// A channel entry (CoreMsg, core/engine/engine.hpp) stays small: text that travels with a
// message (a job's recipient indexes and domain, an outcome's reply) goes in a slot of the
// sender's arena and the message carries the slot's handle. The owning core allocates a slot
// and writes it before it pushes the message; the SPSC ring's release/acquire pair makes the
// bytes visible to the receiver, which reads them while it handles the message and then gives
// the handle back over the channel to the owner, who frees it on its own core.
//
// Guarantees:
//   - Only the owning core allocates and frees: the free list is that core's alone, no lock,
//     no atomic. A slot's bytes belong to one core at a time, handed over by the channels.
//   - Fixed at construction (slots × slot_bytes), no allocation afterwards. A full arena makes
//     alloc() return kNone: the caller keeps its message and tries again once handles come
//     back (back-pressure, as with a full channel), never a crash and never growth.
//   - Returning a handle that is not out (twice, or never allocated) is a broken invariant and
//     aborts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/base/assert.hpp"

namespace ringmail {

class TextArena {
  public:
    static constexpr uint32_t kNone = UINT32_MAX;

    TextArena(uint32_t slots, size_t slot_bytes)
        : slot_bytes_(slot_bytes),
          bytes_(std::make_unique<char[]>(size_t{slots} * slot_bytes)),
          out_(slots, false) {
        RM_ASSERT(slots > 0 && slots < kNone && slot_bytes > 0);
        free_.reserve(slots);
        // Lowest handles first: a lightly used arena touches few pages.
        for (uint32_t i = slots; i > 0; i--)
            free_.push_back(i - 1);
    }
    TextArena(const TextArena&) = delete;
    TextArena& operator=(const TextArena&) = delete;

    // A free slot, or kNone when every slot is out. Owning core only.
    [[nodiscard]] uint32_t alloc() noexcept {
        if (free_.empty()) return kNone;
        uint32_t h = free_.back();
        free_.pop_back();
        out_[h] = true;
        return h;
    }

    // A slot handed back by the core that read it (or never sent). Owning core only.
    void release(uint32_t h) {
        RM_ASSERT(h < out_.size() && out_[h]);
        out_[h] = false;
        free_.push_back(h);
    }

    // The slot's bytes: written by the owner before the message that names it is pushed, read
    // by the receiver after it popped that message and before it returns the handle.
    [[nodiscard]] char* data(uint32_t h) noexcept { return bytes_.get() + size_t{h} * slot_bytes_; }
    [[nodiscard]] const char* data(uint32_t h) const noexcept {
        return bytes_.get() + size_t{h} * slot_bytes_;
    }

    [[nodiscard]] size_t slot_bytes() const noexcept { return slot_bytes_; }
    [[nodiscard]] uint32_t capacity() const noexcept { return static_cast<uint32_t>(out_.size()); }
    [[nodiscard]] uint32_t in_use() const noexcept {
        return static_cast<uint32_t>(out_.size() - free_.size());
    }
    [[nodiscard]] bool full() const noexcept { return free_.empty(); }

  private:
    const size_t slot_bytes_;
    const std::unique_ptr<char[]> bytes_;
    std::vector<uint32_t> free_;
    std::vector<bool> out_;
};

}  // namespace ringmail
