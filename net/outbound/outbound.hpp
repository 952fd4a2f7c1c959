// outbound.hpp — one outbound SMTP connection on a reactor: the driver of smtp::ClientSession.
//
// Owned by its core's Destinations (destinations.hpp) and bound to one destination. It connects to
// the destination's hosts in order (the next address, then the next MX host, on a connection
// failure or a 4xx/5xx greeting), then carries out that destination's jobs one after the other: it
// reads each message record from the spool through the ring (verified against its checksum), hands
// the envelope to the session, streams the text from the record (the session dot-stuffs or frames
// BDAT), and reports every recipient's outcome. Idle, it waits --outbound-idle-ms for the next
// job to the same destination, then says QUIT.
//
// Its socket is a SocketStream (net/socket/): receive, send, TLS and close; this driver only
// connects it (the connect is held on the stream, so a close waits for it).
//
// TLS (--outbound-tls, RFC 3207): the session sends STARTTLS when the server offers it and the
// policy wants it; on its 220 the stream runs a tls::TlsSession over the socket (ciphertext
// to and from the ring, plaintext to and from the session). Under `may` a failed handshake
// (error, close or timeout) reconnects to the same host in clear at once and marks the
// destination so that its connections skip TLS for tls_broken_remember_ms (as Postfix and
// KumoMTA do); under `encrypt` no STARTTLS or a failed handshake moves on to the next host, and
// when none is left every waiting recipient is deferred with 4.7.5 — never sent in clear.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/runtime/reactor.hpp"
#include "net/outbound/destinations.hpp"
#include "net/smtp/smtp_client.hpp"
#include "net/socket/socket_stream.hpp"
#include "spool/io/spool_reader.hpp"
#include "spool/record.hpp"
#include "tls/tls_session.hpp"

namespace ringmail {

class OutboundConnection {
  public:
    enum class State : uint8_t { free, connecting, session, closing };

    OutboundConnection(Destinations& owner, const smtp::ClientSettings& settings);
    OutboundConnection(const OutboundConnection&) = delete;
    OutboundConnection& operator=(const OutboundConnection&) = delete;

    void open(Destinations::Destination* dest);  // connects to the first host
    void wake();                                 // an idle connection: a job is waiting
    void tick(uint64_t now_ms);
    void stop();  // graceful stop: QUIT when idle, else after the job
    [[nodiscard]] State state() const { return state_; }
    [[nodiscard]] bool was_ready() const { return was_ready_; }
    [[nodiscard]] Destinations::Destination* destination() const { return dest_; }

  private:
    bool next_target();  // the next (host, address) to try; false when none is left
    void connect();
    void after_close();
    void begin_close();
    void flush_output();
    void run_events();
    void start_job();
    void job_read(int err);
    void push_body();
    void finish_job(std::string_view why_all, sched::Outcome all);
    void go_idle();
    void take_job();
    [[nodiscard]] std::string remote() const;
    // TLS.
    void start_tls();
    [[nodiscard]] std::string tls_host_key() const;
    void tls_failed(std::string_view why);
    void feed_session();
    [[nodiscard]] bool tls_required_missing();  // `encrypt` and the session is in clear
    [[nodiscard]] uint64_t now_ms() const;

    static void on_connect(void* self, int res, uint32_t flags);
    static void on_read(SpoolReader::Read* r, int err);

    // The stream's events (SocketStream).
    friend struct StreamEvents<OutboundConnection>;
    std::string_view stream_output() { return session_.output(); }
    void stream_output_sent(size_t n) { session_.output_sent(n); }
    void stream_ready();
    void stream_ended(StreamEnd why);
    void stream_released();
    void stream_starved();  // no buffer free: the engine resumes it once one is back
    void stream_tls_established();

    Destinations& owner_;
    smtp::ClientSession session_;
    Destinations::Destination* dest_ = nullptr;
    State state_ = State::free;
    uint32_t host_ = 0, addr_ = 0;  // the target being tried
    bool started_ = false;          // a first target was picked
    bool retry_next_ = false;       // this target failed: try the next one after closing
    bool was_ready_ = false;        // got to `ready` at least once
    bool idle_ = false;
    bool stopping_ = false;
    uint32_t sent_ = 0;
    uint64_t deadline_ms_ = 0;
    std::string error_;                  // the last failure, for the outcomes of waiting jobs
    const char* fail_status_ = "4.4.1";  // RFC 3463 code of error_ for the waiting jobs

    // TLS (the stream's session while STARTTLS is in force on this connection).
    bool want_tls_ = false;     // this connection sends STARTTLS when offered
    bool clear_retry_ = false;  // `may`: the handshake failed, reconnect in clear
    std::string tls_desc_;      // "TLSv1.3/TLS_AES_128_GCM_SHA256" for the delivery log

    sockaddr_storage peer_{};
    socklen_t peer_len_ = 0;

    // The job in progress.
    bool has_job_ = false;
    bool reading_ = false;
    JobMsg job_{};
    SpoolReader::Read read_;
    spool::MessageView msg_;
    std::vector<std::string_view> rcpts_;
    std::string_view body_;
    size_t body_off_ = 0;
    bool body_ended_ = false;

    IoOp connect_op_{&OutboundConnection::on_connect, this};
    SocketStream stream_{StreamEvents<OutboundConnection>::table, this};
};

}  // namespace ringmail
