// tool_source.cpp — see tool_source.hpp.
//
// One SourceWorker per thread owns a Reactor and its ClientConns. A ClientConn is the SMTP
// client of one connection: it keeps a queue of the replies it expects (in order, RFC 2920),
// and each reply moves the transaction on. Its socket is a SocketStream (net/socket/), as the
// relay's own connections: recv from provided buffers, one send at a time, TLS, close; the
// connect is held on it. Output is built in a buffer that keeps its capacity, with a second
// buffer for what is produced while a send is in flight (the first must not move).
//
// TLS (implicit, or after the 220 to STARTTLS): the stream encrypts out_/queued_ and hands the
// reply reader plaintext.
#include "bench/tool_source.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>

#include "bench/tool_common.hpp"
#include "bench/tool_histogram.hpp"
#include "bench/tool_sink_session.hpp"  // Counter
#include "core/base/log.hpp"
#include "core/runtime/reactor.hpp"
#include "net/socket/socket_stream.hpp"
#include "tls/auth.hpp"
#include "tls/tls_session.hpp"

namespace ringmail::bench {
namespace {

constexpr uint32_t kRingEntries = 4096;
constexpr uint32_t kRecvBufferBytes = 4096;
constexpr uint32_t kRecvBufferCount = 1024;
constexpr uint64_t kDefaultMessages = 10000;

enum class Phase : uint8_t { greeting, ehlo, mail, rcpt, data, eom, rset, quit, starttls, auth };
constexpr size_t kPhases = 10;
const char* const kPhaseNames[kPhases] = {"greeting", "ehlo", "mail", "rcpt",     "data",
                                          "eom",      "rset", "quit", "starttls", "auth"};

struct ThreadStats {
    // Read live by the progress line.
    Counter started, completed, connections;
    // Read after the thread has finished.
    uint64_t accepted = 0, failed = 0, aborted = 0, bytes_sent = 0;
    uint64_t connect_errors = 0, refused = 0, protocol_errors = 0;
    uint64_t handshakes = 0, resumed = 0, tls_failures = 0, auth_failures = 0;
    uint64_t first_start_ns = 0, last_done_ns = 0;
    uint64_t replies[kPhases][400] = {};
    Histogram eom_us, txn_us, handshake_us;
};

struct Msg {
    uint64_t seq;
    uint64_t intended_ns;
};

struct Txn {
    bool active = false;
    bool failed = false;
    uint64_t seq = 0;
    uint64_t intended_ns = 0;
    uint64_t eom_ns = 0;
    uint32_t rcpt_ok = 0;
    uint32_t rcpt_sent = 0;
};

class SourceWorker;

class ClientConn {
  public:
    ClientConn(SourceWorker& w, uint32_t recipients);
    void connect();
    void start_txn(const Msg& m);
    void quit();
    void resume_recv();
    bool in_idle = false;

  private:
    enum class State : uint8_t {
        connecting,
        handshake,  // TLS handshake (implicit, or after the 220 to STARTTLS)
        greeting,
        ehlo,
        ready,
        txn,
        quitting,
        closing,
        done
    };

    void expect(Phase p) {
        RM_ASSERT(qlen_ < q_.size());
        q_[(qhead_ + qlen_++) & (q_.size() - 1)] = p;
    }
    std::string& buf() { return stream_.sending() ? queued_ : out_; }
    void kick();
    void on_bytes(std::string_view in);
    void start_tls();
    void begin_tls();
    void tls_broken();
    void session_ready();
    void on_reply(int code);
    void next_work();
    void after_txn();
    void finish_txn(bool accepted, bool at_eom);
    void put_rcpt(std::string& b, uint64_t seq, uint32_t i);
    void put_envelope(std::string& b, Txn& t);
    void send_body();
    void send_simple(std::string_view cmd, Phase p);
    void begin_close();
    static void on_connect(void* self, int res, uint32_t flags);

    // The stream's events (SocketStream).
    friend struct StreamEvents<ClientConn>;
    std::string_view stream_output();
    void stream_output_sent(size_t n);
    void stream_ready();
    void stream_ended(StreamEnd why);
    void stream_released();
    void stream_starved();
    void stream_tls_established();

    SourceWorker& w_;
    const SourceConfig& cfg_;
    ThreadStats& st_;
    State state_ = State::done;
    bool dead_ = false;  // never reconnect (connect error, refused, protocol error)
    bool saw_pipelining_ = false;
    bool saw_starttls_ = false;
    bool pipelining_ = false;
    bool tls_due_ = false;  // the 220 to STARTTLS was read: TLS starts after this input
    uint32_t msgs_on_conn_ = 0;
    std::vector<Phase> q_;  // replies expected, in order
    size_t qhead_ = 0, qlen_ = 0;
    Txn cur_, next_;
    std::string out_, queued_;
    size_t out_off_ = 0;
    ReplyReader reader_;
    uint64_t handshake_start_ns_ = 0;
    char addr_[320];
    IoOp connect_op_{&ClientConn::on_connect, this};
    SocketStream stream_{StreamEvents<ClientConn>::table, this};
};

class SourceWorker {
  public:
    SourceWorker(const SourceConfig& config, const MessageFactory& messages, uint32_t index,
                 uint32_t threads, uint32_t sessions, uint64_t share, uint64_t base, uint64_t t0_ns,
                 ThreadStats& stats)
        : cfg(config),
          factory(messages),
          st(stats),
          index_(index),
          threads_(threads),
          sessions_(sessions),
          share_(share),
          base_(base),
          t0_ns_(t0_ns),
          stop_fd_(eventfd(0, EFD_CLOEXEC)) {
        messages_mode_ = !config.idle && (config.messages > 0 || config.duration_s <= 0);
        end_ns_ =
            config.duration_s > 0 ? t0_ns + static_cast<uint64_t>(config.duration_s * 1e9) : 0;
        if (config.rate > 0) interval_ns_ = 1e9 * threads / config.rate;
    }
    ~SourceWorker() { close(stop_fd_); }

    [[nodiscard]] bool run(const sockaddr_storage& target, socklen_t target_len,
                           std::string* error);
    void request_stop() {
        uint64_t one = 1;
        (void)!write(stop_fd_, &one, sizeof one);
    }

    [[nodiscard]] bool take(Msg* m);
    [[nodiscard]] bool exhausted() const;
    void add_idle(ClientConn* c) {
        c->in_idle = true;
        idle_.push_back(c);
    }
    void remove_idle(ClientConn* c) {
        if (!c->in_idle) return;
        c->in_idle = false;
        idle_.erase(std::find(idle_.begin(), idle_.end(), c));
    }
    void conn_done() { live_--; }
    void starved(ClientConn* c) { starved_.push_back(c); }
    Reactor& reactor() { return reactor_; }
    // Binds a new socket to the next --source-ip (round robin over all threads' connects).
    [[nodiscard]] bool bind_source(int fd);

    const SourceConfig& cfg;
    const MessageFactory& factory;
    ThreadStats& st;
    sockaddr_storage target{};
    socklen_t target_len = 0;
    const tls::TlsContext* tls_ctx = nullptr;  // set when cfg.tls != none
    std::string auth_line;                     // "AUTH PLAIN <base64>\r\n" when cfg.auth_user set

  private:
    void dispatch();
    void arm_timer();
    static void on_timer(void* self, int res, uint32_t flags);
    static void on_stop(void* self, int res, uint32_t flags);
    [[nodiscard]] uint64_t due_ns() const {
        return t0_ns_ + static_cast<uint64_t>(static_cast<double>(k_) * interval_ns_);
    }

    uint32_t index_, threads_, sessions_;
    uint64_t share_, base_, t0_ns_;
    uint64_t end_ns_ = 0;
    double interval_ns_ = 0;
    bool messages_mode_ = true;
    uint64_t k_ = 0;  // messages started by this thread
    uint64_t connects_ = 0;
    bool stop_ = false;
    bool timer_armed_ = false;
    uint32_t live_ = 0;
    int stop_fd_;
    uint64_t stop_buf_ = 0;
    __kernel_timespec timer_ts_{};
    std::vector<std::unique_ptr<ClientConn>> conns_;
    std::vector<ClientConn*> idle_;
    std::vector<ClientConn*> starved_;
    IoOp timer_op_{&SourceWorker::on_timer, this};
    IoOp stop_op_{&SourceWorker::on_stop, this};
    Reactor reactor_;  // last: destroyed first, so no operation outlives its connection
};

size_t pow2_at_least(size_t n) {
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

// --- connection --------------------------------------------------------------------------

ClientConn::ClientConn(SourceWorker& w, uint32_t recipients)
    : w_(w), cfg_(w.cfg), st_(w.st), q_(pow2_at_least(2 * (size_t{recipients} + 6))) {}

void ClientConn::connect() {
    const sockaddr_storage& t = w_.target;
    const int fd = socket(t.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || !w_.bind_source(fd)) {
        if (fd >= 0) close(fd);
        st_.connect_errors++;
        state_ = State::done;
        w_.conn_done();
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    state_ = State::connecting;
    saw_pipelining_ = saw_starttls_ = pipelining_ = tls_due_ = false;
    msgs_on_conn_ = 0;
    qhead_ = qlen_ = 0;
    cur_ = next_ = Txn{};
    out_.clear();
    queued_.clear();
    out_off_ = 0;
    reader_.reset();
    stream_.open(w_.reactor(), fd);
    stream_.hold();  // the connect: a close waits for it
    io_uring_prep_connect(w_.reactor().sqe(connect_op_), fd,
                          reinterpret_cast<const sockaddr*>(&w_.target), w_.target_len);
}

void ClientConn::on_connect(void* self, int res, uint32_t) {
    auto* c = static_cast<ClientConn*>(self);
    c->stream_.unhold();
    if (c->state_ == State::closing) return;
    if (res < 0) {
        c->st_.connect_errors++;
        c->dead_ = true;
        return c->begin_close();
    }
    c->stream_.start_reading();
    if (c->cfg_.tls == SourceTls::implicit) {
        c->start_tls();
        return c->begin_tls();
    }
    c->state_ = State::greeting;
    c->expect(Phase::greeting);
}

void ClientConn::resume_recv() {
    stream_.resume_recv();
}

void ClientConn::stream_starved() {
    w_.starved(this);
}

// Replies arrived, a send completed or the handshake moved on. The reader takes all it is
// given; TLS begins between two inputs (the stream drops what came in clear after the 220).
void ClientConn::stream_ready() {
    if (state_ == State::closing || state_ == State::done) return;
    for (;;) {
        const std::string_view in = stream_.input();
        if (in.empty()) break;
        on_bytes(in);
        if (!stream_.is_open()) return;
        stream_.consume(in.size());
        if (tls_due_) begin_tls();
    }
    kick();
}

void ClientConn::stream_ended(StreamEnd why) {
    if (why == StreamEnd::tls_failed) return tls_broken();
    begin_close();  // the server closed (or closed TLS), or the connection broke
}

std::string_view ClientConn::stream_output() {
    if (out_off_ == out_.size() && !queued_.empty()) {
        out_.clear();
        out_off_ = 0;
        std::swap(out_, queued_);
    }
    return std::string_view(out_).substr(out_off_);
}

void ClientConn::stream_output_sent(size_t n) {
    out_off_ += n;
    if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
        std::swap(out_, queued_);
    }
}

void ClientConn::on_bytes(std::string_view in) {
    bool ok = reader_.feed(in, [this](const ReplyReader::Line& l) {
        // After the 220 to STARTTLS, clear text from the server is an injection (RFC 3207 §5
        // warns of it): ignored, and the reader starts afresh inside TLS.
        if (state_ == State::closing || state_ == State::handshake) return;
        if (state_ == State::ehlo && l.text.size() >= 10 &&
            strncasecmp(l.text.data(), "PIPELINING", 10) == 0)
            saw_pipelining_ = true;
        if (state_ == State::ehlo && l.text.size() >= 8 &&
            strncasecmp(l.text.data(), "STARTTLS", 8) == 0)
            saw_starttls_ = true;
        if (l.last) on_reply(l.code);
    });
    if (!ok && state_ != State::closing) {
        st_.protocol_errors++;
        dead_ = true;
        begin_close();
    }
}

void ClientConn::on_reply(int code) {
    if (qlen_ == 0) {  // a reply nobody asked for
        st_.protocol_errors++;
        dead_ = true;
        return begin_close();
    }
    Phase ph = q_[qhead_];
    qhead_ = (qhead_ + 1) & (q_.size() - 1);
    qlen_--;
    st_.replies[static_cast<size_t>(ph)][code - 200]++;
    const bool ok = code / 100 == 2;
    const bool pipelined = pipelining_;
    switch (ph) {
        case Phase::greeting:
            if (!ok) {
                st_.refused++;
                dead_ = true;
                return begin_close();
            }
            state_ = State::ehlo;
            return send_simple("EHLO client.ringmail-bench.test\r\n", Phase::ehlo);
        case Phase::ehlo:
            if (!ok) return quit();
            if (cfg_.tls == SourceTls::starttls && stream_.tls() == nullptr) {
                if (!saw_starttls_) {
                    st_.tls_failures++;
                    dead_ = true;
                    return quit();
                }
                return send_simple("STARTTLS\r\n", Phase::starttls);
            }
            pipelining_ = cfg_.pipelining && saw_pipelining_;
            if (!cfg_.auth_user.empty()) return send_simple(w_.auth_line, Phase::auth);
            return session_ready();
        case Phase::starttls:
            if (code != 220) {
                st_.tls_failures++;
                dead_ = true;
                return quit();
            }
            return start_tls();
        case Phase::auth:
            if (code != 235) {
                st_.auth_failures++;
                dead_ = true;
                return quit();
            }
            return session_ready();
        case Phase::mail:
            if (!ok) cur_.failed = true;
            if (pipelined) return;
            if (!ok) return send_simple("RSET\r\n", Phase::rset);
            put_rcpt(buf(), cur_.seq, cur_.rcpt_sent++);
            expect(Phase::rcpt);
            return kick();
        case Phase::rcpt:
            if (ok) cur_.rcpt_ok++;
            if (pipelined) return;
            if (cur_.rcpt_sent < cfg_.recipients) {
                put_rcpt(buf(), cur_.seq, cur_.rcpt_sent++);
                expect(Phase::rcpt);
                return kick();
            }
            if (cur_.rcpt_ok > 0) return send_simple("DATA\r\n", Phase::data);
            cur_.failed = true;
            return send_simple("RSET\r\n", Phase::rset);
        case Phase::data:
            if (code == 354) return send_body();
            cur_.failed = true;
            return send_simple("RSET\r\n", Phase::rset);
        case Phase::eom:
            return finish_txn(ok, true);
        case Phase::rset:
            return finish_txn(false, false);
        case Phase::quit:
            return begin_close();
    }
}

void ClientConn::session_ready() {
    st_.connections.add();
    next_work();
}

// --- TLS ---------------------------------------------------------------------------------

// TLS is due; it begins once the input that said so was consumed (begin_tls).
void ClientConn::start_tls() {
    state_ = State::handshake;
    tls_due_ = true;
}

void ClientConn::begin_tls() {
    tls_due_ = false;
    if (!stream_.start_tls(*w_.tls_ctx)) return tls_broken();
    handshake_start_ns_ = now_ns();
    stream_.flush();  // the ClientHello
}

void ClientConn::stream_tls_established() {
    st_.handshakes++;
    if (stream_.tls()->resumed()) st_.resumed++;
    st_.handshake_us.record((now_ns() - handshake_start_ns_) / 1000);
    reader_.reset();
    saw_pipelining_ = saw_starttls_ = false;
    if (cfg_.tls == SourceTls::implicit) {
        state_ = State::greeting;
        expect(Phase::greeting);
        return;
    }
    // RFC 3207 §4.2: what the server said before TLS is forgotten; EHLO again.
    state_ = State::ehlo;
    send_simple("EHLO client.ringmail-bench.test\r\n", Phase::ehlo);
}

void ClientConn::tls_broken() {
    if (state_ == State::closing || state_ == State::done) return;
    st_.tls_failures++;
    dead_ = true;
    begin_close();
}

void ClientConn::finish_txn(bool accepted, bool at_eom) {
    uint64_t now = now_ns();
    st_.completed.add();
    if (accepted)
        st_.accepted++;
    else
        st_.failed++;
    if (at_eom) st_.eom_us.record((now - cur_.eom_ns) / 1000);
    st_.txn_us.record((now - cur_.intended_ns) / 1000);
    st_.last_done_ns = now;
    if (next_.active) {  // pipelined after this one's text: its replies are on their way
        cur_ = next_;
        next_ = Txn{};
        return;
    }
    cur_ = Txn{};
    after_txn();
}

void ClientConn::after_txn() {
    if (cfg_.messages_per_connection && msgs_on_conn_ >= cfg_.messages_per_connection)
        return quit();
    next_work();
}

void ClientConn::next_work() {
    Msg m;
    if (w_.take(&m)) return start_txn(m);
    if (w_.exhausted()) return quit();
    state_ = State::ready;
    w_.add_idle(this);
}

void ClientConn::put_rcpt(std::string& b, uint64_t seq, uint32_t i) {
    uint64_t n = seq * cfg_.recipients + i;
    int len;
    if (cfg_.domains > 1)
        len = snprintf(addr_, sizeof addr_, "r%llu@d%llu.%s", (unsigned long long)n,
                       (unsigned long long)(n % cfg_.domains), cfg_.to_domain.c_str());
    else
        len = snprintf(addr_, sizeof addr_, "r%llu@%s", (unsigned long long)n,
                       cfg_.to_domain.c_str());
    b.append("RCPT TO:<").append(addr_, static_cast<size_t>(len)).append(">\r\n");
}

void ClientConn::put_envelope(std::string& b, Txn& t) {
    b.append("MAIL FROM:<").append(cfg_.from).append(">\r\n");
    expect(Phase::mail);
    for (uint32_t i = 0; i < cfg_.recipients; i++) {
        put_rcpt(b, t.seq, i);
        expect(Phase::rcpt);
    }
    t.rcpt_sent = cfg_.recipients;
    b.append("DATA\r\n");
    expect(Phase::data);
}

void ClientConn::start_txn(const Msg& m) {
    state_ = State::txn;
    msgs_on_conn_++;
    cur_ = Txn{};
    cur_.active = true;
    cur_.seq = m.seq;
    cur_.intended_ns = m.intended_ns;
    std::string& b = buf();
    if (pipelining_) {
        put_envelope(b, cur_);
    } else {
        b.append("MAIL FROM:<").append(cfg_.from).append(">\r\n");
        expect(Phase::mail);
    }
    kick();
}

// RFC 2920 §3.1: the message text may be followed by the next transaction's commands.
void ClientConn::send_body() {
    std::string& b = buf();
    size_t before = b.size();
    put_rcpt(b, cur_.seq, 0);  // fills addr_ with the first recipient, for the To: header
    b.resize(before);
    w_.factory.append(b, cur_.seq, cfg_.sizes.pick(cur_.seq), cfg_.from, addr_);
    b.append(".\r\n");
    st_.bytes_sent += b.size() - before;
    expect(Phase::eom);
    cur_.eom_ns = now_ns();
    Msg m;
    if (pipelining_ &&
        (!cfg_.messages_per_connection || msgs_on_conn_ < cfg_.messages_per_connection) &&
        w_.take(&m)) {
        msgs_on_conn_++;
        next_ = Txn{};
        next_.active = true;
        next_.seq = m.seq;
        next_.intended_ns = m.intended_ns;
        put_envelope(b, next_);
    }
    kick();
}

void ClientConn::send_simple(std::string_view cmd, Phase p) {
    buf().append(cmd);
    expect(p);
    kick();
}

void ClientConn::quit() {
    state_ = State::quitting;
    send_simple("QUIT\r\n", Phase::quit);
}

void ClientConn::kick() {
    if (state_ == State::closing || state_ == State::done) return;
    stream_.flush();
}

void ClientConn::begin_close() {
    if (state_ == State::closing || state_ == State::done) return;
    if (cur_.active) st_.aborted++;
    if (next_.active) st_.aborted++;
    cur_ = next_ = Txn{};
    w_.remove_idle(this);
    state_ = State::closing;
    stream_.close();
}

void ClientConn::stream_released() {
    state_ = State::done;
    if (dead_ || w_.exhausted()) return w_.conn_done();
    connect();  // --messages-per-connection reached, or the server hung up: go on
}

// --- worker ------------------------------------------------------------------------------

bool SourceWorker::bind_source(int fd) {
    if (cfg.source_ips.empty()) return true;
    const std::string& ip =
        cfg.source_ips[(index_ + threads_ * connects_++) % cfg.source_ips.size()];
    // Leave the port to connect(): the 4-tuple, not the local port alone, must be unique.
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len;
    if (target.ss_family == AF_INET) {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
        v4->sin_family = AF_INET;
        if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) != 1) return false;
        len = sizeof *v4;
    } else {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
        v6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) != 1) return false;
        len = sizeof *v6;
    }
    return bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0;
}

bool SourceWorker::take(Msg* m) {
    if (stop_ || cfg.idle) return false;
    if (messages_mode_ && k_ >= share_) return false;
    uint64_t now = now_ns();
    uint64_t intended = now;
    if (interval_ns_ > 0) {
        intended = due_ns();
        if (intended > now || (end_ns_ && intended >= end_ns_)) return false;
    } else if (end_ns_ && now >= end_ns_) {
        return false;
    }
    m->seq = messages_mode_ ? base_ + k_ : k_ * threads_ + index_;
    m->intended_ns = intended;
    k_++;
    st.started.add();
    if (st.first_start_ns == 0) st.first_start_ns = intended;
    return true;
}

bool SourceWorker::exhausted() const {
    if (stop_) return true;
    if (messages_mode_ && k_ >= share_) return true;
    if (!end_ns_) return false;
    return interval_ns_ > 0 && !cfg.idle ? due_ns() >= end_ns_ : now_ns() >= end_ns_;
}

void SourceWorker::dispatch() {
    while (!idle_.empty()) {
        Msg m;
        if (!take(&m)) break;
        ClientConn* c = idle_.back();
        idle_.pop_back();
        c->in_idle = false;
        c->start_txn(m);
    }
    if (idle_.empty() || !exhausted()) return;
    std::vector<ClientConn*> done;
    done.swap(idle_);
    for (ClientConn* c : done) {
        c->in_idle = false;
        c->quit();
    }
}

// The next moment something is due: the next open-loop start, or the end of --duration.
void SourceWorker::arm_timer() {
    if (timer_armed_ || exhausted()) return;
    uint64_t at = 0;
    if (interval_ns_ > 0 && !cfg.idle) {
        // Open loop: only an idle session needs waking for the next start (with every session
        // busy a reply wakes the loop; arming a due time already past would spin it). The end
        // needs no timer: it is reached when the schedule's next start passes it.
        if (idle_.empty()) return;
        at = due_ns();
    } else {
        at = end_ns_;  // closed loop or --idle: not exhausted, so the end is still ahead
    }
    if (at == 0) return;
    timer_ts_.tv_sec = static_cast<long long>(at / 1000000000u);
    timer_ts_.tv_nsec = static_cast<long long>(at % 1000000000u);
    io_uring_prep_timeout(reactor_.sqe(timer_op_), &timer_ts_, 0, IORING_TIMEOUT_ABS);
    timer_armed_ = true;
}

void SourceWorker::on_timer(void* self, int, uint32_t) {
    static_cast<SourceWorker*>(self)->timer_armed_ = false;
}

void SourceWorker::on_stop(void* self, int, uint32_t) {
    static_cast<SourceWorker*>(self)->stop_ = true;
}

bool SourceWorker::run(const sockaddr_storage& t, socklen_t tlen, std::string* error) {
    target = t;
    target_len = tlen;
    if (!reactor_.init(kRingEntries, kRecvBufferBytes, kRecvBufferCount, error)) return false;
    io_uring_prep_read(reactor_.sqe(stop_op_), stop_fd_, &stop_buf_, sizeof stop_buf_, 0);
    conns_.reserve(sessions_);
    for (uint32_t i = 0; i < sessions_; i++)
        conns_.push_back(std::make_unique<ClientConn>(*this, cfg.recipients));
    live_ = sessions_;
    for (auto& c : conns_)
        c->connect();
    while (live_ > 0) {
        arm_timer();
        reactor_.run_once([](uint64_t, int) {});
        for (ClientConn* c : starved_)
            c->resume_recv();
        starved_.clear();
        dispatch();
    }
    // Leave nothing in flight on the ring but the stop read (the ring is torn down with it).
    return true;
}

// --- report ------------------------------------------------------------------------------

void latency_json(Json& j, std::string_view key, const Histogram& h) {
    auto ms = [](uint64_t us) { return double(us) / 1000.0; };
    j.begin(key)
        .num("count", h.count())
        .real("mean", h.mean() / 1000.0)
        .real("p50", ms(h.percentile(50)))
        .real("p90", ms(h.percentile(90)))
        .real("p99", ms(h.percentile(99)))
        .real("p99.9", ms(h.percentile(99.9)))
        .real("max", ms(h.max()))
        .end();
}

struct Totals {
    uint64_t started = 0, completed = 0, accepted = 0, failed = 0, aborted = 0, bytes = 0;
    uint64_t connections = 0, connect_errors = 0, refused = 0, protocol_errors = 0;
    uint64_t first_ns = UINT64_MAX, last_ns = 0;
    uint64_t replies[kPhases][400] = {};
    uint64_t handshakes = 0, resumed = 0, tls_failures = 0, auth_failures = 0;
    Histogram eom_us, txn_us, handshake_us;
};

void merge(Totals& t, const ThreadStats& s) {
    t.started += s.started.get();
    t.completed += s.completed.get();
    t.connections += s.connections.get();
    t.accepted += s.accepted;
    t.failed += s.failed;
    t.aborted += s.aborted;
    t.bytes += s.bytes_sent;
    t.connect_errors += s.connect_errors;
    t.refused += s.refused;
    t.protocol_errors += s.protocol_errors;
    if (s.first_start_ns) t.first_ns = std::min(t.first_ns, s.first_start_ns);
    t.last_ns = std::max(t.last_ns, s.last_done_ns);
    for (size_t p = 0; p < kPhases; p++)
        for (size_t c = 0; c < 400; c++)
            t.replies[p][c] += s.replies[p][c];
    t.eom_us.merge(s.eom_us);
    t.txn_us.merge(s.txn_us);
    t.handshakes += s.handshakes;
    t.resumed += s.resumed;
    t.tls_failures += s.tls_failures;
    t.auth_failures += s.auth_failures;
    t.handshake_us.merge(s.handshake_us);
}

const char* tls_name(SourceTls t) {
    switch (t) {
        case SourceTls::none:
            return "none";
        case SourceTls::starttls:
            return "starttls";
        case SourceTls::implicit:
            return "implicit";
    }
    return "?";
}

std::string report(const SourceConfig& cfg, const Totals& t, double wall_s, uint32_t threads) {
    double msg_s = t.last_ns > t.first_ns ? double(t.last_ns - t.first_ns) / 1e9 : wall_s;
    auto per = [](double n, double s) { return s > 0 ? n / s : 0.0; };
    Json j;
    j.begin()
        .str("tool", "source")
        .str("mode", cfg.idle       ? "idle"
                     : cfg.rate > 0 ? "open"
                                    : "closed")
        .real("rate_requested", cfg.rate)
        .num("threads", threads)
        .num("sessions", cfg.sessions)
        .boolean("pipelining", cfg.pipelining)
        .real("elapsed_s", wall_s)
        .real("message_time_s", msg_s)
        .num("messages_started", t.started)
        .num("messages_completed", t.completed)
        .num("messages_accepted", t.accepted)
        .num("messages_failed", t.failed)
        .num("messages_aborted", t.aborted)
        .real("messages_per_s", per(double(t.completed), msg_s))
        .real("accepted_per_s", per(double(t.accepted), msg_s))
        .num("bytes_sent", t.bytes)
        .real("mb_per_s", per(double(t.bytes) / 1e6, msg_s))
        .num("connections", t.connections)
        .real("connections_per_s", per(double(t.connections), wall_s))
        .num("connect_errors", t.connect_errors)
        .num("refused_at_greeting", t.refused)
        .num("protocol_errors", t.protocol_errors)
        .str("tls", tls_name(cfg.tls))
        .boolean("auth", !cfg.auth_user.empty())
        .num("tls_handshakes", t.handshakes)
        .num("tls_resumed", t.resumed)
        .real("handshakes_per_s", per(double(t.handshakes), wall_s))
        .num("tls_failures", t.tls_failures)
        .num("auth_failures", t.auth_failures);
    j.begin("replies");
    for (size_t p = 0; p < kPhases; p++) {
        j.begin(kPhaseNames[p]);
        for (size_t c = 0; c < 400; c++)
            if (t.replies[p][c]) j.num(std::to_string(c + 200), t.replies[p][c]);
        j.end();
    }
    j.end();
    latency_json(j, "latency_eom_ms", t.eom_us);
    latency_json(j, "latency_txn_ms", t.txn_us);
    latency_json(j, "latency_handshake_ms", t.handshake_us);
    j.end();
    if (cfg.json) return j.text() + "\n";

    std::string s;
    char b[512];
    auto line = [&](const char* fmt, auto... a) {
        snprintf(b, sizeof b, fmt, a...);
        s += b;
    };
    line("ringmail-bench source → %s:%u: %s loop, %u threads, %u sessions, pipelining %s\n",
         cfg.host.c_str(), unsigned(cfg.port), cfg.rate > 0 ? "open" : "closed", threads,
         cfg.sessions, cfg.pipelining ? "on" : "off");
    line("  messages     %llu started, %llu completed (%llu accepted, %llu failed, %llu aborted)\n",
         (unsigned long long)t.started, (unsigned long long)t.completed,
         (unsigned long long)t.accepted, (unsigned long long)t.failed,
         (unsigned long long)t.aborted);
    line("  throughput   %.0f msg/s, %.2f MB/s over %.3f s\n", per(double(t.completed), msg_s),
         per(double(t.bytes) / 1e6, msg_s), msg_s);
    line("  connections  %llu (%.0f/s), connect errors %llu, refused %llu, protocol errors %llu\n",
         (unsigned long long)t.connections, per(double(t.connections), wall_s),
         (unsigned long long)t.connect_errors, (unsigned long long)t.refused,
         (unsigned long long)t.protocol_errors);
    if (cfg.tls != SourceTls::none || !cfg.auth_user.empty()) {
        line(
            "  tls          %s: %llu handshakes (%.0f/s, %llu resumed), p50 %.3f p99 %.3f ms; "
            "%llu TLS failures, %llu AUTH failures\n",
            tls_name(cfg.tls), (unsigned long long)t.handshakes, per(double(t.handshakes), wall_s),
            (unsigned long long)t.resumed, t.handshake_us.percentile(50) / 1e3,
            t.handshake_us.percentile(99) / 1e3, (unsigned long long)t.tls_failures,
            (unsigned long long)t.auth_failures);
    }
    for (size_t p = 0; p < kPhases; p++) {
        std::string codes;
        for (size_t c = 0; c < 400; c++)
            if (t.replies[p][c])
                codes += " " + std::to_string(c + 200) + "×" + std::to_string(t.replies[p][c]);
        if (!codes.empty()) line("  %-12s%s\n", kPhaseNames[p], codes.c_str());
    }
    for (int k = 0; k < 2; k++) {
        const Histogram& h = k ? t.txn_us : t.eom_us;
        line("  %-12s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n",
             k ? "transaction" : "end-of-data", h.percentile(50) / 1e3, h.percentile(90) / 1e3,
             h.percentile(99) / 1e3, h.percentile(99.9) / 1e3, h.max() / 1e3);
    }
    return s;
}

[[nodiscard]] bool parse_target(const SourceConfig& cfg, sockaddr_storage* ss, socklen_t* len) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
    *ss = sockaddr_storage{};
    if (inet_pton(AF_INET, cfg.host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(cfg.port);
        *len = sizeof *v4;
        return true;
    }
    if (inet_pton(AF_INET6, cfg.host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(cfg.port);
        *len = sizeof *v6;
        return true;
    }
    return false;
}

}  // namespace

int run_source(const SourceConfig& in) {
    SourceConfig cfg = in;
    if (cfg.messages == 0 && cfg.duration_s <= 0 && !cfg.idle) cfg.messages = kDefaultMessages;
    sockaddr_storage target;
    socklen_t target_len;
    if (!parse_target(cfg, &target, &target_len)) {
        fprintf(stderr, "ringmail-bench source: %s is not an IP address\n", cfg.host.c_str());
        return 2;
    }
    uint32_t threads =
        cfg.threads ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
    threads = std::min(threads, std::max(1u, cfg.sessions));

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);  // a worker finished
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    std::unique_ptr<tls::TlsContext> tls_ctx;
    if (cfg.tls != SourceTls::none) {
        std::string err;
        tls_ctx = tls::TlsContext::client(tls::TlsClientSettings{}, &err);
        if (!tls_ctx) {
            fprintf(stderr, "ringmail-bench source: TLS: %s\n", err.c_str());
            return 2;
        }
    }
    std::string auth_line;
    if (!cfg.auth_user.empty()) {
        // RFC 4616 §2: [authzid] NUL authcid NUL passwd, as the initial response (RFC 4954 §4).
        std::string plain;
        plain.append(1, '\0').append(cfg.auth_user).append(1, '\0').append(cfg.auth_password);
        std::string b64(tls::base64_encoded_bytes(plain.size()), '\0');
        size_t n = tls::base64_encode(plain, b64.data(), b64.size());
        RM_ASSERT(n == b64.size());
        auth_line = "AUTH PLAIN " + b64 + "\r\n";
    }

    MessageFactory factory(cfg.sizes.max());
    std::vector<std::unique_ptr<ThreadStats>> stats;
    std::vector<std::unique_ptr<SourceWorker>> workers;
    const uint64_t t0 = now_ns();
    uint64_t base = 0;
    for (uint32_t t = 0; t < threads; t++) {
        uint32_t sessions = cfg.sessions / threads + (t < cfg.sessions % threads);
        uint64_t share = cfg.messages / threads + (t < cfg.messages % threads);
        stats.push_back(std::make_unique<ThreadStats>());
        workers.push_back(std::make_unique<SourceWorker>(cfg, factory, t, threads, sessions, share,
                                                         base, t0, *stats[t]));
        workers.back()->tls_ctx = tls_ctx.get();
        workers.back()->auth_line = auth_line;
        base += share;
    }
    std::atomic<uint32_t> finished{0};
    std::atomic<int> failed{0};
    pthread_t main_thread = pthread_self();
    std::vector<std::thread> pool;
    for (auto& w : workers) {
        pool.emplace_back([&, wp = w.get()] {
            std::string err;
            if (!wp->run(target, target_len, &err)) {
                fprintf(stderr, "ringmail-bench source: %s\n", err.c_str());
                failed.fetch_add(1);
            }
            tls::release_thread_caches();  // wolfSSL's per-thread ECC table, filled by handshakes
            finished.fetch_add(1);
            pthread_kill(main_thread, SIGUSR1);
        });
    }
    const bool progress = cfg.progress && isatty(STDERR_FILENO);
    bool stopping = false;
    while (finished.load() < threads) {
        timespec ts{1, 0};
        int sig = sigtimedwait(&set, nullptr, &ts);
        if ((sig == SIGINT || sig == SIGTERM) && !stopping) {
            stopping = true;  // finish what is in flight, then QUIT
            for (auto& w : workers)
                w->request_stop();
        }
        if (progress && sig < 0) {
            uint64_t started = 0, done = 0, conns = 0;
            for (auto& s : stats) {
                started += s->started.get();
                done += s->completed.get();
                conns += s->connections.get();
            }
            double el = double(now_ns() - t0) / 1e9;
            fprintf(stderr, "\r%7.1fs  started %llu  completed %llu (%.0f/s)  connections %llu   ",
                    el, (unsigned long long)started, (unsigned long long)done,
                    el > 0 ? double(done) / el : 0.0, (unsigned long long)conns);
        }
    }
    for (auto& th : pool)
        th.join();
    if (progress) fprintf(stderr, "\n");
    double wall = double(now_ns() - t0) / 1e9;
    auto totals = std::make_unique<Totals>();
    for (auto& s : stats)
        merge(*totals, *s);
    std::string out = report(cfg, *totals, wall, threads);
    fwrite(out.data(), 1, out.size(), stdout);
    fflush(stdout);
    return failed.load() ? 1 : 0;
}

}  // namespace ringmail::bench
