// destinations.hpp — one core's destination side of outbound delivery.
//
// The core that owns a destination (a hash of its MX host set) keeps one DestinationQueue per
// destination, whose jobs are carried out by outbound connections (outbound.hpp) — reused for
// the next job to the same destination, at most --max-connections-per-destination at once. A
// destination whose hosts all failed rests, and what waits for it is deferred. Each
// recipient's outcome goes to an OutcomeSink (the queue manager, core/queue/delivery.hpp,
// which records it or sends it back to the message's core); jobs come from the queue manager
// of this core (a JobSink the engine points here) or from another core's over the channel.
//
// All on the engine's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/base/config.hpp"
#include "core/queue/job.hpp"
#include "core/queue/scheduler.hpp"
#include "dns/node_resolver.hpp"
#include "net/smtp/smtp_client.hpp"
#include "spool/io/spool_reader.hpp"
#include "tls/tls_session.hpp"

namespace ringmail {

class Engine;
class OutboundConnection;

// --outbound-tls: STARTTLS to destinations (RFC 3207; Postfix smtp_tls_security_level).
enum class OutboundTls : uint8_t {
    none,     // never
    may,      // when offered; a failed handshake retries in clear and is remembered
    encrypt,  // never in clear: no STARTTLS or a failed handshake defers (4.7.5)
};

// How long a destination whose TLS handshake failed is served in clear under `may`.
inline constexpr uint64_t tls_broken_remember_ms = 3'600'000;

class Destinations {
  public:
    // resolver and reader: this core's (the queue manager's), which outlive this object.
    Destinations(Engine& engine, dns::NodeResolver& resolver, SpoolReader& reader,
                 OutcomeSink sink);
    ~Destinations();
    Destinations(const Destinations&) = delete;
    Destinations& operator=(const Destinations&) = delete;

    // On the engine thread before the loop: the TLS policy and this core's client context.
    [[nodiscard]] bool init(std::string* error);

    // From the engine (or this core's queue manager, through job_sink()).
    void handle_job(const JobMsg& j);
    [[nodiscard]] JobSink job_sink() { return JobSink{this, &Destinations::on_local_job}; }
    void on_tick(uint64_t now_ms);    // connection timeouts, rested destinations, the idle bound
    void stop();                      // graceful stop: connections QUIT, nothing new starts
    [[nodiscard]] bool idle() const;  // no outbound connection open

    // For outbound connections.
    [[nodiscard]] Engine& engine() { return engine_; }
    [[nodiscard]] SpoolReader& reader() { return reader_; }
    // tls: "TLSv1.3/TLS_AES_128_GCM_SHA256" when the transaction ran inside TLS, else "".
    void report(const JobMsg& job, uint16_t rcpt_index, sched::Outcome o, std::string_view text,
                std::string_view remote, std::string_view tls = {}) {
        sink_.fn(sink_.ctx, job, rcpt_index, o, text, remote, tls);
    }
    [[nodiscard]] OutboundTls tls_policy() const { return tls_policy_; }
    // This core's client TLS context; null under --outbound-tls=none.
    [[nodiscard]] const tls::TlsContext* tls_client() const { return tls_client_.get(); }
    // The last TLS session with a destination host (its name, or its address for a literal),
    // offered for resumption by the next connection to it (RFC 5077, RFC 8446 §2.2), as
    // Postfix's smtp_tls_session_cache does. At most kTlsSessionsMax per core.
    [[nodiscard]] const tls::TlsResumption* tls_session(const std::string& host) const {
        auto it = tls_sessions_.find(host);
        return it != tls_sessions_.end() && !it->second.empty() ? &it->second : nullptr;
    }
    void keep_tls_session(const std::string& host, tls::TlsResumption r);
    void connection_closed(OutboundConnection* c);

    struct Stats {
        uint64_t connections = 0;  // outbound connections opened
        uint64_t transactions = 0;
    };
    [[nodiscard]] const Stats& stats() const { return stats_; }
    Stats& stats_mut() { return stats_; }

    // A destination on its owning core: the MX host set of one or more domains.
    struct Destination {
        uint64_t hash = 0;
        dns::ResolutionPtr resolution;  // the hosts, in the order to try
        sched::BasicDestinationQueue<JobMsg> queue;
        std::vector<OutboundConnection*> idle;  // connected, waiting for the next job
        std::string last_error;                 // why the last connection failed
        std::string last_status = "4.4.1";      // its RFC 3463 code (4.7.5: TLS required)
        uint64_t tls_broken_until_ms = 0;       // `may`: handshake failed, clear until then
        uint16_t port = 25;
        explicit Destination(const sched::DestinationLimits& l) : queue(l) {}
        // Nothing waits for it, no connection points at it, it is not resting after a
        // failure: it may be forgotten (made again from DNS when mail comes for it). A
        // remembered TLS failure is lost with it: the next connection tries TLS again.
        [[nodiscard]] bool evictable(uint64_t now_ms) const {
            return queue.ready() == 0 && queue.connections() == 0 &&
                   queue.backoff_until_ms() <= now_ms;
        }
    };
    // A job waiting on this core for its destination's DNS answer.
    struct Waiting;

    [[nodiscard]] const sched::DestinationLimits& destination_limits() const { return limits_; }
    // Every host failed; status: the RFC 3463 code the deferrals carry.
    void destination_failed(Destination& d, std::string_view why,
                            std::string_view status = "4.4.1");
    void job_ready(Destination& d);  // work arrived, or a connection became free
    void queue_job(Destination& d, const JobMsg& j);

  private:
    static constexpr size_t kTlsSessionsMax = 4096;

    static void on_local_job(void* self, const JobMsg& j) {
        static_cast<Destinations*>(self)->handle_job(j);
    }
    static void on_dest_resolved(void* ctx, const dns::ResolutionPtr& r);
    void start_connections(Destination& d);

    Engine& engine_;
    const Config& config_;
    dns::NodeResolver& resolver_;
    SpoolReader& reader_;
    OutcomeSink sink_;
    bool stopping_ = false;

    sched::DestinationTable<Destination> destinations_;  // at most --max-destinations idle
    std::vector<std::unique_ptr<OutboundConnection>> conns_;
    std::vector<OutboundConnection*> conns_free_;
    uint32_t conns_open_ = 0;

    sched::DestinationLimits limits_;
    smtp::ClientSettings client_settings_;  // every outbound session refers to it
    OutboundTls tls_policy_ = OutboundTls::may;
    std::unique_ptr<tls::TlsContext> tls_client_;  // one per core (wolfSSL CTX)
    // After tls_client_: freed before it (and the library reference it holds).
    std::unordered_map<std::string, tls::TlsResumption> tls_sessions_;
    Stats stats_;
};

}  // namespace ringmail
