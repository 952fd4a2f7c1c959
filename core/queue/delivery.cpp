// delivery.cpp — see delivery.hpp: Delivery's construction and start, the DNS socket, the
// timer tick that drives every part, and the graceful stop. The parts live beside it, one job
// to a file: dispatch.cpp (due messages to jobs), outcome.cpp (outcomes and expiry),
// bounce.cpp (DSNs), segment_gc.cpp (segment deletion and compaction), destination.cpp (the
// destination side).
#include "core/queue/delivery.hpp"

#include <poll.h>

#include "core/engine/engine.hpp"
#include "core/queue/delivery_parts.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "net/outbound/outbound.hpp"

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
      reader_(engine.reactor(), engine.config().spool_dir),
      destinations_(engine.config().destinations_max) {
    segdirs_.push_back(std::make_unique<SegDir>(
        SegDir{static_cast<uint16_t>(core),
               spool::SegmentTracker(static_cast<int64_t>(config_.compact_after_ms))}));
    limits_.connections_max = config_.connections_per_destination_max;
    limits_.messages_per_connection = config_.messages_per_connection_max;
    limits_.rcpts_per_transaction = config_.recipients_per_transaction_max;
    client_settings_.helo_name = config_.hostname;
    client_settings_.max_recipients_per_transaction = config_.recipients_per_transaction_max;
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
    tls_policy_ = config_.outbound_tls == "none"      ? OutboundTls::none
                  : config_.outbound_tls == "encrypt" ? OutboundTls::encrypt
                                                      : OutboundTls::may;
    if (tls_policy_ != OutboundTls::none) {
        // Opportunistic, like Postfix's `may`/`encrypt`: encrypt, verify no certificate (RFC
        // 7435); MX hosts rarely present one that matches a name we could check without DANE.
        tls_client_ = tls::TlsContext::client(tls::TlsClientSettings{}, error);
        if (tls_client_ == nullptr) return false;
    }
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
    tick_connections(now);
    collect_segments();
    if (now >= next_compaction_ms_) {
        next_compaction_ms_ = now + 1000;
        compact();
        reader_.close_unlinked();
    }
    tick_destinations(now);
    dispatch_due();
}

void Delivery::flush() {
    dispatch_due();
}

void Delivery::stop() {
    stopping_ = true;
    for (auto& c : conns_)
        c->stop();
}

bool Delivery::idle() const {
    return conns_open_ == 0;
}

}  // namespace ringmail
