// tool_sink.cpp — see tool_sink.hpp. Each connection runs on a SocketStream (net/socket/), as
// the relay's own connections do: a multishot recv from the core's provided buffers, one send at
// a time from the session's output, received buffers kept (bounded) while the session cannot
// take them. --data-delay-ms is a ring timeout per connection (held on the stream), never a
// sleep.
#include "bench/tool_sink.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>

#include "bench/tool_common.hpp"
#include "core/base/log.hpp"
#include "core/runtime/reactor.hpp"
#include "net/inbound/listener.hpp"
#include "net/socket/socket_stream.hpp"

namespace ringmail::bench {
namespace {

constexpr uint32_t kRingEntries = 4096;
constexpr uint32_t kRecvBufferBytes = 16384;
constexpr uint32_t kRecvBufferCount = 1024;

class SinkWorker;

class SinkConn {
  public:
    SinkConn(SinkWorker& w, const SinkOptions& opt, SinkCounters& counters, SeqSet* seen)
        : worker_(w), session_(opt, counters, seen) {}

    void open(int fd, bool refuse, bool counted);
    void resume_recv() { stream_.resume_recv(); }
    [[nodiscard]] bool counted() const { return counted_; }

  private:
    void pump();
    void flush();
    void arm_timer();
    void begin_close();
    static void on_timer(void* self, int res, uint32_t flags);

    // The stream's events (SocketStream).
    friend struct StreamEvents<SinkConn>;
    std::string_view stream_output() { return session_.output(); }
    void stream_output_sent(size_t n) { session_.output_sent(n); }
    void stream_ready() { pump(); }
    void stream_ended(StreamEnd) { begin_close(); }  // the peer closed, or broke the connection
    void stream_released();
    void stream_starved();
    void stream_tls_established() {}

    SinkWorker& worker_;
    SinkSession session_;
    bool timer_armed_ = false;
    bool counted_ = false;  // holds a --max-sessions place
    __kernel_timespec timer_ts_{};
    IoOp timer_op_{&SinkConn::on_timer, this};
    SocketStream stream_{StreamEvents<SinkConn>::table, this};
};

class SinkWorker {
  public:
    SinkWorker(const SinkConfig& cfg, std::vector<int> listen_fds, SinkCounters& counters,
               SeqSet* seen, std::atomic<uint32_t>& active)
        : cfg_(cfg),
          listen_fds_(std::move(listen_fds)),
          counters_(counters),
          seen_(seen),
          active_(active),
          stop_fd_(eventfd(0, EFD_CLOEXEC)) {}
    ~SinkWorker() {
        for (int fd : listen_fds_)
            close(fd);
        close(stop_fd_);
    }

    [[nodiscard]] bool run(std::string* error);
    void request_stop() {
        uint64_t one = 1;
        (void)!write(stop_fd_, &one, sizeof one);
    }

    Reactor& reactor() { return reactor_; }
    [[nodiscard]] uint64_t now() const { return now_ms_; }
    // The loop's clock is read once per iteration, before it waits: a timer handler must
    // read it afresh or it would see the time before the wait it ended.
    void refresh_now() { now_ms_ = bench::now_ms(); }
    void released(SinkConn* c) {
        if (c->counted()) active_.fetch_sub(1, std::memory_order_relaxed);
        free_.push_back(c);
    }
    void starved(SinkConn* c) { starved_.push_back(c); }

  private:
    struct AcceptOp {
        IoOp op;
        SinkWorker* worker;
        size_t index;
    };
    void arm_accept(size_t i);
    static void on_accept(void* self, int res, uint32_t flags);
    void accepted(int fd);
    static void on_stop(void* self, int res, uint32_t flags);

    const SinkConfig& cfg_;
    std::vector<int> listen_fds_;
    SinkCounters& counters_;
    SeqSet* seen_;
    std::atomic<uint32_t>& active_;
    int stop_fd_;
    uint64_t stop_buf_ = 0;
    bool stopping_ = false;
    uint32_t accepts_armed_ = 0;
    uint64_t now_ms_ = 0;
    std::vector<std::unique_ptr<AcceptOp>> accepts_;
    std::vector<std::unique_ptr<SinkConn>> conns_;
    std::vector<SinkConn*> free_;
    std::vector<SinkConn*> starved_;
    IoOp stop_op_{&SinkWorker::on_stop, this};
    // Last: the ring goes first at destruction, so no operation outlives its connection.
    Reactor reactor_;
};

// --- connection --------------------------------------------------------------------------

void SinkConn::open(int fd, bool refuse, bool counted) {
    RM_ASSERT(stream_.state() == SocketStream::State::idle && !timer_armed_);
    stream_.open(worker_.reactor(), fd);
    counted_ = counted;
    session_.start(refuse);
    if (!refuse) stream_.start_reading();
    flush();
}

void SinkConn::stream_starved() {
    worker_.starved(this);
}

void SinkConn::pump() {
    if (!stream_.is_open()) return;
    while (!session_.wants_close()) {
        const std::string_view in = stream_.input();
        if (in.empty()) break;
        const size_t n = session_.feed(in, worker_.now());
        RM_ASSERT(n <= in.size());
        stream_.consume(n);
        if (n == 0) break;  // output full: continue after the send completes
    }
    if (session_.abort_now()) return begin_close();  // --drop-fraction: no reply at all
    if (session_.wants_close()) stream_.stop_reading();
    flush();
}

void SinkConn::flush() {
    if (!stream_.is_open()) return;
    if (!stream_.sending()) {
        session_.release_held(worker_.now());
        if (session_.output().empty()) {
            if (session_.held_until_ms() != 0) {
                arm_timer();
            } else if (session_.wants_close()) {
                stream_.finish();
                return;
            }
        }
    }
    stream_.flush();
}

void SinkConn::arm_timer() {
    if (timer_armed_) return;
    uint64_t until = session_.held_until_ms(), now = worker_.now();
    uint64_t wait_ms = until > now ? until - now : 0;
    timer_ts_.tv_sec = static_cast<long long>(wait_ms / 1000);
    timer_ts_.tv_nsec = static_cast<long long>(wait_ms % 1000) * 1000000;
    io_uring_prep_timeout(worker_.reactor().sqe(timer_op_), &timer_ts_, 0, 0);
    timer_armed_ = true;
    stream_.hold();  // the timer refers to this connection: not reused before it ends
}

void SinkConn::on_timer(void* self, int, uint32_t) {
    auto* c = static_cast<SinkConn*>(self);
    c->timer_armed_ = false;
    c->stream_.unhold();
    if (!c->stream_.is_open()) return;
    c->worker_.refresh_now();
    c->pump();  // releases the held replies and takes input the full output had stopped
}

void SinkConn::begin_close() {
    if (!stream_.is_open()) return;
    if (timer_armed_) {
        io_uring_sqe* s = worker_.reactor().sqe();
        io_uring_prep_timeout_remove(s, timer_op_.user_data(), 0);
        io_uring_sqe_set_data64(s, kTagIgnore);
    }
    stream_.close();
}

void SinkConn::stream_released() {
    worker_.released(this);
}

// --- worker ------------------------------------------------------------------------------

bool SinkWorker::run(std::string* error) {
    if (!reactor_.init(kRingEntries, kRecvBufferBytes, kRecvBufferCount, error)) return false;
    now_ms_ = bench::now_ms();
    for (size_t i = 0; i < listen_fds_.size(); i++) {
        accepts_.push_back(
            std::make_unique<AcceptOp>(AcceptOp{{&SinkWorker::on_accept, nullptr}, this, i}));
        accepts_.back()->op.owner = accepts_.back().get();
        arm_accept(i);
    }
    io_uring_prep_read(reactor_.sqe(stop_op_), stop_fd_, &stop_buf_, sizeof stop_buf_, 0);
    while (!stopping_) {
        reactor_.run_once([](uint64_t, int) {});
        now_ms_ = bench::now_ms();
        for (SinkConn* c : starved_)
            c->resume_recv();
        starved_.clear();
    }
    // A multishot accept holds its listening socket until the request ends, and a ring torn
    // down at exit ends it only later, in the kernel's own time: the port would still be taken
    // when the next sink (or a test) binds it. End the accepts here and wait for that.
    for (int fd : listen_fds_) {
        io_uring_sqe* s = reactor_.sqe();
        io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(s, kTagIgnore);
    }
    while (accepts_armed_ > 0)
        reactor_.run_once([](uint64_t, int) {});
    return true;
}

void SinkWorker::arm_accept(size_t i) {
    accepts_armed_++;
    io_uring_prep_multishot_accept(reactor_.sqe(accepts_[i]->op), listen_fds_[i], nullptr, nullptr,
                                   SOCK_CLOEXEC);
}

void SinkWorker::on_accept(void* self, int res, uint32_t flags) {
    auto* a = static_cast<AcceptOp*>(self);
    SinkWorker* w = a->worker;
    if (!(flags & IORING_CQE_F_MORE)) {
        w->accepts_armed_--;
        if (!w->stopping_) w->arm_accept(a->index);
    }
    if (res < 0) {
        if (res != -ECANCELED) LOG_WARN("accept: %s", strerror(-res));
        return;
    }
    w->accepted(res);
}

void SinkWorker::accepted(int fd) {
    SinkConn* c;
    if (!free_.empty()) {
        c = free_.back();
        free_.pop_back();
    } else {
        conns_.push_back(std::make_unique<SinkConn>(*this, cfg_.session, counters_, seen_));
        c = conns_.back().get();
    }
    bool refuse = false;
    bool counted = cfg_.max_sessions != 0;
    if (counted && active_.fetch_add(1, std::memory_order_relaxed) >= cfg_.max_sessions) {
        active_.fetch_sub(1, std::memory_order_relaxed);
        refuse = true;
        counted = false;
    }
    c->open(fd, refuse, counted);
}

void SinkWorker::on_stop(void* self, int, uint32_t) {
    static_cast<SinkWorker*>(self)->stopping_ = true;
}

// --- reports -----------------------------------------------------------------------------

struct Totals {
    uint64_t sessions = 0, refused_sessions = 0, messages = 0, recipients = 0, bytes = 0;
    uint64_t rcpt_temp_fail = 0, rcpt_perm_fail = 0, data_temp_fail = 0, data_perm_fail = 0;
    uint64_t no_valid_rcpt = 0, dropped = 0, verified = 0, corrupt = 0, missing_header = 0;
    uint64_t duplicates = 0;
};

Totals sum(const std::vector<std::unique_ptr<SinkCounters>>& all) {
    Totals t;
    for (const auto& c : all) {
        t.sessions += c->sessions.get();
        t.refused_sessions += c->refused_sessions.get();
        t.messages += c->messages.get();
        t.recipients += c->recipients.get();
        t.bytes += c->bytes.get();
        t.rcpt_temp_fail += c->rcpt_temp_fail.get();
        t.rcpt_perm_fail += c->rcpt_perm_fail.get();
        t.data_temp_fail += c->data_temp_fail.get();
        t.data_perm_fail += c->data_perm_fail.get();
        t.no_valid_rcpt += c->no_valid_rcpt.get();
        t.dropped += c->dropped.get();
        t.verified += c->verified.get();
        t.corrupt += c->corrupt.get();
        t.missing_header += c->missing_header.get();
        t.duplicates += c->duplicates.get();
    }
    return t;
}

std::string report_json(const Totals& t, double elapsed_s, bool verify, bool final) {
    Json j;
    j.begin()
        .str("tool", "sink")
        .boolean("final", final)
        .real("elapsed_s", elapsed_s)
        .num("sessions", t.sessions)
        .num("refused_sessions", t.refused_sessions)
        .num("messages", t.messages)
        .num("recipients", t.recipients)
        .num("bytes", t.bytes)
        .real("messages_per_s", elapsed_s > 0 ? double(t.messages) / elapsed_s : 0)
        .num("rcpt_temp_fail", t.rcpt_temp_fail)
        .num("rcpt_perm_fail", t.rcpt_perm_fail)
        .num("data_temp_fail", t.data_temp_fail)
        .num("data_perm_fail", t.data_perm_fail)
        .num("no_valid_rcpt", t.no_valid_rcpt)
        .num("dropped", t.dropped)
        .boolean("verify", verify)
        .num("verified", t.verified)
        .num("corrupt", t.corrupt)
        .num("missing_header", t.missing_header)
        .num("duplicates", t.duplicates)
        .end();
    return j.text() + "\n";
}

std::string report_human(const Totals& t, double elapsed_s, bool verify) {
    char b[2048];
    int n = snprintf(b, sizeof b,
                     "ringmail-bench sink: %.3f s\n"
                     "  sessions        %llu (refused %llu)\n"
                     "  messages        %llu (%.0f/s), recipients %llu, bytes %llu\n"
                     "  rcpt failures   temp %llu, perm %llu; no valid rcpt %llu\n"
                     "  data failures   temp %llu, perm %llu; dropped %llu\n",
                     elapsed_s, (unsigned long long)t.sessions,
                     (unsigned long long)t.refused_sessions, (unsigned long long)t.messages,
                     elapsed_s > 0 ? double(t.messages) / elapsed_s : 0.0,
                     (unsigned long long)t.recipients, (unsigned long long)t.bytes,
                     (unsigned long long)t.rcpt_temp_fail, (unsigned long long)t.rcpt_perm_fail,
                     (unsigned long long)t.no_valid_rcpt, (unsigned long long)t.data_temp_fail,
                     (unsigned long long)t.data_perm_fail, (unsigned long long)t.dropped);
    if (verify && n > 0 && size_t(n) < sizeof b)
        snprintf(b + n, sizeof b - size_t(n),
                 "  verify          ok %llu, corrupt %llu, no header %llu, duplicates %llu\n",
                 (unsigned long long)t.verified, (unsigned long long)t.corrupt,
                 (unsigned long long)t.missing_header, (unsigned long long)t.duplicates);
    return b;
}

std::string seqs_text(SeqSet& seen) {
    std::string out;
    char line[24];
    for (uint64_t seq : seen.members()) {
        int n = snprintf(line, sizeof line, "%llu\n", static_cast<unsigned long long>(seq));
        out.append(line, static_cast<size_t>(n));
    }
    return out;
}

}  // namespace

int run_sink(const SinkConfig& cfg) {
    uint32_t threads =
        cfg.threads ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
    std::string error;
    auto fds = net::open_listeners(cfg.listen, threads, &error);
    if (fds.empty()) {
        fprintf(stderr, "ringmail-bench sink: %s\n", error.c_str());
        return 1;
    }
    // Signals are taken by this thread only (sigtimedwait); the reactors never see them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    SeqSet seen(cfg.expect);
    std::atomic<uint32_t> active{0};
    std::vector<std::unique_ptr<SinkCounters>> counters;
    std::vector<std::unique_ptr<SinkWorker>> workers;
    for (uint32_t t = 0; t < threads; t++) {
        counters.push_back(std::make_unique<SinkCounters>());
        workers.push_back(
            std::make_unique<SinkWorker>(cfg, std::move(fds[t]), *counters[t], &seen, active));
    }
    std::atomic<int> failed{0};
    std::vector<std::thread> pool;
    for (auto& w : workers) {
        pool.emplace_back([&failed, &w] {
            std::string err;
            if (!w->run(&err)) {
                fprintf(stderr, "ringmail-bench sink: %s\n", err.c_str());
                failed.fetch_add(1);
            }
        });
    }
    std::string listening;
    for (const auto& a : cfg.listen)
        listening += " " + a.host + ":" + std::to_string(a.port);
    fprintf(stderr, "ringmail-bench sink: listening on%s (%u threads)\n", listening.c_str(),
            threads);

    const uint64_t t0 = now_ns();
    auto elapsed = [t0] { return double(now_ns() - t0) / 1e9; };
    if (!cfg.stats_file.empty())
        (void)write_file_atomic(cfg.stats_file, report_json({}, 0, cfg.session.verify, false));
    double interval = cfg.report_interval_s > 0 ? cfg.report_interval_s : 1.0;
    uint64_t last_messages = 0;
    double last_t = 0;
    for (;;) {
        timespec ts{static_cast<time_t>(interval),
                    static_cast<long>(std::fmod(interval, 1.0) * 1e9)};
        int sig = sigtimedwait(&set, nullptr, &ts);
        if (sig == SIGINT || sig == SIGTERM || failed.load() != 0) break;
        Totals t = sum(counters);
        double now = elapsed();
        if (cfg.report_interval_s > 0) {
            fprintf(stderr, "sink %8.1fs  messages %llu (%.0f/s)  sessions %llu  corrupt %llu\n",
                    now, (unsigned long long)t.messages,
                    double(t.messages - last_messages) / std::max(1e-9, now - last_t),
                    (unsigned long long)t.sessions, (unsigned long long)t.corrupt);
        }
        last_messages = t.messages;
        last_t = now;
        if (!cfg.stats_file.empty())
            (void)write_file_atomic(cfg.stats_file, report_json(t, now, cfg.session.verify, false));
        if (!cfg.seqs_file.empty()) (void)write_file_atomic(cfg.seqs_file, seqs_text(seen));
    }
    for (auto& w : workers)
        w->request_stop();
    for (auto& th : pool)
        th.join();
    Totals t = sum(counters);
    double secs = elapsed();
    std::string json = report_json(t, secs, cfg.session.verify, true);
    if (!cfg.stats_file.empty() && !write_file_atomic(cfg.stats_file, json))
        fprintf(stderr, "ringmail-bench sink: cannot write %s: %s\n", cfg.stats_file.c_str(),
                strerror(errno));
    if (!cfg.seqs_file.empty() && !write_file_atomic(cfg.seqs_file, seqs_text(seen)))
        fprintf(stderr, "ringmail-bench sink: cannot write %s: %s\n", cfg.seqs_file.c_str(),
                strerror(errno));
    std::string out = cfg.json ? json : report_human(t, secs, cfg.session.verify);
    fwrite(out.data(), 1, out.size(), stdout);
    fflush(stdout);
    return failed.load() ? 1 : 0;
}

}  // namespace ringmail::bench
