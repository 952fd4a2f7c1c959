// delivery.cpp — see delivery.hpp.
#include "core/queue/delivery.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>

#include <strings.h>
#include <algorithm>
#include <cstring>
#include <ctime>

#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "core/runtime/sim_hooks.hpp"
#include "net/outbound/outbound.hpp"
#include "net/smtp/smtp_dsn.hpp"
#include "spool/recovery.hpp"
#include "spool/status.hpp"

namespace ringmail {
namespace {

using sys::realtime_us;  // the simulator's clock in sim builds

std::string_view domain_of(std::string_view address) {
    size_t at = address.rfind('@');
    return at == std::string_view::npos ? std::string_view() : address.substr(at + 1);
}

const char* outcome_name(sched::RcptState s, bool expired) {
    if (expired) return "expired";
    switch (s) {
        case sched::RcptState::delivered:
            return "delivered";
        case sched::RcptState::bounced:
            return "bounced";
        default:
            return "deferred";
    }
}

}  // namespace

// The due recipients of one message, grouped by domain while each domain is resolved; once
// every answer is in, recipients whose domains share a destination (the same MX host set) go
// in one job, so they share one transaction.
struct Delivery::Dispatch {
    struct Group {
        Dispatch* parent;
        uint32_t domain;
        std::vector<uint32_t> rcpts;
        dns::ResolutionPtr result;
    };
    sched::MessageRef ref;
    Delivery* owner;
    uint32_t pending = 0;
    std::vector<Group> groups;
};

struct Delivery::Waiting {
    JobMsg job;
    Delivery* owner;
};

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

uint16_t Delivery::segdir_for(uint16_t dir) {
    for (size_t i = 0; i < segdirs_.size(); i++)
        if (segdirs_[i]->dir == dir) return static_cast<uint16_t>(i);
    segdirs_.push_back(std::make_unique<SegDir>(
        SegDir{dir, spool::SegmentTracker(static_cast<int64_t>(config_.compact_after_ms))}));
    return static_cast<uint16_t>(segdirs_.size() - 1);
}

void Delivery::add_recovered_segments(uint16_t dir, const std::vector<uint64_t>& seqs) {
    SegDir& d = *segdirs_[segdir_for(dir)];
    for (uint64_t seq : seqs)
        d.tracker.add_segment(seq, static_cast<int64_t>(engine_.now_ms()));
}

void Delivery::segment_created(uint64_t seq) {
    segdirs_[0]->tracker.add_segment(seq, static_cast<int64_t>(engine_.now_ms()));
}

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

// --- domains of queued recipients, interned per core --------------------------------------

uint32_t Delivery::intern_domain(std::string_view d) {
    std::string key(d);
    for (char& c : key)
        c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    auto it = domain_ids_.find(key);
    if (it != domain_ids_.end()) {
        domain_refs_[it->second]++;
        return it->second;
    }
    uint32_t id;
    if (!domain_free_.empty()) {
        id = domain_free_.back();
        domain_free_.pop_back();
        domain_names_[id] = key;
        domain_refs_[id] = 1;
    } else {
        id = static_cast<uint32_t>(domain_names_.size());
        domain_names_.push_back(key);
        domain_refs_.push_back(1);
    }
    domain_ids_.emplace(std::move(key), id);
    return id;
}

void Delivery::release_domain(uint32_t id) {
    RM_ASSERT(domain_refs_[id] > 0);
    if (--domain_refs_[id] > 0) return;
    domain_ids_.erase(domain_names_[id]);
    domain_names_[id].clear();
    domain_free_.push_back(id);
}

// --- the origin side ---------------------------------------------------------------------

void Delivery::message_committed(const QueueEntry& e, std::span<const spool::RcptField> rcpts,
                                 uint64_t arrival_ms) {
    sched::MessageRef m =
        table_.add(e.id, arrival_ms, static_cast<uint32_t>(rcpts.size()), engine_.now_ms());
    if (held_.size() <= m.index) held_.resize(m.index + 1);
    Held& h = held_[m.index];
    h.at = RecordLocation{e.dir, e.segment_seq, e.offset, e.record_bytes};
    h.id = e.id;
    h.generation = m.generation;
    h.segdir = 0;
    h.slot = segdirs_[0]->tracker.message_added(e.segment_seq, e.id);
    h.tracked = true;
    h.arrival_unix_us = realtime_us();
    h.inflight = 0;
    h.bounces.clear();
    h.dsn_busy = false;
    h.domains.clear();
    h.addrs.clear();
    h.addr_end.clear();
    for (const auto& r : rcpts) {
        h.domains.push_back(intern_domain(domain_of(r.address)));
        h.addrs.append(r.address);
        h.addr_end.push_back(static_cast<uint32_t>(h.addrs.size()));
    }
}

void Delivery::add_recovered(const RecoveredQueueEntry& r) {
    uint64_t now = engine_.now_ms();
    int64_t real = realtime_us();
    auto to_mono = [&](int64_t unix_us) -> uint64_t {
        int64_t ago_ms = (real - unix_us) / 1000;
        return ago_ms >= static_cast<int64_t>(now) ? 0 : now - static_cast<uint64_t>(ago_ms);
    };
    uint64_t arrival = to_mono(r.arrival_unix_us);
    sched::MessageRef m =
        table_.add(r.entry.id, arrival, static_cast<uint32_t>(r.rcpts.size()), now);
    if (held_.size() <= m.index) held_.resize(m.index + 1);
    Held& h = held_[m.index];
    h.at = RecordLocation{r.entry.dir, r.entry.segment_seq, r.entry.offset, r.entry.record_bytes};
    h.id = r.entry.id;
    h.generation = m.generation;
    h.segdir = segdir_for(r.entry.dir);
    h.tracked = segdirs_[h.segdir]->tracker.has_segment(r.entry.segment_seq);
    if (h.tracked) h.slot = segdirs_[h.segdir]->tracker.message_added(r.entry.segment_seq, h.id);
    h.arrival_unix_us = r.arrival_unix_us;
    h.inflight = 0;
    h.bounces.clear();
    h.dsn_busy = false;
    h.domains.clear();
    h.addrs.clear();
    h.addr_end.clear();
    for (uint32_t i = 0; i < r.rcpts.size(); i++) {
        const RecoveredRcpt& rr = r.rcpts[i];
        h.domains.push_back(intern_domain(domain_of(rr.address)));
        h.addrs.append(rr.address);
        h.addr_end.push_back(static_cast<uint32_t>(h.addrs.size()));
        auto st = static_cast<sched::RcptState>(rr.state);
        uint64_t next = rr.next_attempt_unix_us ? to_mono(rr.next_attempt_unix_us) : now;
        if (st != sched::RcptState::pending || rr.attempts > 0)
            table_.restore(m, i, st, rr.attempts, std::max(next, now));
    }
    if (table_.final(m)) finish_message(m);
}

void Delivery::dispatch_due() {
    if (stopping_ || !resolver_ok_) return;
    // Bounded, like Postfix's active queue: at most --active-queue-max messages in an attempt;
    // the rest stay due in the table and are taken as attempts end.
    if (active_ >= config_.active_queue_max) return;
    // Back-pressure: another core's channel is full and the outbox has reached its bound; the
    // due messages wait in the queue (in order) until it drains.
    if (engine_.outbox_backlogged()) return;
    due_.clear();
    table_.take_due(engine_.now_ms(), due_, config_.active_queue_max - active_);
    for (sched::MessageRef m : due_)
        dispatch(m);
}

void Delivery::dispatch(sched::MessageRef m) {
    if (!table_.valid(m)) return;
    rcpts_.clear();
    table_.due_rcpts(m, engine_.now_ms(), rcpts_);
    if (rcpts_.empty()) return;
    Held& h = held_[m.index];
    if (h.inflight == 0) active_++;
    h.inflight += static_cast<uint32_t>(rcpts_.size());
    std::sort(rcpts_.begin(), rcpts_.end(),
              [&](uint32_t a, uint32_t b) { return h.domains[a] < h.domains[b]; });
    std::unique_ptr<Dispatch> d;
    if (!dispatch_free_.empty()) {
        d = std::move(dispatch_free_.back());
        dispatch_free_.pop_back();
    } else {
        d = std::make_unique<Dispatch>();
    }
    d->ref = m;
    d->owner = this;
    d->groups.clear();
    for (size_t i = 0; i < rcpts_.size();) {
        uint32_t dom = h.domains[rcpts_[i]];
        d->groups.push_back(Dispatch::Group{d.get(), dom, {}, nullptr});
        while (i < rcpts_.size() && h.domains[rcpts_[i]] == dom)
            d->groups.back().rcpts.push_back(rcpts_[i++]);
    }
    // One more than the lookups: answers from the cache arrive during the loop below, and
    // the dispatch must not complete before every lookup has been asked.
    d->pending = static_cast<uint32_t>(d->groups.size()) + 1;
    Dispatch* raw = d.release();
    for (Dispatch::Group& g : raw->groups) {
        if (!config_.smarthost.empty()) {
            auto sh = dns::parse_smarthost(config_.smarthost);
            RM_ASSERT(sh);
            resolver_.resolve_smarthost(*sh, engine_.now_ms(), &Delivery::on_resolved, &g);
        } else {
            resolver_.resolve_destination(domain_names_[g.domain], engine_.now_ms(),
                                          &Delivery::on_resolved, &g);
        }
    }
    if (--raw->pending == 0) resolved(raw);
}

void Delivery::on_resolved(void* ctx, const dns::ResolutionPtr& r) {
    auto* g = static_cast<Dispatch::Group*>(ctx);
    g->result = r;
    Dispatch* d = g->parent;
    if (--d->pending == 0) d->owner->resolved(d);
}

void Delivery::resolved(Dispatch* d) {
    std::unique_ptr<Dispatch> keep(d);
    sched::MessageRef m = d->ref;
    if (table_.valid(m)) {
        for (Dispatch::Group& g : d->groups) {
            const dns::Resolution& r = *g.result;
            if (r.outcome == dns::Outcome::ok) continue;
            std::string text = std::string(r.status) + " " + r.text;
            auto o = r.outcome == dns::Outcome::bounce ? sched::Outcome::bounced
                                                       : sched::Outcome::deferred;
            for (uint32_t rc : g.rcpts)
                apply(m, rc, o, text, "");
        }
        // Groups with the same destination go together, in one job per transaction's worth.
        const Held& h = held_[m.index];
        size_t per = std::min<size_t>(limits_.rcpts_per_transaction, limits::job_rcpts_max);
        for (size_t a = 0; a < d->groups.size(); a++) {
            Dispatch::Group& first = d->groups[a];
            if (!first.result || first.result->outcome != dns::Outcome::ok) continue;
            uint64_t hash = first.result->destination_hash;
            JobMsg j{};
            j.ref = m;
            j.message_id = h.id;
            j.dest_hash = hash;
            j.at = h.at;
            j.origin = static_cast<uint16_t>(core_);
            std::string_view dom = domain_names_[first.domain];
            j.domain_len = static_cast<uint8_t>(std::min<size_t>(dom.size(), sizeof j.domain));
            if (j.domain_len) memcpy(j.domain, dom.data(), j.domain_len);
            uint32_t owner = static_cast<uint32_t>(hash % engine_.cores());
            j.rcpt_count = 0;
            for (size_t b = a; b < d->groups.size(); b++) {
                Dispatch::Group& g = d->groups[b];
                if (!g.result || g.result->outcome != dns::Outcome::ok ||
                    g.result->destination_hash != hash)
                    continue;
                for (uint32_t rc : g.rcpts) {
                    j.rcpts[j.rcpt_count++] = static_cast<uint16_t>(rc);
                    if (j.rcpt_count == per) {
                        send_job(owner, j);
                        j.rcpt_count = 0;
                    }
                }
                g.result = nullptr;  // taken
            }
            if (j.rcpt_count > 0) send_job(owner, j);
        }
    }
    for (auto& g : d->groups)
        g.result = nullptr;
    dispatch_free_.push_back(std::move(keep));
}

void Delivery::send_job(uint32_t owner, const JobMsg& j) {
    if (owner == core_) {
        handle_job(j);
        return;
    }
    engine_.send_job(owner, j);
}

void Delivery::report(const JobMsg& job, uint16_t rcpt, sched::Outcome o, std::string_view text,
                      std::string_view remote, std::string_view tls) {
    if (job.origin == core_) {
        if (table_.valid(job.ref) && table_.id(job.ref) == job.message_id)
            apply(job.ref, rcpt, o, text, remote, tls);
        return;
    }
    OutcomeMsg m{};
    m.ref = job.ref;
    m.message_id = job.message_id;
    m.rcpt = rcpt;
    m.outcome = o;
    m.text_len = static_cast<uint16_t>(std::min(text.size(), sizeof m.text));
    text.copy(m.text, m.text_len);  // (string_view::copy: no memcpy from an empty view)
    m.remote_len = static_cast<uint8_t>(std::min(remote.size(), sizeof m.remote));
    remote.copy(m.remote, m.remote_len);
    m.tls_len = static_cast<uint8_t>(std::min(tls.size(), sizeof m.tls));
    tls.copy(m.tls, m.tls_len);
    engine_.send_outcome(job.origin, m);
}

void Delivery::handle_outcome(const OutcomeMsg& o) {
    if (!table_.valid(o.ref) || table_.id(o.ref) != o.message_id) return;
    apply(o.ref, o.rcpt, o.outcome, std::string_view(o.text, o.text_len),
          std::string_view(o.remote, o.remote_len), std::string_view(o.tls, o.tls_len));
}

// One recipient's outcome: the table decides, the spool records it, the log says it.
void Delivery::apply(sched::MessageRef m, uint32_t rcpt, sched::Outcome o, std::string_view text,
                     std::string_view remote, std::string_view tls) {
    Held& h = held_[m.index];
    uint64_t now = engine_.now_ms();
    sched::Decision d = table_.outcome(m, rcpt, o, now, random());
    if (h.inflight > 0 && --h.inflight == 0) active_--;
    spool::Status st;
    st.message_id = h.id;
    st.rcpt = static_cast<uint16_t>(rcpt);
    st.attempts = static_cast<uint16_t>(table_.attempts(m, rcpt));
    st.at_unix_us = realtime_us();
    st.remote = remote;
    st.reply = text;
    switch (d.state) {
        case sched::RcptState::delivered:
            st.state = spool::StatusState::delivered;
            stats_.delivered++;
            break;
        case sched::RcptState::bounced:
            st.state = d.expired ? spool::StatusState::expired : spool::StatusState::bounced;
            (d.expired ? stats_.expired : stats_.bounced)++;
            break;
        case sched::RcptState::pending:
            st.state = spool::StatusState::deferred;
            st.next_attempt_unix_us =
                st.at_unix_us + static_cast<int64_t>(d.next_attempt_ms - now) * 1000;
            stats_.deferred++;
            break;
    }
    if (d.state == sched::RcptState::bounced) {
        // Its status goes with its DSN (write_bounce_statuses).
        h.bounces.push_back(Bounce{rcpt, st.attempts, d.expired, st.at_unix_us, std::string(text),
                                   std::string(remote)});
    } else {
        engine_.committer().append_status(st);
    }
    log_outcome(h, rcpt, outcome_name(d.state, d.expired), st.attempts, st.at_unix_us, remote, text,
                tls);
    maybe_finish(m);
}

void Delivery::log_outcome(const Held& h, uint32_t rcpt, const char* status, uint32_t attempts,
                           int64_t at_unix_us, std::string_view remote, std::string_view text,
                           std::string_view tls) {
    char qid[16];
    smtp::format_queue_id(h.id, qid);
    std::string_view to = address_of(h, rcpt);
    LOG_INFO(
        "delivery id=%.16s rcpt=%u to=<%.*s> domain=%s relay=%.*s status=%s attempts=%u "
        "delay=%.1fs reply=\"%.*s\" tls=%.*s",
        qid, rcpt, static_cast<int>(to.size()), to.data(), domain_names_[h.domains[rcpt]].c_str(),
        static_cast<int>(remote.size()), remote.data(), status, attempts,
        static_cast<double>(at_unix_us - h.arrival_unix_us) / 1e6, static_cast<int>(text.size()),
        text.data(), tls.empty() ? 4 : static_cast<int>(tls.size()),
        tls.empty() ? "none" : tls.data());
}

// --- bounces: one DSN per message and round of attempts ------------------------------------

struct Delivery::DsnRead {
    SpoolReader::Read read;
    sched::MessageRef ref;
    Delivery* owner;
};

class Delivery::DsnWaiter final : public CommitWaiter {
  public:
    Delivery* owner = nullptr;
    uint64_t id = 0;              // the DSN's queue id, named in its text: the same on every try
    sched::MessageRef ref{};      // the bounced message
    uint64_t message_id = 0;      // its id (the slot is held until the DSN is durable)
    std::vector<Bounce> bounces;  // whose statuses are written once the DSN is durable
    std::string text;             // the DSN message
    std::string sender;           // its one recipient: the original envelope sender
    std::string params;           // BODY=8BITMIME when the DSN quotes 8-bit headers
    spool::RcptField rcpt;        // views into sender
    uint32_t tries = 0;
    void commit_finished(smtp::CommitResult r) override {
        owner->dsn_committed(this, r == smtp::CommitResult::ok);
    }
};

void Delivery::maybe_finish(sched::MessageRef m) {
    Held& h = held_[m.index];
    if (h.inflight > 0 || h.dsn_busy) return;
    if (!h.bounces.empty()) {
        start_dsn(m);
        return;
    }
    if (table_.final(m)) finish_message(m);
}

void Delivery::start_dsn(sched::MessageRef m) {
    Held& h = held_[m.index];
    h.dsn_busy = true;
    auto* r = new DsnRead{};
    r->ref = m;
    r->owner = this;
    r->read.at = h.at;
    r->read.user = r;
    r->read.done = [](SpoolReader::Read* rd, int err) {
        auto* dr = static_cast<DsnRead*>(rd->user);
        dr->owner->dsn_read(dr, err);
    };
    reader_.read(&r->read);
}

void Delivery::write_bounce_statuses(const Held& h, const std::vector<Bounce>& bounces) {
    for (const Bounce& b : bounces) {
        spool::Status st;
        st.message_id = h.id;
        st.rcpt = static_cast<uint16_t>(b.rcpt);
        st.state = b.expired ? spool::StatusState::expired : spool::StatusState::bounced;
        st.attempts = b.attempts;
        st.at_unix_us = b.at_unix_us;
        st.remote = b.remote;
        st.reply = b.text;
        engine_.committer().append_status(st);
    }
}

namespace {

// "550 5.1.1 ..." or "5.1.2 ..." → "5.1.1" / "5.1.2"; a failure without one gets a default.
std::string_view status_of(std::string_view text, bool expired) {
    if (expired) return "4.4.7";
    for (size_t i = 0; i + 5 <= text.size(); i++) {
        if ((text[i] == '4' || text[i] == '5') && text[i + 1] == '.' &&
            (i == 0 || text[i - 1] == ' ')) {
            size_t e = text.find(' ', i);
            return text.substr(i, (e == std::string_view::npos ? text.size() : e) - i);
        }
    }
    return "5.0.0";
}

std::string_view orcpt_of(std::string_view params) {
    for (size_t i = 0; i + 6 <= params.size(); i++) {
        if (strncasecmp(params.data() + i, "ORCPT=", 6) == 0 && (i == 0 || params[i - 1] == ' ')) {
            size_t e = params.find(' ', i);
            return params.substr(i + 6, (e == std::string_view::npos ? params.size() : e) - i - 6);
        }
    }
    return {};
}

}  // namespace

void Delivery::dsn_read(DsnRead* r, int err) {
    std::unique_ptr<DsnRead> keep(r);
    if (!table_.valid(r->ref)) return;
    Held& h = held_[r->ref.index];
    h.dsn_busy = false;
    std::optional<spool::MessageView> m;
    if (!err) {
        auto rec = spool::decode_record(std::string_view(r->read.buf.data(), r->read.buf.size()),
                                        r->read.salt, nullptr);
        if (rec) m = spool::decode_message(rec->payload);
        if (!m || m->id != h.id) err = EBADMSG;
    }
    char qid[16];
    smtp::format_queue_id(h.id, qid);
    if (err) {
        // No DSN without the original: its bounces stay unrecorded (deferred in the spool)
        // and the read is tried again later, never given up in silence.
        LOG_ERROR(
            "bounce of %.16s: cannot read the original (%s): its DSN waits; %zu recipient(s) "
            "stay deferred; retrying in %llu s",
            qid, strerror(err), h.bounces.size(),
            static_cast<unsigned long long>(kDsnReadRetryMs / 1000));
        dsn_read_retry_.push_back({r->ref, engine_.now_ms() + kDsnReadRetryMs});
        return;
    }
    if (!smtp::should_bounce(m->mail_from)) {
        LOG_INFO("bounce of %.16s: the sender is <>: no DSN (RFC 5321 §6.1)", qid);
        write_bounce_statuses(h, h.bounces);
        h.bounces.clear();
        maybe_finish(r->ref);
        return;
    }
    std::vector<smtp::DsnRecipient> rcpts;
    for (const Bounce& b : h.bounces) {
        smtp::DsnRecipient d;
        d.address = m->rcpts[b.rcpt].address;
        d.orcpt = orcpt_of(m->rcpts[b.rcpt].params);
        d.action = smtp::DsnAction::failed;
        d.status = status_of(b.text, b.expired);
        std::string_view host = b.remote;
        d.remote_mta = host.substr(0, host.find('['));
        // Diagnostic-Code carries a remote SMTP reply (RFC 3464 §2.3.6); our own reasons
        // (DNS, expiry) are told by the Status and the human-readable part.
        bool smtp_reply = b.text.size() >= 4 && isdigit(static_cast<unsigned char>(b.text[0])) &&
                          isdigit(static_cast<unsigned char>(b.text[1])) &&
                          isdigit(static_cast<unsigned char>(b.text[2])) && b.text[3] == ' ';
        d.diagnostic = smtp_reply ? std::string_view(b.text) : std::string_view();
        d.last_attempt_unix_s = b.at_unix_us / 1000000;
        rcpts.push_back(d);
    }
    auto w = std::make_unique<DsnWaiter>();
    w->owner = this;
    w->id = engine_.committer().next_id();
    w->ref = r->ref;
    w->message_id = h.id;
    smtp::DsnInput in;
    in.reporting_mta = config_.hostname;
    in.sender = m->mail_from;
    in.queue_id = h.id;
    in.dsn_id = w->id;
    in.arrival_unix_s = m->arrival_unix_us / 1000000;
    in.now_unix_s = realtime_us() / 1000000;
    in.recipients = rcpts;
    in.original_text = m->body;
    smtp::Dsn dsn = smtp::build_dsn(in);
    w->text = std::move(dsn.text);
    w->sender = std::string(m->mail_from);
    w->params = dsn.eight_bit ? "BODY=8BITMIME" : "";
    char did[16];
    smtp::format_queue_id(in.dsn_id, did);
    LOG_INFO("bounce of %.16s: DSN %.16s to <%s> for %zu recipient(s)", qid, did, w->sender.c_str(),
             rcpts.size());
    // The bounces of this round wait with their DSN: their statuses are written once it is
    // durable (dsn_committed); the message is held until then.
    w->bounces = std::move(h.bounces);
    h.bounces.clear();
    h.dsn_busy = true;
    w->tries = 0;
    stage_dsn(std::move(w));
}

void Delivery::stage_dsn(std::unique_ptr<DsnWaiter> w) {
    w->rcpt = spool::RcptField{w->sender, ""};
    w->rcpt_view = std::span<const spool::RcptField>(&w->rcpt, 1);
    w->rcpts = 1;
    spool::EnvelopeFields env{config_.hostname, "", "LOCAL", "", w->params, w->rcpt_view};
    Committer& c = engine_.committer();
    if (!w->builder.begin(c.pool(), w->id, realtime_us(), env) || !w->builder.append(w->text)) {
        w->builder.reset();
        dsn_retry_.push_back(std::move(w));  // staging memory is short: the next tick
        return;
    }
    c.submit(w.get());
    dsn_waiters_.push_back(std::move(w));
}

void Delivery::dsn_committed(DsnWaiter* w, bool ok) {
    auto it = std::find_if(dsn_waiters_.begin(), dsn_waiters_.end(),
                           [&](const auto& p) { return p.get() == w; });
    RM_ASSERT(it != dsn_waiters_.end());
    std::unique_ptr<DsnWaiter> keep = std::move(*it);
    dsn_waiters_.erase(it);
    if (!ok) {
        // Never dropped: its recipients stay deferred in the spool (a restart bounces them
        // again) and it is stored again, under the same id, until the spool takes it.
        keep->tries++;
        if (keep->tries <= 3 || keep->tries % 100 == 0) {
            char did[16], qid[16];
            smtp::format_queue_id(keep->id, did);
            smtp::format_queue_id(keep->message_id, qid);
            LOG_ERROR(
                "bounce of %.16s: DSN %.16s to <%s> could not be stored (try %u): its %zu "
                "recipient(s) stay deferred until it is; retrying",
                qid, did, keep->sender.c_str(), keep->tries, keep->bounces.size());
        }
        dsn_retry_.push_back(std::move(keep));
        return;
    }
    // The DSN is durable (the listener has queued it for delivery like any message): now the
    // bounces it reports may be recorded, in the next batch.
    if (!table_.valid(keep->ref) || table_.id(keep->ref) != keep->message_id) return;
    Held& h = held_[keep->ref.index];
    write_bounce_statuses(h, keep->bounces);
    h.dsn_busy = false;
    maybe_finish(keep->ref);
}

void Delivery::keep_tls_session(const std::string& host, tls::TlsResumption r) {
    // Bounded: past the cap an arbitrary host's session goes (its next connection does a full
    // handshake, nothing worse).
    if (tls_sessions_.size() >= kTlsSessionsMax && !tls_sessions_.contains(host))
        tls_sessions_.erase(tls_sessions_.begin());
    tls_sessions_.insert_or_assign(host, std::move(r));
}

void Delivery::finish_message(sched::MessageRef m) {
    Held& h = held_[m.index];
    if (h.tracked) {
        // Its segment may go once the statuses that made it final are durable: they ride in
        // the next batch to start (after those in flight, answered in order).
        const Committer& c = engine_.committer();
        finals_.push_back(
            FinalPending{h.segdir, h.slot, h.id, c.stats().commits + c.batches_inflight() + 1u});
        h.tracked = false;
    }
    for (uint32_t dom : h.domains)
        release_domain(dom);
    h.domains.clear();
    table_.remove(m);
}

// --- the destination side ----------------------------------------------------------------

void Delivery::handle_job(const JobMsg& j) {
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
        resolver_.resolve_smarthost(*sh, now, &Delivery::on_dest_resolved, w);
    } else {
        resolver_.resolve_destination(dom, now, &Delivery::on_dest_resolved, w);
    }
}

void Delivery::on_dest_resolved(void* ctx, const dns::ResolutionPtr& r) {
    std::unique_ptr<Waiting> w(static_cast<Waiting*>(ctx));
    Delivery* self = w->owner;
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
void Delivery::queue_job(Destination& d, const JobMsg& j) {
    if (d.queue.backoff_until_ms() > engine_.now_ms()) {
        std::string text = d.last_status + " " + d.last_error;
        for (uint16_t i = 0; i < j.rcpt_count; i++)
            report(j, j.rcpts[i], sched::Outcome::deferred, text, "");
        return;
    }
    d.queue.push(j);
    job_ready(d);
}

void Delivery::job_ready(Destination& d) {
    while (!d.idle.empty() && d.queue.ready() > 0) {
        OutboundConnection* c = d.idle.back();
        d.idle.pop_back();
        c->wake();
    }
    start_connections(d);
}

void Delivery::start_connections(Destination& d) {
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

void Delivery::destination_failed(Destination& d, std::string_view why, std::string_view status) {
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

void Delivery::connection_closed(OutboundConnection* c) {
    Destination& d = *c->destination();
    d.queue.connection_closed(c->was_ready());
    conns_open_--;
    conns_free_.push_back(c);
    if (d.queue.ready() > 0) start_connections(d);
}

// --- timers --------------------------------------------------------------------------------

void Delivery::on_tick() {
    uint64_t now = engine_.now_ms();
    if (resolver_ok_ && resolver_.next_deadline_ms() != 0 && now >= resolver_.next_deadline_ms())
        resolver_.on_timer(now);
    expired_.clear();
    table_.expire(now, expired_);
    for (auto& [m, rcpt] : expired_) {
        Held& h = held_[m.index];
        int64_t at = realtime_us();
        h.bounces.push_back(Bounce{rcpt, static_cast<uint16_t>(table_.attempts(m, rcpt)), true, at,
                                   "4.4.7 message expired in the queue", ""});
        stats_.expired++;
        log_outcome(h, rcpt, "expired", table_.attempts(m, rcpt), at, "",
                    "4.4.7 message expired in the queue", "");
        maybe_finish(m);
    }
    if (!dsn_read_retry_.empty()) {
        size_t kept = 0;
        for (size_t i = 0; i < dsn_read_retry_.size(); i++) {
            auto [m, at] = dsn_read_retry_[i];
            if (at > now) {
                dsn_read_retry_[kept++] = dsn_read_retry_[i];
                continue;
            }
            if (!table_.valid(m)) continue;
            Held& h = held_[m.index];
            if (!h.dsn_busy && h.inflight == 0 && !h.bounces.empty()) start_dsn(m);
        }
        dsn_read_retry_.resize(kept);
    }
    if (!dsn_retry_.empty()) {
        auto retry = std::move(dsn_retry_);
        dsn_retry_.clear();
        for (auto& w : retry)
            stage_dsn(std::move(w));
    }
    for (auto& c : conns_)
        c->tick(now);
    collect_segments();
    if (now >= next_compaction_ms_) {
        next_compaction_ms_ = now + 1000;
        compact();
        reader_.close_unlinked();
    }
    // Destinations that rested after a failure may take their waiting jobs again.
    destinations_.for_each([&](Destination& d) {
        if (d.queue.ready() > 0) start_connections(d);
    });
    destinations_.trim(now);
    dispatch_due();
}

void Delivery::flush() {
    dispatch_due();
}

// Unlinks in one linked run: at most the smallest ring (the simulator's) holds at once.
constexpr size_t kUnlinkRunMax = 8;

void Delivery::collect_segments() {
    uint64_t commits = engine_.committer().stats().commits;
    size_t done = 0;
    while (done < finals_.size() && finals_[done].after_commits <= commits) {
        const FinalPending& f = finals_[done++];
        segdirs_[f.segdir]->tracker.message_final(f.slot, f.id);
    }
    finals_.erase(finals_.begin(), finals_.begin() + static_cast<long>(done));
    for (uint16_t i = 0; i < segdirs_.size(); i++) {
        SegDir& d = *segdirs_[i];
        // Our own directory keeps its current segment; another core's old one has none.
        uint64_t current = i == 0 ? engine_.committer().current_segment_seq() : UINT64_MAX;
        // One run of unlinks at a time per directory, each run linked in order: they then
        // complete oldest first, as the tracker (and a crash) requires.
        if (d.unlinks > 0) continue;
        std::vector<uint64_t> seqs = d.tracker.deletable(current);
        // The kernel ends a link chain at the end of a submission: a run that sqe() split to
        // make room would complete as two unordered parts (a newer segment deleted before an
        // older one aborted the tracker: the simulator's seed 76 with an 8-entry ring). A run
        // that fits, reserved; the rest go when it is done.
        if (seqs.size() > kUnlinkRunMax) seqs.resize(kUnlinkRunMax);
        engine_.reactor().reserve(static_cast<uint32_t>(seqs.size()));
        for (size_t k = 0; k < seqs.size(); k++) {
            d.tracker.delete_started(seqs[k]);
            reader_.forget(d.dir, seqs[k]);
            auto* u = new Unlink{{&Delivery::on_unlinked, nullptr},
                                 this,
                                 i,
                                 seqs[k],
                                 spool::core_dir_path(config_.spool_dir, d.dir) + "/" +
                                     spool::segment_file_name(seqs[k])};
            u->op.owner = u;
            io_uring_sqe* s = engine_.reactor().sqe(u->op);
            io_uring_prep_unlinkat(s, AT_FDCWD, u->path.c_str(), 0);
            // Oldest first, in order (rule D4): a crash never keeps an older one alone.
            if (k + 1 < seqs.size()) s->flags |= IOSQE_IO_HARDLINK;  // in order, even past an error
            unlinks_inflight_++;
            d.unlinks++;
        }
    }
}

// --- compaction: live messages of an old segment are copied forward (rules C1-C3) ----------

class Delivery::CopyWaiter final : public CommitWaiter {
  public:
    Delivery* owner = nullptr;
    sched::MessageRef ref{};
    uint64_t id = 0;
    SpoolReader::Read read;
    spool::MessageView msg;
    void commit_finished(smtp::CommitResult) override { owner->copy_finished(this); }
};

void Delivery::compact() {
    if (!copies_.empty() || stopping_) return;  // rule C2: one at a time
    int64_t now = static_cast<int64_t>(engine_.now_ms());
    for (uint16_t i = 0; i < segdirs_.size(); i++) {
        SegDir& d = *segdirs_[i];
        uint64_t current = i == 0 ? engine_.committer().current_segment_seq() : UINT64_MAX;
        auto cand = d.tracker.compaction_candidate(now, current);
        if (!cand) continue;
        live_.clear();
        d.tracker.live_messages(*cand, live_);
        LOG_DEBUG(
            "compaction: segment %016llx of core-%u holds %zu live messages: copying them "
            "forward",
            static_cast<unsigned long long>(*cand), d.dir, live_.size());
        for (const spool::LiveMessage& lm : live_) {
            // Find its slot (a scan once per compaction: an hour apart by default).
            for (uint32_t k = 0; k < held_.size(); k++) {
                Held& h = held_[k];
                if (!h.tracked || h.segdir != i || h.id != lm.id ||
                    h.slot.segment_seq != lm.slot.segment_seq || h.slot.index != lm.slot.index)
                    continue;
                sched::MessageRef ref{k, h.generation};
                // Not while bounces wait for their DSN: the copy would restate them as bounced.
                if (!table_.valid(ref) || h.inflight > 0 || h.dsn_busy || !h.bounces.empty())
                    break;  // next round
                auto w = std::make_unique<CopyWaiter>();
                w->owner = this;
                w->ref = ref;
                w->id = h.id;
                w->is_copy = true;
                w->read.at = h.at;
                w->read.user = w.get();
                w->read.done = [](SpoolReader::Read* r, int err) {
                    auto* cw = static_cast<CopyWaiter*>(r->user);
                    cw->owner->copy_read(cw, err);
                };
                CopyWaiter* raw = w.get();
                copies_.push_back(std::move(w));
                reader_.read(&raw->read);
                break;
            }
        }
        if (!copies_.empty()) return;
    }
}

void Delivery::copy_read(CopyWaiter* w, int err) {
    std::optional<spool::MessageView> m;
    if (!err) {
        auto rec = spool::decode_record(std::string_view(w->read.buf.data(), w->read.buf.size()),
                                        w->read.salt, nullptr);
        if (rec) m = spool::decode_message(rec->payload);
    }
    if (!m || m->id != w->id || !table_.valid(w->ref)) {
        copy_finished(w);  // nothing copied; the next round may try again
        return;
    }
    w->msg = std::move(*m);
    const spool::MessageView& v = w->msg;
    w->rcpt_view = v.rcpts;
    w->rcpts = static_cast<uint16_t>(std::min<size_t>(v.rcpts.size(), UINT16_MAX));
    spool::EnvelopeFields env{v.helo,      v.client_addr, v.protocol,
                              v.mail_from, v.mail_params, v.rcpts};
    Committer& c = engine_.committer();
    if (!w->builder.begin(c.pool(), w->id, v.arrival_unix_us, env) || !w->builder.append(v.body)) {
        w->builder.reset();
        copy_finished(w);
        return;
    }
    c.submit(w);
    // The recipients' states follow the copy in the same batch (rule C1), so that the copy
    // alone tells the whole story once the old segment is gone.
    uint64_t now = engine_.now_ms();
    int64_t real = realtime_us();
    for (uint32_t r = 0; r < v.rcpts.size(); r++) {
        sched::RcptState st = table_.rcpt_state(w->ref, r);
        uint32_t attempts = table_.attempts(w->ref, r);
        if (st == sched::RcptState::pending && attempts == 0) continue;
        spool::Status s;
        s.message_id = w->id;
        s.rcpt = static_cast<uint16_t>(r);
        s.attempts = static_cast<uint16_t>(attempts);
        s.at_unix_us = real;
        s.reply = "restated by compaction";
        if (st == sched::RcptState::delivered) {
            s.state = spool::StatusState::delivered;
        } else if (st == sched::RcptState::bounced) {
            s.state = spool::StatusState::bounced;
        } else {
            s.state = spool::StatusState::deferred;
            uint64_t next = table_.next_attempt_ms(w->ref, r);
            s.next_attempt_unix_us =
                real + (next > now ? static_cast<int64_t>(next - now) : 0) * 1000;
        }
        c.append_status(s);
    }
}

void Delivery::copy_committed(const QueueEntry& e, const CommitWaiter& cw) {
    const auto& w = static_cast<const CopyWaiter&>(cw);
    if (!table_.valid(w.ref)) return;
    Held& h = held_[w.ref.index];
    if (!h.tracked || h.id != w.id) return;  // final meanwhile: its old slot is settled (C3)
    // The copy and its statuses are durable (rule D3): the old copy is dead.
    segdirs_[h.segdir]->tracker.message_final(h.slot, h.id);
    h.segdir = 0;
    h.slot = segdirs_[0]->tracker.message_added(e.segment_seq, h.id);
    h.at = RecordLocation{e.dir, e.segment_seq, e.offset, e.record_bytes};
    stats_.compacted++;
}

void Delivery::copy_finished(CopyWaiter* w) {
    auto it =
        std::find_if(copies_.begin(), copies_.end(), [&](const auto& p) { return p.get() == w; });
    RM_ASSERT(it != copies_.end());
    copies_.erase(it);
}

void Delivery::on_unlinked(void* self, int res, uint32_t) {
    std::unique_ptr<Unlink> u(static_cast<Unlink*>(self));
    Delivery* d = u->owner;
    d->unlinks_inflight_--;
    d->segdirs_[u->segdir]->unlinks--;
    if (res < 0 && res != -ENOENT) {
        // Left in place: recovery will find only final messages in it. Never retried here.
        LOG_WARN("cannot delete spool segment %s: %s", u->path.c_str(), strerror(-res));
    } else {
        LOG_DEBUG("spool segment %s deleted: all its messages are final", u->path.c_str());
    }
    d->segdirs_[u->segdir]->tracker.segment_deleted(u->seq);
    d->stats_.segments_deleted++;
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
