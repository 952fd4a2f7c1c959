// destinations.cpp — see destinations.hpp.
#include "net/outbound/destinations.hpp"

#include <algorithm>

#include "core/engine/engine.hpp"
#include "net/outbound/outbound.hpp"

namespace ringmail {

struct Destinations::Waiting {
    JobMsg job;
    Destinations* owner;
};

Destinations::Destinations(Engine& engine, dns::NodeResolver& resolver, SpoolReader& reader,
                           OutcomeSink sink)
    : engine_(engine),
      config_(engine.config()),
      resolver_(resolver),
      reader_(reader),
      sink_(sink),
      destinations_(engine.config().destinations_max) {
    limits_.connections_max = config_.connections_per_destination_max;
    limits_.messages_per_connection = config_.messages_per_connection_max;
    limits_.rcpts_per_transaction = config_.recipients_per_transaction_max;
    client_settings_.helo_name = config_.hostname;
    client_settings_.max_recipients_per_transaction = config_.recipients_per_transaction_max;
}

Destinations::~Destinations() = default;

bool Destinations::init(std::string* error) {
    tls_policy_ = config_.outbound_tls == "none"      ? OutboundTls::none
                  : config_.outbound_tls == "encrypt" ? OutboundTls::encrypt
                                                      : OutboundTls::may;
    if (tls_policy_ != OutboundTls::none) {
        // Opportunistic, like Postfix's `may`/`encrypt`: encrypt, verify no certificate (RFC
        // 7435); MX hosts rarely present one that matches a name we could check without DANE.
        tls_client_ = tls::TlsContext::client(tls::TlsClientSettings{}, error);
        if (tls_client_ == nullptr) return false;
    }
    return true;
}

void Destinations::on_tick(uint64_t now) {
    for (auto& c : conns_)
        c->tick(now);
    // Destinations that rested after a failure may take their waiting jobs again.
    destinations_.for_each([&](Destination& d) {
        if (d.queue.ready() > 0) start_connections(d);
    });
    destinations_.trim(now);
}

void Destinations::stop() {
    stopping_ = true;
    for (auto& c : conns_)
        c->stop();
}

bool Destinations::idle() const {
    return conns_open_ == 0;
}

void Destinations::handle_job(const JobMsg& j) {
    Destination* d = destinations_.find(j.dest_hash);
    uint64_t now = engine_.now_ms();
    if (d != nullptr && (d->resolution->expires_ms == 0 || d->resolution->expires_ms > now)) {
        queue_job(*d, j);
        return;
    }
    // This core has not resolved the destination yet (or its answer expired): ask its own
    // resolver (its own cache), then queue the job.
    auto* w = new Waiting{j, this};
    std::string_view dom(j.domain, j.domain_len);
    if (!config_.smarthost.empty()) {
        auto sh = dns::parse_smarthost(config_.smarthost);
        resolver_.resolve_smarthost(*sh, now, &Destinations::on_dest_resolved, w);
    } else {
        resolver_.resolve_destination(dom, now, &Destinations::on_dest_resolved, w);
    }
}

void Destinations::on_dest_resolved(void* ctx, const dns::ResolutionPtr& r) {
    std::unique_ptr<Waiting> w(static_cast<Waiting*>(ctx));
    Destinations* self = w->owner;
    const JobMsg& j = w->job;
    if (r->outcome != dns::Outcome::ok) {
        std::string text = std::string(r->status) + " " + r->text;
        auto o =
            r->outcome == dns::Outcome::bounce ? sched::Outcome::bounced : sched::Outcome::deferred;
        for (uint16_t i = 0; i < j.rcpt_count; i++)
            self->report(j, j.rcpts[i], o, text, "");
        return;
    }
    Destination& d =
        self->destinations_.get_or_add(r->destination_hash, self->engine_.now_ms(), [&] {
            auto made = std::make_unique<Destination>(self->limits_);
            made->hash = r->destination_hash;
            return made;
        });
    d.resolution = r;
    d.port = self->config_.smarthost.empty() ? self->config_.delivery_port : r->port;
    self->queue_job(d, j);
}

// A destination that is resting after every host failed takes no job: it is deferred at
// once with the reason, and follows its own retry schedule (as Postfix does for a dead
// destination).
void Destinations::queue_job(Destination& d, const JobMsg& j) {
    if (d.queue.backoff_until_ms() > engine_.now_ms()) {
        std::string text = d.last_status + " " + d.last_error;
        for (uint16_t i = 0; i < j.rcpt_count; i++)
            report(j, j.rcpts[i], sched::Outcome::deferred, text, "");
        return;
    }
    d.queue.push(j);
    job_ready(d);
}

void Destinations::job_ready(Destination& d) {
    while (!d.idle.empty() && d.queue.ready() > 0) {
        OutboundConnection* c = d.idle.back();
        d.idle.pop_back();
        c->wake();
    }
    start_connections(d);
}

void Destinations::start_connections(Destination& d) {
    uint64_t now = engine_.now_ms();
    while (!stopping_ && d.queue.wants_connection(now) &&
           conns_open_ < config_.outbound_connections_max) {
        OutboundConnection* c;
        if (!conns_free_.empty()) {
            c = conns_free_.back();
            conns_free_.pop_back();
        } else {
            conns_.push_back(std::make_unique<OutboundConnection>(*this, client_settings_));
            c = conns_.back().get();
        }
        d.queue.connection_opened();
        conns_open_++;
        stats_.connections++;
        c->open(&d);
    }
}

void Destinations::destination_failed(Destination& d, std::string_view why,
                                      std::string_view status) {
    // Every host failed: the destination rests, and what waits for it is deferred (each
    // message then follows its own retry schedule).
    uint64_t now = engine_.now_ms();
    d.queue.back_off(now + std::min<uint64_t>(config_.retry_first_ms, 60'000));
    d.last_error = std::string(why);
    d.last_status = std::string(status);
    JobMsg j;
    std::string text = std::string(status) + " " + std::string(why);
    uint32_t sent = 0;
    while (d.queue.next(sent, &j)) {
        for (uint16_t i = 0; i < j.rcpt_count; i++)
            report(j, j.rcpts[i], sched::Outcome::deferred, text, "");
    }
}

void Destinations::connection_closed(OutboundConnection* c) {
    Destination& d = *c->destination();
    d.queue.connection_closed(c->was_ready());
    conns_open_--;
    conns_free_.push_back(c);
    if (d.queue.ready() > 0) start_connections(d);
}

void Destinations::keep_tls_session(const std::string& host, tls::TlsResumption r) {
    // Bounded: past the cap an arbitrary host's session goes (its next connection does a full
    // handshake, nothing worse).
    if (tls_sessions_.size() >= kTlsSessionsMax && !tls_sessions_.contains(host))
        tls_sessions_.erase(tls_sessions_.begin());
    tls_sessions_.insert_or_assign(host, std::move(r));
}

}  // namespace ringmail
