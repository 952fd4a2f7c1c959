// engine.cpp — see engine.hpp.
#include "core/engine/engine.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "core/base/log.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "net/inbound/connection.hpp"
#include "net/outbound/destinations.hpp"

namespace ringmail {
namespace {

using sys::monotonic_us;  // the simulator's virtual clock in sim builds

bool peer_address(int fd, smtp::IpAddress& out) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (sys::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
    out = smtp::IpAddress{};
    if (ss.ss_family == AF_INET) {
        out.bytes[10] = out.bytes[11] = 0xff;  // IPv4-mapped
        memcpy(&out.bytes[12], &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, 4);
        return true;
    }
    if (ss.ss_family == AF_INET6) {
        memcpy(out.bytes.data(), &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, 16);
        return true;
    }
    return false;
}

// Starting waits at most this long for the first spool segment (then serves anyway).
constexpr uint64_t kFirstSegmentWaitMs = 30'000;
// Shutting down waits this long for connections that are in a commit; then it exits anyway
// (anything not yet 250'd is simply not acknowledged).
constexpr uint64_t kStopGraceMs = 10'000;

const char kBusyReply[] = "421 4.7.0 Error: too many connections; try again later\r\n";

}  // namespace

Engine::Engine(uint32_t core, Shared& shared, EngineStart start)
    : core_(core),
      ncores_(static_cast<uint32_t>(shared.ring_fds.size())),
      shared_(shared),
      start_(std::move(start)),
      auth_throttle_(
          tls::AuthThrottleSettings{.failures_max = shared.config->auth_failures_max,
                                    .delay_ms = shared.config->auth_failure_delay_ms,
                                    .window_ms = shared.config->auth_failure_window_ms}) {
    outbox_.resize(ncores_);
    wake_.assign(ncores_, false);
    returns_.assign(ncores_, TextReturn{});
}

Engine::~Engine() = default;

int64_t Engine::unix_time_s() const {
    return sys::realtime_us() / 1000000;
}

void Engine::update_clock() {
    now_us_ = monotonic_us();
}

int Engine::run() {
    log::set_thread_tag(static_cast<int>(core_));
    started_us_ = sys::precise_us();
    const Config& cfg = config();
    std::string error;
    bool ok = reactor_.init(cfg.ring_entries, cfg.recv_buffer_bytes, cfg.recv_buffer_count, &error);
    if (ok) {
        shared_.ring_fds[core_] = reactor_.ring_fd();
        if (cfg.delivery && ncores_ > 1) {
            text_ = std::make_unique<TextArena>(limits::channel_text_slots,
                                                limits::channel_text_slot_bytes);
            shared_.text_arenas[core_] = text_.get();
        }
        committer_ = std::make_unique<Committer>(reactor_, cfg, core_, *start_.queue);
        ok = committer_->open(start_.first_segment_seq, start_.first_id_counter, &error);
    }
    if (ok && cfg.delivery) {
        update_clock();
        delivery_ = std::make_unique<Delivery>(*this, core_);
        ok = delivery_->init(&error);
        if (ok) {
            destinations_ = std::make_unique<Destinations>(
                *this, delivery_->resolver(), delivery_->reader(), delivery_->outcome_sink());
            ok = destinations_->init(&error);
            delivery_->set_local_jobs(destinations_->job_sink());
        }
        if (ok) {
            committer_->set_listener(&Engine::on_committed, this);
            committer_->set_segment_listener(&Engine::on_segment, this);
            for (const RecoveredDir& d : start_.segments)
                delivery_->add_recovered_segments(d.dir, d.segments);
        }
    }
    if (ok && shared_.auth_users != nullptr) {
        auth_worker_ = std::make_unique<tls::AuthWorker>(*shared_.auth_users);
        ok = auth_worker_->ok();
        if (!ok) error = "cannot start the AUTH worker thread";
    }
    if (ok) {
        // The first segment is made (zero-filled, synced) before the first client is served:
        // made meanwhile, it held the first messages' 250 for its ~100 ms. A failure (a full
        // disk) is not fatal: messages get 452 until a segment can be made.
        const uint64_t deadline_us = monotonic_us() + kFirstSegmentWaitMs * 1000;
        while (!committer_->segment_settled() && monotonic_us() < deadline_us)
            reactor_.run_once([](uint64_t, int) {});
    }
    if (!ok) {
        LOG_ERROR("%s", error.c_str());
        shared_.failed.fetch_add(1);
    }
    // Every core has published its ring fd (or failed) before anyone sends a wake.
    shared_.start_barrier->arrive_and_wait();
    if (shared_.failed.load() != 0) return 1;
    log::set_thread_buffered(true);  // from here the loop writes them once per iteration

    connections_max_ = std::max<uint32_t>(1, cfg.connections_max / ncores_);
    slots_.reserve(connections_max_);
    free_.reserve(connections_max_);
    open_.reserve(connections_max_);
    starved_.reserve(connections_max_);
    update_clock();
    for (size_t i = 0; i < start_.listen_fds.size(); i++) {
        accept_ops_.push_back(
            std::make_unique<AcceptOp>(AcceptOp{{&Engine::on_accept, nullptr}, this, i}));
        accept_ops_.back()->op.owner = accept_ops_.back().get();
        arm_accept(i);
    }
    arm_tick();
    arm_stop();
    if (auth_worker_) arm_auth();
    if (delivery_ && start_.recovered) {
        for (const auto& r : *start_.recovered)
            delivery_->add_recovered(r);
        start_.recovered->clear();
        start_.recovered->shrink_to_fit();
    }

    while (!finished()) {
        reactor_.run_once([this](uint64_t tag, int) {
            if (tag == kTagWake) drain_channels();
        });
        update_clock();
        drain_channels();  // cheap when empty; catches items whose wake is still in flight
        if (delivery_) delivery_->flush();
        committer_->flush(now_us_);
        flush_text_returns();
        retry_text_wait();
        flush_outbox();
        // Last: buffers recycled by this iteration's work count (published before the
        // receives re-armed here are submitted).
        if (!starved_.empty() && reactor_.buffers_recycled() != starved_published_)
            resume_starved();
        log::flush();  // this iteration's lines, in one write
        if (stopping_ && now_ms() > stop_deadline_ms_) {
            LOG_WARN("stop: %zu connections still open after %llu ms; exiting", open_.size(),
                     static_cast<unsigned long long>(kStopGraceMs));
            break;
        }
    }
    committer_->shutdown();
    tls::release_thread_caches();  // this thread's handshakes filled them
    log::set_thread_buffered(false);
    return 0;
}

// --- accepting --------------------------------------------------------------------------

void Engine::arm_accept(size_t i) {
    io_uring_sqe* s = reactor_.sqe(accept_ops_[i]->op);
    io_uring_prep_multishot_accept(s, start_.listen_fds[i], nullptr, nullptr, SOCK_CLOEXEC);
}

void Engine::on_accept(void* self, int res, uint32_t flags) {
    auto* a = static_cast<AcceptOp*>(self);
    a->engine->on_accept_result(a->index, res, flags);
}

void Engine::on_accept_result(size_t i, int res, uint32_t flags) {
    if (!(flags & IORING_CQE_F_MORE) && !stopping_) arm_accept(i);
    if (res < 0) {
        if (res != -ECANCELED) LOG_WARN("accept: %s", strerror(-res));
        return;
    }
    int fd = res;
    if (stopping_) {
        io_uring_sqe* s = reactor_.sqe();
        io_uring_prep_close(s, fd);
        io_uring_sqe_set_data64(s, kTagIgnore);
        return;
    }
    smtp::IpAddress ip;
    if (!peer_address(fd, ip)) {  // the peer is already gone
        io_uring_sqe* s = reactor_.sqe();
        io_uring_prep_close(s, fd);
        io_uring_sqe_set_data64(s, kTagIgnore);
        return;
    }
    stats_.accepted++;
    Connection* c = nullptr;
    if (!free_.empty()) {
        c = free_.back();
        free_.pop_back();
    } else if (slots_.size() < connections_max_) {
        slots_.push_back(std::make_unique<Connection>(*this, static_cast<uint32_t>(slots_.size())));
        c = slots_.back().get();
    } else {
        refuse_busy(fd);
        return;
    }
    c->list_index = static_cast<uint32_t>(open_.size());
    open_.push_back(c);
    const ListenerKind kind =
        i < start_.listen_kinds.size() ? start_.listen_kinds[i] : ListenerKind::plain;
    c->open(fd, ip, ++generation_, kind);
    request_permit(c);
}

// No slot left: a fixed reply and a close, linked, with nothing to track.
void Engine::refuse_busy(int fd) {
    stats_.refused_busy++;
    reactor_.reserve(2);  // send → close, hard-linked
    io_uring_sqe* s = reactor_.sqe();
    io_uring_prep_send(s, fd, kBusyReply, sizeof kBusyReply - 1, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, kTagIgnore);
    s->flags |= IOSQE_IO_HARDLINK;
    s = reactor_.sqe();
    io_uring_prep_close(s, fd);
    io_uring_sqe_set_data64(s, kTagIgnore);
}

void Engine::connection_released(Connection* c) {
    RM_ASSERT(c->state() == Connection::State::free);
    uint32_t i = c->list_index;
    RM_ASSERT(i < open_.size() && open_[i] == c);
    open_[i] = open_.back();
    open_[i]->list_index = i;
    open_.pop_back();
    free_.push_back(c);
}

// A receive that ended with ENOBUFS found the ring empty as published at the top of this
// iteration. Re-armed before a buffer comes back it fails again at once, and re-armed at every
// iteration while the ring stays empty it is a busy loop of failing receives. So starved
// connections wait until a buffer has been recycled since what was published when the last of
// them failed (run() checks after each iteration's work; the buffer is published before their
// receives are submitted), or for the tick: a receive run by a submission from inside a
// handler (a full submission queue) may have missed a buffer recycled just before, which
// counts as published by the time its completion is seen.
// Inbound connections and outbound ones alike (their slots and pools live as long as the
// engine); each stream is listed once until resumed (SocketStream::starved_listed), so the list
// holds at most one entry per stream.
void Engine::recv_starved(SocketStream* s, bool listed) {
    if (!listed) starved_.push_back(s);
    starved_published_ = reactor_.buffers_published();
}

void Engine::resume_starved() {
    for (SocketStream* s : starved_)
        s->resume_recv();
    starved_.clear();
}

// --- per-address permits, owned by one core per address --------------------------------

uint32_t Engine::owner_of(const smtp::IpAddress& ip) const {
    return static_cast<uint32_t>(IpHash{}(ip) % ncores_);
}

bool Engine::permit_local(const smtp::IpAddress& ip) {
    uint32_t& n = per_ip_[ip];
    if (n >= config().connections_per_ip_max) {
        if (n == 0) per_ip_.erase(ip);
        return false;
    }
    n++;
    return true;
}

void Engine::request_permit(Connection* c) {
    uint32_t owner = owner_of(c->ip());
    if (owner == core_) {
        bool ok = permit_local(c->ip());
        if (!ok) stats_.refused_per_ip++;
        c->permit(ok);
        return;
    }
    CoreMsg m;
    m.kind = CoreMsg::Kind::ip_acquire;
    m.from = static_cast<uint16_t>(core_);
    m.permit = PermitMsg{c->slot(), c->generation(), c->ip()};
    send_to(owner, m);
}

void Engine::release_permit(const smtp::IpAddress& ip) {
    uint32_t owner = owner_of(ip);
    if (owner != core_) {
        CoreMsg m;
        m.kind = CoreMsg::Kind::ip_release;
        m.from = static_cast<uint16_t>(core_);
        m.permit = PermitMsg{0, 0, ip};
        send_to(owner, m);
        return;
    }
    auto it = per_ip_.find(ip);
    RM_ASSERT(it != per_ip_.end() && it->second > 0);
    if (--it->second == 0) per_ip_.erase(it);
}

void Engine::handle(const CoreMsg& m) {
    switch (m.kind) {
        case CoreMsg::Kind::ip_acquire: {
            bool ok = permit_local(m.permit.ip);
            CoreMsg r;
            r.kind = ok ? CoreMsg::Kind::ip_grant : CoreMsg::Kind::ip_deny;
            r.from = static_cast<uint16_t>(core_);
            r.permit = m.permit;
            send_to(m.from, r);
            return;
        }
        case CoreMsg::Kind::ip_release:
            release_permit(m.permit.ip);
            return;
        case CoreMsg::Kind::auth_admit: {
            RM_ASSERT(owner_of(m.auth.ip) == core_);
            CoreMsg r = m;
            r.kind = CoreMsg::Kind::auth_admitted;
            r.from = static_cast<uint16_t>(core_);
            r.auth.admission = auth_throttle_.admit(m.auth.ip.bytes, now_ms());
            send_to(m.from, r);
            return;
        }
        case CoreMsg::Kind::auth_admitted:
            on_auth_admitted(m);
            return;
        case CoreMsg::Kind::auth_end:
            RM_ASSERT(owner_of(m.auth.ip) == core_);
            auth_end(m.auth.ip, m.auth.end);
            return;
        case CoreMsg::Kind::job: {
            JobMsg j = job_from(m);
            give_back(m.from, m.job.text);
            if (destinations_) destinations_->handle_job(j);
            return;
        }
        case CoreMsg::Kind::outcome:
            outcome_from(m);
            give_back(m.from, m.outcome.text);
            return;
        case CoreMsg::Kind::text_return:
            RM_ASSERT(text_ && m.text_return.count <= TextReturn::kMax);
            for (uint32_t i = 0; i < m.text_return.count; i++)
                text_->release(m.text_return.handles[i]);
            return;
        case CoreMsg::Kind::ip_grant:
        case CoreMsg::Kind::ip_deny: {
            RM_ASSERT(m.permit.slot < slots_.size());
            Connection* c = slots_[m.permit.slot].get();
            bool ok = m.kind == CoreMsg::Kind::ip_grant;
            if (c->generation() != m.permit.generation ||
                c->state() != Connection::State::awaiting_permit) {
                // The connection gave up waiting (a stop); hand back what was granted.
                if (ok) release_permit(m.permit.ip);
                return;
            }
            if (!ok) stats_.refused_per_ip++;
            c->permit(ok);
            return;
        }
    }
}

// Messages to another core go on its channel; when the channel is full they wait in a local
// outbox and are retried every iteration. One wake per target per iteration. Bounded: permit
// and AUTH messages by the connection counts (a connection of ours has at most one of each
// outstanding, and each answer we owe is for a connection of the target's); delivery jobs and
// outcomes by the active queue, and delivery takes no new due work while the outbox holds
// --channel-capacity messages (outbox_backlogged).
void Engine::send_to(uint32_t core, const CoreMsg& m) {
    if (!outbox_[core].empty() || !shared_.mesh->ring(core_, core).try_push(m)) {
        stats_.channel_full++;
        outbox_[core].push_back(m);
        outbox_count_++;
        return;
    }
    wake_[core] = true;
}

void Engine::flush_outbox() {
    for (uint32_t t = 0; t < ncores_; t++) {
        auto& box = outbox_[t];
        size_t i = 0;
        while (i < box.size() && shared_.mesh->ring(core_, t).try_push(box[i]))
            i++;
        if (i) {
            box.erase(box.begin(), box.begin() + static_cast<long>(i));
            outbox_count_ -= i;
            wake_[t] = true;
        }
        if (!wake_[t]) continue;
        wake_[t] = false;
        io_uring_sqe* s = reactor_.sqe();
        prep_wake(s, shared_.ring_fds[t], kTagWake);  // completes here only on failure
    }
}

void Engine::drain_channels() {
    CoreMsg batch[64];
    for (uint32_t from = 0; from < ncores_; from++) {
        if (from == core_) continue;
        auto& ring = shared_.mesh->ring(from, core_);
        size_t n;
        while ((n = ring.pop_batch(batch, 64)) > 0)
            for (size_t i = 0; i < n; i++)
                handle(batch[i]);
    }
}

// --- timers and stopping ---------------------------------------------------------------

void Engine::arm_tick() {
    io_uring_sqe* s = reactor_.sqe(tick_op_);
    io_uring_prep_timeout(s, &tick_ts_, 0, 0);
}

void Engine::on_tick_op(void* self, int, uint32_t) {
    auto* e = static_cast<Engine*>(self);
    e->on_tick();
    // Re-armed while anything is left: the committer too may wait for a tick (statuses to
    // store again after a failed commit). Without it, a stop with such statuses and no
    // connection open waited forever (the simulator's seed 324).
    if (!e->finished()) e->arm_tick();
}

bool Engine::finished() const {
    return stopping_ && open_.empty() && committer_->quiescent() &&
           (!destinations_ || destinations_->idle());
}

void Engine::on_tick() {
    ticks_.store(ticks_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    update_clock();
    uint64_t now = now_ms();
    if (delivery_) delivery_->on_tick();
    if (destinations_) destinations_->on_tick(now);
    publish_metrics();
    resume_starved();
    // Connections may leave open_ during tick(); walk a snapshot by index from the end.
    for (size_t i = open_.size(); i-- > 0;) {
        if (i < open_.size()) open_[i]->tick(now);
    }
}

void Engine::publish_metrics() {
    if (!shared_.metrics) return;
    CoreMetrics& m = shared_.metrics[core_];
    m.set(Metric::connections_accepted, stats_.accepted);
    m.set(Metric::connections_refused_busy, stats_.refused_busy);
    m.set(Metric::connections_refused_per_ip, stats_.refused_per_ip);
    m.set(Metric::connections_open, open_.size());
    const CommitStats& c = committer_->stats();
    m.set(Metric::messages_accepted, c.messages);
    m.set(Metric::message_bytes_accepted, c.bytes);
    m.set(Metric::messages_refused_storage, c.failed);
    m.set(Metric::commits, c.commits);
    m.set(Metric::status_records, c.statuses);
    m.set(Metric::segments_created, c.segments);
    m.commit_latency.publish(c.commit_latency);
    m.eod_to_reply.publish(stats_.eod_to_reply);
    if (delivery_) {
        const Delivery::Stats& d = delivery_->stats();
        m.set(Metric::segments_deleted, d.segments_deleted);
        m.set(Metric::messages_compacted, d.compacted);
        m.set(Metric::queue_messages, delivery_->queued());
        m.set(Metric::queue_active, delivery_->active());
        m.set(Metric::delivered, d.delivered);
        m.set(Metric::deferred, d.deferred);
        m.set(Metric::bounced, d.bounced);
        m.set(Metric::expired, d.expired);
    }
    if (destinations_) {
        m.set(Metric::outbound_connections, destinations_->stats().connections);
        m.set(Metric::outbound_transactions, destinations_->stats().transactions);
    }
    const uint64_t wait = reactor_.wait_us();
    const uint64_t life = sys::precise_us() - started_us_;
    m.set(Metric::reactor_wait_us, wait);
    m.set(Metric::reactor_busy_us, life > wait ? life - wait : 0);
}

void Engine::arm_stop() {
    io_uring_sqe* s = reactor_.sqe(stop_op_);
    io_uring_prep_read(s, start_.stop_fd, &stop_buf_, sizeof stop_buf_, 0);
}

void Engine::on_stop_op(void* self, int res, uint32_t) {
    auto* e = static_cast<Engine*>(self);
    if (res < 0 && res != -ECANCELED) {
        e->arm_stop();
        return;
    }
    e->begin_stop();
}

void Engine::begin_stop() {
    if (stopping_) return;
    stopping_ = true;
    stop_deadline_ms_ = now_ms() + kStopGraceMs;
    LOG_INFO("stopping: %zu connections open", open_.size());
    // Closing the listening sockets ends their multishot accepts.
    for (int fd : start_.listen_fds) {
        io_uring_sqe* s = reactor_.sqe();
        io_uring_prep_cancel_fd(s, fd, 0);
        io_uring_sqe_set_data64(s, kTagIgnore);
    }
    for (size_t i = open_.size(); i-- > 0;) {
        if (i < open_.size()) open_[i]->shutdown();
    }
    if (delivery_) delivery_->stop();
    if (destinations_) destinations_->stop();
}

// --- AUTH checks ---------------------------------------------------------------------------

// A token names the connection slot and its generation, so a result for a connection that
// has gone (and whose slot may serve another client now) is recognised and dropped.
bool Engine::auth_submit(const Connection& c, std::string_view user, std::string_view password) {
    if (!auth_worker_) return false;
    const uint64_t token = (uint64_t{c.generation()} << 32) | c.slot();
    return auth_worker_->submit(token, user, password);
}

bool Engine::auth_admit(const Connection& c, tls::AuthAdmission& out) {
    const uint32_t owner = owner_of(c.ip());
    if (owner == core_) {
        out = auth_throttle_.admit(c.ip().bytes, now_ms());
        return true;
    }
    CoreMsg m;
    m.kind = CoreMsg::Kind::auth_admit;
    m.from = static_cast<uint16_t>(core_);
    m.auth = AuthMsg{c.slot(), c.generation(), c.ip(), {}, tls::AuthEnd::abandoned};
    send_to(owner, m);
    return false;
}

void Engine::auth_end(const smtp::IpAddress& ip, tls::AuthEnd end) {
    const uint32_t owner = owner_of(ip);
    if (owner == core_) {
        auth_throttle_.finish(ip.bytes, end, now_ms());
        return;
    }
    CoreMsg m;
    m.kind = CoreMsg::Kind::auth_end;
    m.from = static_cast<uint16_t>(core_);
    m.auth = AuthMsg{0, 0, ip, {}, end};
    send_to(owner, m);
}

// The owner's answer. The slot and generation find the connection that asked; if it has
// gone or stopped waiting (the client hung up, a timeout, a stop), an admitted attempt is
// handed back, as an unused permit is.
void Engine::on_auth_admitted(const CoreMsg& m) {
    RM_ASSERT(m.auth.slot < slots_.size());
    Connection* c = slots_[m.auth.slot].get();
    if (c->generation() != m.auth.generation || !c->awaiting_auth_admission()) {
        if (!m.auth.admission.refused) auth_end(m.auth.ip, tls::AuthEnd::abandoned);
        return;
    }
    c->auth_admitted(m.auth.admission);
}

// The worker signals its eventfd; a multishot poll on it wakes this core.
void Engine::arm_auth() {
    io_uring_sqe* s = reactor_.sqe(auth_op_);
    io_uring_prep_poll_multishot(s, auth_worker_->completion_fd(), POLLIN);
}

void Engine::on_auth_op(void* self, int res, uint32_t flags) {
    auto* e = static_cast<Engine*>(self);
    if (res < 0 && res != -EINTR && res != -EAGAIN) {
        LOG_ERROR("poll of the AUTH worker: %s", strerror(-res));
        return;
    }
    // Reset the counter before draining: a result pushed after the drain comes with a new
    // signal, hence a new poll completion.
    uint64_t count = 0;
    ssize_t r = read(e->auth_worker_->completion_fd(), &count, sizeof count);
    (void)r;  // EAGAIN: already reset
    tls::AuthResult batch[16];
    size_t n;
    while ((n = e->auth_worker_->poll(batch, 16)) > 0) {
        for (size_t i = 0; i < n; i++) {
            const auto slot = static_cast<uint32_t>(batch[i].token);
            const auto generation = static_cast<uint32_t>(batch[i].token >> 32);
            if (slot >= e->slots_.size()) continue;
            Connection* c = e->slots_[slot].get();
            if (c->generation() == generation) c->auth_checked(batch[i].ok);
        }
    }
    if (!(flags & IORING_CQE_F_MORE)) e->arm_auth();
}

// --- cross-core jobs and outcomes: their text in this core's TextArena ------------------------

// In order: once one waits for a slot, the ones after it wait too.
void Engine::send_job(uint32_t core, const JobMsg& j) {
    if (text_wait_.empty() && try_send_job(core, j)) return;
    stats_.text_full++;
    text_wait_.push_back(TextWaiting{core, true, j, {}});
    outbox_count_++;
}

void Engine::send_outcome(uint32_t core, const OutcomeMsg& o) {
    if (text_wait_.empty() && try_send_outcome(core, o)) return;
    stats_.text_full++;
    text_wait_.push_back(TextWaiting{core, false, {}, o});
    outbox_count_++;
}

bool Engine::try_send_job(uint32_t core, const JobMsg& j) {
    RM_ASSERT(text_ != nullptr && j.rcpt_count <= limits::job_rcpts_max);
    const uint32_t h = text_->alloc();
    if (h == TextArena::kNone) return false;
    char* p = text_->data(h);
    const size_t rcpt_bytes = j.rcpt_count * sizeof(uint16_t);
    memcpy(p, j.rcpts, rcpt_bytes);
    memcpy(p + rcpt_bytes, j.domain, j.domain_len);
    CoreMsg m;
    m.kind = CoreMsg::Kind::job;
    m.from = static_cast<uint16_t>(core_);
    m.job =
        JobWire{j.ref, j.message_id, j.dest_hash,  j.at.segment_seq, j.at.offset, j.at.record_bytes,
                h,     j.at.dir,     j.rcpt_count, j.domain_len};
    send_to(core, m);
    return true;
}

bool Engine::try_send_outcome(uint32_t core, const OutcomeMsg& o) {
    RM_ASSERT(text_ != nullptr);
    const uint32_t h = text_->alloc();
    if (h == TextArena::kNone) return false;
    char* p = text_->data(h);
    memcpy(p, o.text, o.text_len);
    memcpy(p + o.text_len, o.remote, o.remote_len);
    memcpy(p + o.text_len + o.remote_len, o.tls, o.tls_len);
    CoreMsg m;
    m.kind = CoreMsg::Kind::outcome;
    m.from = static_cast<uint16_t>(core_);
    m.outcome =
        OutcomeWire{o.ref, o.message_id, h, o.rcpt, o.text_len, o.outcome, o.remote_len, o.tls_len};
    send_to(core, m);
    return true;
}

void Engine::retry_text_wait() {
    size_t i = 0;
    for (; i < text_wait_.size(); i++) {
        const TextWaiting& w = text_wait_[i];
        if (!(w.is_job ? try_send_job(w.core, w.job) : try_send_outcome(w.core, w.outcome))) break;
    }
    if (i == 0) return;
    text_wait_.erase(text_wait_.begin(), text_wait_.begin() + static_cast<long>(i));
    outbox_count_ -= i;
}

// The sender's slot is read here, between popping its message and giving its handle back.
JobMsg Engine::job_from(const CoreMsg& m) const {
    const JobWire& w = m.job;
    RM_ASSERT(m.from < shared_.text_arenas.size() && shared_.text_arenas[m.from] != nullptr);
    RM_ASSERT(w.rcpt_count <= limits::job_rcpts_max && w.domain_len <= sizeof(JobMsg::domain));
    const char* p = shared_.text_arenas[m.from]->data(w.text);
    JobMsg j{};
    j.ref = w.ref;
    j.message_id = w.message_id;
    j.dest_hash = w.dest_hash;
    j.at = RecordLocation{w.dir, w.segment_seq, w.offset, w.record_bytes};
    j.origin = m.from;
    j.rcpt_count = w.rcpt_count;
    const size_t rcpt_bytes = w.rcpt_count * sizeof(uint16_t);
    memcpy(j.rcpts, p, rcpt_bytes);
    j.domain_len = w.domain_len;
    memcpy(j.domain, p + rcpt_bytes, w.domain_len);
    return j;
}

void Engine::outcome_from(const CoreMsg& m) {
    if (!delivery_) return;
    const OutcomeWire& w = m.outcome;
    RM_ASSERT(m.from < shared_.text_arenas.size() && shared_.text_arenas[m.from] != nullptr);
    const char* p = shared_.text_arenas[m.from]->data(w.text);
    delivery_->handle_outcome(w.ref, w.message_id, w.rcpt, w.outcome,
                              std::string_view(p, w.text_len),
                              std::string_view(p + w.text_len, w.remote_len),
                              std::string_view(p + w.text_len + w.remote_len, w.tls_len));
}

void Engine::give_back(uint32_t core, uint32_t handle) {
    TextReturn& r = returns_[core];
    r.handles[r.count++] = handle;
    if (r.count == TextReturn::kMax) send_text_return(core, true);
}

// A full batch of handles goes at once, with a wake. A partial one is pushed at the end of an
// iteration without one: the owner drains its channels at every iteration (woken by its own
// work, by our next job or outcome, or by its tick), so the handles come home soon enough, and a
// wake of its own for every partial batch doubled the wakes between cores (relay 0.89 of the
// build before the arena).
void Engine::send_text_return(uint32_t core, bool wake) {
    CoreMsg m;
    m.kind = CoreMsg::Kind::text_return;
    m.from = static_cast<uint16_t>(core_);
    m.text_return = returns_[core];
    returns_[core].count = 0;
    if (!wake && outbox_[core].empty() && shared_.mesh->ring(core_, core).try_push(m)) return;
    send_to(core, m);
}

void Engine::flush_text_returns() {
    for (uint32_t t = 0; t < ncores_; t++)
        if (returns_[t].count > 0) send_text_return(t, false);
}

void Engine::on_segment(void* self, uint64_t seq) {
    static_cast<Engine*>(self)->delivery_->segment_created(seq);
}

void Engine::on_committed(void* self, const QueueEntry& e, const CommitWaiter& w) {
    auto* eng = static_cast<Engine*>(self);
    if (w.is_copy)
        eng->delivery_->copy_committed(e, w);
    else
        eng->delivery_->message_committed(e, w.rcpt_view, eng->now_ms());
}

}  // namespace ringmail
