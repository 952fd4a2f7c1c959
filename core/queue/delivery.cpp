// delivery.cpp — see delivery.hpp: Delivery's construction and start, the DNS socket, the
// timer tick that drives every part, and the graceful stop. The parts live beside it, one job
// to a file: dispatch.cpp (due messages to jobs), outcome.cpp (outcomes and expiry),
// bounce.cpp (DSNs), segment_gc.cpp (segment deletion and compaction).
#include "core/queue/delivery.hpp"

#include <poll.h>

#include "core/engine/engine.hpp"
#include "core/queue/delivery_parts.hpp"
#include "core/runtime/sim_hooks.hpp"

namespace ringmail {

Delivery::Delivery(Engine& engine, uint32_t core)
    : engine_(engine),
      core_(core),
      config_(engine.config()),
      table_([&] {
          sched::RetryPolicy p;
          p.first_ms = engine.config().retry_first_ms;
          p.max_ms = engine.config().retry_max_ms;
          p.lifetime_ms = engine.config().queue_lifetime_ms;
          return p;
      }()),
      reader_(engine.reactor(), engine.config().spool_dir) {
    segdirs_.push_back(std::make_unique<SegDir>(
        SegDir{static_cast<uint16_t>(core),
               spool::SegmentTracker(static_cast<int64_t>(config_.compact_after_ms))}));
    rng_ = sys::random_u64();
}

Delivery::~Delivery() = default;

uint64_t Delivery::random() {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return rng_;
}

bool Delivery::init(std::string* error) {
    dns::DnsConfig dc;
    dc.servers = config_.dns_servers;
    std::vector<smtp::IpAddress> listen;
    for (const auto& l : config_.listen)
        if (auto ip = smtp::IpAddress::parse(l.host)) listen.push_back(*ip);
    dns::OwnAddresses own(listen, dns::OwnAddresses::interface_addresses());
    std::vector<uint16_t> ports;
    for (const auto& l : config_.listen)
        ports.push_back(l.port);
    own.set_listen_ports(ports);
    if (!resolver_.init(dc, std::move(own), error)) return false;
    resolver_ok_ = true;
    if (resolver_.fd() >= 0) arm_dns_poll();  // the simulator's resolver has no socket
    return true;
}

void Delivery::arm_dns_poll() {
    io_uring_sqe* s = engine_.reactor().sqe(dns_op_);
    io_uring_prep_poll_multishot(s, resolver_.fd(), POLLIN);
    dns_armed_ = true;
}

void Delivery::on_dns_readable(void* self, int res, uint32_t flags) {
    auto* d = static_cast<Delivery*>(self);
    if (!(flags & IORING_CQE_F_MORE)) d->dns_armed_ = false;
    if (res >= 0) d->resolver_.on_readable(d->engine_.now_ms());
    if (!d->dns_armed_ && !d->stopping_) d->arm_dns_poll();
}

// --- timers --------------------------------------------------------------------------------

void Delivery::on_tick() {
    uint64_t now = engine_.now_ms();
    if (resolver_ok_ && resolver_.next_deadline_ms() != 0 && now >= resolver_.next_deadline_ms())
        resolver_.on_timer(now);
    expire(now);
    retry_bounces(now);
    collect_segments();
    if (now >= next_compaction_ms_) {
        next_compaction_ms_ = now + 1000;
        compact();
        reader_.close_unlinked();
    }
    dispatch_due();
}

void Delivery::flush() {
    dispatch_due();
}

void Delivery::stop() {
    stopping_ = true;
}

}  // namespace ringmail
