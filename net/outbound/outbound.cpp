// outbound.cpp — see outbound.hpp.
#include "net/outbound/outbound.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "core/runtime/sim_hooks.hpp"

namespace ringmail {
namespace {

bool icontains(std::string_view hay, std::string_view needle) {
    if (needle.size() > hay.size()) return false;
    for (size_t i = 0; i + needle.size() <= hay.size(); i++) {
        size_t k = 0;
        while (k < needle.size() && tolower(static_cast<unsigned char>(hay[i + k])) ==
                                        tolower(static_cast<unsigned char>(needle[k])))
            k++;
        if (k == needle.size()) return true;
    }
    return false;
}

// Received: lines in the header section (RFC 5321 §6.3: too many means a loop).
uint32_t count_received(std::string_view body) {
    uint32_t n = 0;
    size_t pos = 0;
    while (pos < body.size()) {
        size_t eol = body.find('\n', pos);
        std::string_view line =
            body.substr(pos, eol == std::string_view::npos ? body.size() - pos : eol - pos);
        if (line.empty() || line == "\r") break;  // end of the header section
        if (line.size() >= 9 && icontains(line.substr(0, 9), "received:")) n++;
        if (eol == std::string_view::npos) break;
        pos = eol + 1;
    }
    return n;
}

sched::Outcome map_outcome(smtp::RcptOutcome o) {
    switch (o) {
        case smtp::RcptOutcome::delivered:
            return sched::Outcome::delivered;
        case smtp::RcptOutcome::bounced:
            return sched::Outcome::bounced;
        default:
            return sched::Outcome::deferred;
    }
}

}  // namespace

OutboundConnection::OutboundConnection(Destinations& owner, const smtp::ClientSettings& settings)
    : owner_(owner), session_(settings) {
    read_.done = &OutboundConnection::on_read;
    read_.user = this;
}

uint64_t OutboundConnection::now_ms() const {
    return owner_.engine().now_ms();
}

std::string OutboundConnection::remote() const {
    if (!dest_ || !started_) return "";
    const auto& hosts = dest_->resolution->hosts;
    if (host_ >= hosts.size() || addr_ >= hosts[host_].addresses.size()) return "";
    const auto& ip = hosts[host_].addresses[addr_];
    char text[64];
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(ip.bytes.data(), kMapped, 12) == 0)
        inet_ntop(AF_INET, &ip.bytes[12], text, sizeof text);
    else
        inet_ntop(AF_INET6, ip.bytes.data(), text, sizeof text);
    return hosts[host_].name + "[" + text + "]";
}

void OutboundConnection::open(Destinations::Destination* dest) {
    RM_ASSERT(state_ == State::free && stream_.state() == SocketStream::State::idle);
    dest_ = dest;
    started_ = retry_next_ = was_ready_ = idle_ = stopping_ = has_job_ = reading_ = false;
    sent_ = 0;
    error_.clear();
    fail_status_ = "4.4.1";
    clear_retry_ = false;
    const OutboundTls policy = owner_.tls_policy();
    want_tls_ = policy == OutboundTls::encrypt ||
                (policy == OutboundTls::may && now_ms() >= dest->tls_broken_until_ms);
    if (!next_target()) {
        error_ = "no address to connect to";
        state_ = State::closing;
        after_close();
        return;
    }
    connect();
}

bool OutboundConnection::next_target() {
    const auto& hosts = dest_->resolution->hosts;
    if (!started_) {
        started_ = true;
        host_ = addr_ = 0;
    } else if (++addr_ >= hosts[host_].addresses.size()) {
        host_++;
        addr_ = 0;
    }
    while (host_ < hosts.size() && hosts[host_].addresses.empty())
        host_++;
    return host_ < hosts.size();
}

void OutboundConnection::connect() {
    const auto& ip = dest_->resolution->hosts[host_].addresses[addr_];
    uint16_t port = dest_->port;
    peer_ = {};
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(ip.bytes.data(), kMapped, 12) == 0) {
        auto* a = reinterpret_cast<sockaddr_in*>(&peer_);
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        memcpy(&a->sin_addr, &ip.bytes[12], 4);
        peer_len_ = sizeof *a;
    } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&peer_);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        memcpy(&a->sin6_addr, ip.bytes.data(), 16);
        peer_len_ = sizeof *a;
    }
    state_ = State::connecting;
    tls_desc_.clear();
    const int fd = sys::socket(peer_.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_ = std::string("socket: ") + strerror(errno);
        retry_next_ = false;  // a local problem: no other host would fare better
        state_ = State::closing;
        after_close();
        return;
    }
    int one = 1;
    sys::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    stream_.open(owner_.engine().reactor(), fd);
    stream_.hold();  // the connect: a close waits for it
    io_uring_sqe* s = owner_.engine().reactor().sqe(connect_op_);
    io_uring_prep_connect(s, fd, reinterpret_cast<sockaddr*>(&peer_), peer_len_);
    deadline_ms_ = now_ms() + owner_.engine().config().timeout_connect_ms;
}

void OutboundConnection::on_connect(void* self, int res, uint32_t) {
    auto* c = static_cast<OutboundConnection*>(self);
    c->stream_.unhold();
    if (c->state_ == State::closing) {
        c->begin_close();
        return;
    }
    if (res < 0) {
        c->error_ = "connect to " + c->remote() + ": " + strerror(-res);
        c->retry_next_ = true;
        c->begin_close();
        return;
    }
    c->state_ = State::session;
    c->session_.start(c->want_tls_);
    c->stream_.start_reading();
    c->run_events();
}

// Replies arrived, a send completed or the handshake moved on.
// Re-armed at once, a receive that found no free buffer fails again at once: a busy loop while
// the core's buffers are all in use. The engine resumes it once a buffer has come back.
void OutboundConnection::stream_starved() {
    owner_.engine().recv_starved(&stream_, stream_.starved_listed());
}

void OutboundConnection::stream_ready() {
    if (state_ != State::session) return;
    feed_session();
    run_events();
}

// While the session awaits the handshake it discards (RFC 3207 §4.2): feed() takes all.
void OutboundConnection::feed_session() {
    while (state_ == State::session) {
        const std::string_view in = stream_.input();
        if (in.empty()) return;
        const size_t n = session_.feed(in);
        stream_.consume(n);
        if (n == 0) return;  // the session's output is full: after the send
    }
}

// The server hung up, the connection broke, or the server closed or broke the TLS session.
void OutboundConnection::stream_ended(StreamEnd why) {
    if (state_ != State::session) return;
    const tls::TlsSession* t = stream_.tls();
    if (session_.awaiting_handshake() || stream_.tls_handshaking()) {
        tls_failed(why == StreamEnd::tls_failed   ? t->error()
                   : why == StreamEnd::tls_closed ? std::string_view("closed by the server")
                                                  : "connection closed during the handshake");
        return;
    }
    if (why == StreamEnd::tls_failed && error_.empty())
        error_ = remote() + ": TLS: " + std::string(t->error());
    session_.peer_closed();
    run_events();
    if (state_ == State::session) begin_close();
}

// --- TLS ---------------------------------------------------------------------------------

// The server said 220 to STARTTLS. Whatever followed it in clear was dropped by the session;
// bytes the stream had not handed over yet are dropped by it (CVE-2011-0411 class injection).
void OutboundConnection::start_tls() {
    const tls::TlsContext* ctx = owner_.tls_client();
    RM_ASSERT(ctx != nullptr);  // STARTTLS is only wanted with a context
    const std::string& host = dest_->resolution->hosts[host_].name;
    // RFC 6066 §3: SNI carries a host name, never an address literal.
    in6_addr scratch;
    const bool literal = host.empty() || host[0] == '[' ||
                         inet_pton(AF_INET, host.c_str(), &scratch) == 1 ||
                         inet_pton(AF_INET6, host.c_str(), &scratch) == 1;
    const tls::TlsResumption* resume = owner_.tls_session(tls_host_key());
    if (!stream_.start_tls(*ctx, literal ? std::string_view() : std::string_view(host), resume))
        tls_failed("cannot create a TLS session (out of memory)");
}

// The key of this connection's host in Destination::tls_resume.
std::string OutboundConnection::tls_host_key() const {
    const auto& h = dest_->resolution->hosts[host_];
    return !h.name.empty() ? h.name : dns::format_ip(h.addresses[addr_]);
}

void OutboundConnection::stream_tls_established() {
    const tls::TlsSession& t = *stream_.tls();
    tls_desc_.assign(t.version());
    tls_desc_ += '/';
    tls_desc_ += t.cipher();
    LOG_DEBUG("delivery: TLS with %s: %s%s", remote().c_str(), tls_desc_.c_str(),
              t.resumed() ? " (resumed)" : "");
    session_.tls_started();  // EHLO again, inside TLS (RFC 3207 §4.2)
}

// The handshake failed, the peer closed during it, or it timed out.
void OutboundConnection::tls_failed(std::string_view why) {
    error_ = "TLS handshake with " + remote() + " failed: " + std::string(why);
    if (owner_.tls_policy() == OutboundTls::may) {
        // Opportunistic TLS (RFC 7435 §6): a broken TLS stack must not stop mail; clear text
        // is what the destination would have got without STARTTLS. Remembered, so that its
        // next connections do not fail the same way first.
        LOG_INFO("delivery: %s; retrying in clear", error_.c_str());
        dest_->tls_broken_until_ms = now_ms() + tls_broken_remember_ms;
        clear_retry_ = true;
    } else {
        LOG_INFO("delivery: %s", error_.c_str());
        fail_status_ = "4.7.5";  // RFC 3463: cryptographic failure
        retry_next_ = true;
    }
    begin_close();
}

// --outbound-tls=encrypt: the session reached `ready` in clear (no STARTTLS offered, or it was
// refused). Nothing may be sent; the next host may do better.
bool OutboundConnection::tls_required_missing() {
    if (owner_.tls_policy() != OutboundTls::encrypt || session_.tls_active()) return false;
    error_ = remote() +
             (session_.offers_starttls() ? " refused STARTTLS" : " does not offer STARTTLS") +
             "; TLS is required (--outbound-tls=encrypt)";
    fail_status_ = "4.7.5";
    retry_next_ = true;
    session_.quit();
    return true;
}

void OutboundConnection::flush_output() {
    if (state_ == State::session) stream_.flush();
}

// Poll the session's events until none is left, then send what it wrote.
void OutboundConnection::run_events() {
    for (;;) {
        if (state_ != State::session) return;
        push_body();
        smtp::ClientEvent ev = session_.next_event();
        if (ev == smtp::ClientEvent::none) break;
        switch (ev) {
            case smtp::ClientEvent::greeting_ok:
            case smtp::ClientEvent::body_wanted:
            case smtp::ClientEvent::none:
                break;
            case smtp::ClientEvent::starttls_ready:
                start_tls();
                break;
            case smtp::ClientEvent::greeting_failed:
                error_ = remote() +
                         " refused us at the greeting: " + std::string(session_.last_reply_text());
                retry_next_ = true;  // RFC 5321 §5.1: try the next MX host
                break;
            case smtp::ClientEvent::ready:
                if (!was_ready_ && tls_required_missing()) break;
                if (!was_ready_) {
                    was_ready_ = true;
                    dest_->queue.connection_ready();
                }
                take_job();
                break;
            case smtp::ClientEvent::transaction_done: {
                auto results = session_.results();
                std::string who = remote();
                // Recipients past the server's limit (RFC 5321 §4.5.3.1.10) were not tried:
                // they go into the next transaction at once, at the head of the destination's
                // queue, using no attempt and waiting no retry interval.
                JobMsg rest = job_;
                rest.rcpt_count = 0;
                for (size_t i = 0; i < results.size() && i < job_.rcpt_count; i++) {
                    if (results[i].outcome == smtp::RcptOutcome::deferred_too_many) {
                        rest.rcpts[rest.rcpt_count++] = job_.rcpts[i];
                        continue;
                    }
                    owner_.report(job_, job_.rcpts[i], map_outcome(results[i].outcome),
                                  results[i].text, who, tls_desc_);
                }
                // The session settles every recipient before the transaction ends, and the
                // server took at least one of them before saying "too many", so each round
                // is smaller than the last.
                if (rest.rcpt_count > 0) dest_->queue.push_front(rest);
                has_job_ = false;
                sent_++;
                owner_.stats_mut().transactions++;
                break;
            }
            case smtp::ClientEvent::closed:
            case smtp::ClientEvent::protocol_error:
                if (ev == smtp::ClientEvent::protocol_error && error_.empty())
                    error_ = remote() + ": " + std::string(session_.error());
                // The session never got ready (no greeting in time, a hang-up or garbage before
                // EHLO's reply): a failure of this host, as a refused connection is (RFC 5321
                // §5.1: try the next MX host; all failed: what waits is deferred). Without this,
                // a host that accepts and never greets held its queue forever, past its lifetime.
                if (!was_ready_) retry_next_ = true;
                flush_output();
                begin_close();
                return;
        }
    }
    flush_output();
    if (state_ != State::session) return;
    if (idle_) return;  // the idle deadline stands
    uint32_t t = session_.timeout_ms();
    if (t) {
        uint64_t scaled =
            uint64_t{t} * owner_.engine().config().outbound_timeout_scale_percent / 100;
        deadline_ms_ = now_ms() + std::max<uint64_t>(scaled, 1);
    }
}

void OutboundConnection::wake() {
    take_job();
    run_events();
}

// The session is ready: the next job of the destination, or idle, or QUIT.
void OutboundConnection::take_job() {
    idle_ = false;
    if (state_ != State::session || has_job_) return;
    if (stopping_ || owner_.engine().stopping()) {
        session_.quit();
        return;
    }
    if (!dest_->queue.next(sent_, &job_)) {
        if (sent_ >= dest_->queue.limits().messages_per_connection) {
            session_.quit();
        } else {
            go_idle();
        }
        return;
    }
    has_job_ = true;
    start_job();
}

void OutboundConnection::go_idle() {
    idle_ = true;
    dest_->idle.push_back(this);
    deadline_ms_ = now_ms() + owner_.engine().config().outbound_idle_ms;
}

void OutboundConnection::start_job() {
    rcpts_.clear();  // the addresses are this job's once its record is read
    reading_ = true;
    stream_.hold();  // the read refers to this connection: it is not reused before it ends
    read_.at = job_.at;
    owner_.reader().read(&read_);
}

void OutboundConnection::on_read(SpoolReader::Read* r, int err) {
    static_cast<OutboundConnection*>(r->user)->job_read(err);
}

void OutboundConnection::finish_job(std::string_view why, sched::Outcome all) {
    std::string who = remote();
    for (uint32_t i = 0; i < job_.rcpt_count; i++)
        owner_.report(job_, job_.rcpts[i], all, why, who);
    has_job_ = false;
}

void OutboundConnection::job_read(int err) {
    reading_ = false;
    stream_.unhold();
    if (state_ != State::session) {
        finish_job("4.4.2 connection lost before the message was sent", sched::Outcome::deferred);
        begin_close();
        return;
    }
    std::optional<spool::MessageView> m;
    if (!err) {
        size_t n = 0;
        auto rec = spool::decode_record(std::string_view(read_.buf.data(), read_.buf.size()),
                                        read_.salt, &n);
        if (rec) m = spool::decode_message(rec->payload);
        if (!m || m->id != job_.message_id) err = EBADMSG;
    }
    if (err) {
        LOG_ERROR("delivery: cannot read message %016llx from the spool: %s",
                  static_cast<unsigned long long>(job_.message_id), strerror(err));
        finish_job("4.3.0 spool read error", sched::Outcome::deferred);
        take_job();
        run_events();
        return;
    }
    msg_ = std::move(*m);
    uint32_t max = owner_.engine().config().received_headers_max;
    if (count_received(msg_.body) > max) {
        finish_job("5.4.6 too many Received headers: mail forwarding loop",
                   sched::Outcome::bounced);
        take_job();
        run_events();
        return;
    }
    rcpts_.clear();
    for (uint32_t i = 0; i < job_.rcpt_count; i++) {
        RM_ASSERT(job_.rcpts[i] < msg_.rcpts.size());
        rcpts_.push_back(msg_.rcpts[job_.rcpts[i]].address);
    }
    smtp::Transaction t;
    t.mail_from = msg_.mail_from;
    t.rcpts = rcpts_;
    t.size_bytes = msg_.body.size();
    t.needs_8bitmime = icontains(msg_.mail_params, "BODY=8BITMIME");
    t.needs_smtputf8 = icontains(msg_.mail_params, "SMTPUTF8");
    body_ = msg_.body;
    body_off_ = 0;
    body_ended_ = false;
    if (!session_.begin_transaction(t)) {
        finish_job("4.4.2 connection not ready", sched::Outcome::deferred);
        begin_close();
        return;
    }
    run_events();
}

void OutboundConnection::push_body() {
    if (!has_job_ || reading_) return;
    while (session_.wants_body()) {
        if (body_off_ < body_.size()) {
            size_t n = session_.body_chunk(body_.substr(body_off_));
            body_off_ += n;
            if (n == 0) return;  // output full: after the send
            continue;
        }
        if (body_ended_ || !session_.body_end()) return;
        body_ended_ = true;
    }
}

void OutboundConnection::tick(uint64_t now) {
    if (state_ == State::free || now < deadline_ms_) return;
    switch (state_) {
        case State::connecting:
            error_ = "connect to " + remote() + ": timed out";
            retry_next_ = true;
            begin_close();
            return;
        case State::session:
            if (idle_) {
                auto& idle = dest_->idle;
                idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
                idle_ = false;
                session_.quit();
            } else if (session_.awaiting_handshake()) {
                tls_failed("timed out");
                return;
            } else {
                error_ = remote() + ": timed out in phase " +
                         std::to_string(static_cast<int>(session_.phase()));
                session_.timeout();
            }
            deadline_ms_ = now + 10'000;  // QUIT gets this long; then the socket is closed
            run_events();
            return;
        case State::closing:
        case State::free:
            return;
    }
}

void OutboundConnection::stop() {
    stopping_ = true;
    if (state_ == State::session && idle_) {
        auto& idle = dest_->idle;
        idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
        idle_ = false;
        session_.quit();
        run_events();
    } else if (state_ == State::connecting) {
        begin_close();
    }
}

void OutboundConnection::begin_close() {
    if (state_ == State::free) return;
    if (idle_) {
        auto& idle = dest_->idle;
        idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
        idle_ = false;
    }
    state_ = State::closing;
    if (stream_.state() == SocketStream::State::idle) {  // no socket was made
        after_close();
        return;
    }
    stream_.close();  // released once the connect, recv, send and spool read are over
}

void OutboundConnection::stream_released() {
    const tls::TlsSession* t = stream_.tls();
    if (t != nullptr && t->handshake_done()) {
        // Read to the end, so a TLS 1.3 ticket (sent after the handshake) is in it by now.
        tls::TlsResumption r = t->resumption();
        if (!r.empty()) owner_.keep_tls_session(tls_host_key(), std::move(r));
    }
    after_close();
}

void OutboundConnection::after_close() {
    RM_ASSERT(stream_.state() == SocketStream::State::idle && !reading_);
    if (has_job_) finish_job("4.4.2 " + error_, sched::Outcome::deferred);
    if (clear_retry_ && !stopping_) {
        clear_retry_ = false;
        want_tls_ = false;
        connect();  // the same host again, in clear
        return;
    }
    if (retry_next_ && !stopping_ && !was_ready_ && next_target()) {
        retry_next_ = false;
        connect();
        return;
    }
    if (retry_next_ && !was_ready_) owner_.destination_failed(*dest_, error_, fail_status_);
    state_ = State::free;
    owner_.connection_closed(this);
}

}  // namespace ringmail
