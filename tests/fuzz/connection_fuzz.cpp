// connection_fuzz.cpp — whole inbound connections (net/inbound/connection.cpp) on one engine,
// driven by the input over the simulator's world (tests/sim/): the real Engine, Connection,
// ServerSession and Committer of ringmail_core_sim, with simulated sockets, disk and clock.
// Where the smtp_server target fuzzes the session alone, this one fuzzes its driver: receive
// buffers and back-pressure, partial sends, cuts and closes at any point, commits that fail
// or finish late, timeouts, the greeting delay, the connection limits, a crash.
//
// Input: seven header bytes, then a script of client events.
//   [0] bits0-1 --max-connections (1, 2, 4, 16), bit2 --max-connections-per-ip 1 (else 200),
//       bits3-4 --commit-depth 1-4, bit5 --commit-window-us 500, bit6 --ring-entries 8
//       (submissions from inside handlers; else 256), bit7 a crash (instant in [5])
//   [1] bits0-1 receive buffer bytes (512, 1024, 4096, 16384), bits2-3 receive buffers (4, 16,
//       64, 256), bits4-5 completion batching of the world, bits6-7 disk faults per file
//       operation (none, 0.5%, 5%, 20%: failed commits, segments that cannot be made)
//   [2] bits0-3 client i is outside --relay-networks (greeting delay, no relaying), bit4 every
//       client comes from one address, bit5 a slow disk, bits6-7 the clients' receive window
//       (64 KiB, 1 KiB, 64 B, 16 B)
//   [3..4] the world's seed (completion order and latencies, partial receives, short sends)
//   [5] bits0-4 the crash instant, bits5-7 the largest gap between two arrivals
//   [6] bit0 a graceful stop while clients are connected, then a new engine on the same spool
//       (bits1-7 its instant)
// Then events, each a byte: bits0-1 the client (0-3; clients connect in this order), bits2-7
// the event (modulo 10), some with an argument byte:
//   0 send the next N bytes of the input (N: the argument)   5 read at most N bytes now
//   1 send a command or text from a table (the argument)      6 half-close, then read to EOF
//   2 send N×97 bytes of message text                          7 close
//   3 pause (the argument: mantissa and exponent, ≤ 8 s)      8 reset
//   4 wait for a reply (reading everything)                    9 fall silent until closed
// The nth event 4 of a client waits until it has read n whole replies (the greeting is the
// first): the reply to its nth command, however they were pipelined. Sends of one step go out
// together (pipelined); the world cuts them where it likes. A client
// reads only when its script says so (4, 5, 6): one that does not read fills its window and
// the server's sends wait. At the end of its script a client closes its socket.
//
// Checked after each input: the engine never aborts (RM_ASSERT) and the world's invariants
// hold (no operation on a closed socket, no deadlock, an end within a bound of steps); every reply
// line a client reads is "ddd" + ' ' or '-' + text + CRLF in at most 512 octets, a multi-line
// reply keeps its code; once every client has gone the engine's connection slots, permits,
// sockets and receive buffers are back to their baseline (World::check_baseline), and after
// the graceful stop no file descriptor is open; every message a client read a 250 "queued as"
// for is in the spool that recovery reads, after a crash, a restart and the last stop.
//
// RINGMAIL_FUZZ_TRACE=1 prints what each client read; RINGMAIL_FUZZ_TWICE=1 runs every input
// twice and checks the two runs' event digests are equal (the same input, the same run).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/log.hpp"
#include "core/engine/engine.hpp"
#include "core/program/recover.hpp"
#include "net/smtp/smtp_server.hpp"
#include "spool/recovery.hpp"
#include "tests/fuzz/fuzz_check.hpp"
#include "tests/sim/client.hpp"
#include "tests/sim/sim.hpp"

namespace ringmail::sim {
namespace {

constexpr size_t kHeaderBytes = 7;
constexpr uint32_t kClientsMax = 4;
constexpr size_t kEventsMax = 600;          // per input: bounds a run's virtual time and CPU
constexpr size_t kReplyLineMaxBytes = 512;  // RFC 5321 §4.5.3.1.5, CRLF included
constexpr uint64_t kStepsMax = 400'000;

// Commands and text the fuzzer can send whole (event 1): a random input rarely spells them.
constexpr std::string_view kTokens[] = {
    "EHLO client.test\r\n",
    "HELO client.test\r\n",
    "MAIL FROM:<a@sender.test>\r\n",
    "MAIL FROM:<>\r\n",
    "MAIL FROM:<a@sender.test> SIZE=300 BODY=8BITMIME\r\n",
    "RCPT TO:<u@example.net>\r\n",
    "RCPT TO:<v@remote.test>\r\n",
    "RCPT TO:<postmaster>\r\n",
    "DATA\r\n",
    "Subject: fuzz\r\n\r\nbody\r\n",
    ".\r\n",
    "..stuffed\r\n",
    "BDAT 13\r\n",
    "BDAT 13 LAST\r\n",
    "BDAT 0 LAST\r\n",
    "Hello world\r\n",
    "RSET\r\n",
    "NOOP\r\n",
    "QUIT\r\n",
    "VRFY u\r\n",
    "STARTTLS\r\n",
    "AUTH PLAIN AGFAYg==\r\n",
    "\r\n",
    "\n",
    "\r",
    "MAIL FROM:<a@sender.test> SMTPUTF8\r\n",
    "RCPT TO:<w@example.net> NOTIFY=NEVER\r\n",
};

struct Event {
    enum class Kind : uint8_t { send, pause, await_reply, read, fin, close, rst, silent };
    Kind kind = Kind::send;
    std::string bytes;  // send
    uint64_t n = 0;     // pause: microseconds; read: bytes
};

struct Input {
    uint8_t h[kHeaderBytes];
    std::vector<Event> scripts[kClientsMax];
    uint32_t clients = 1;
};

Event make_send(std::string bytes) {
    Event e;
    e.bytes = std::move(bytes);
    return e;
}

std::string message_text(size_t bytes) {
    std::string t;
    for (size_t line = 0; t.size() < bytes; line++) {
        if (line % 7 == 3) t += ".";  // stuffed on the wire, unstuffed by the server
        t += "line " + std::to_string(line) + " of the text, in a message of some size\r\n";
    }
    return t;
}

Input parse(const uint8_t* data, size_t size) {
    Input in;
    std::copy(data, data + kHeaderBytes, in.h);
    size_t at = kHeaderBytes;
    auto arg = [&]() -> uint8_t { return at < size ? data[at++] : 0; };
    for (size_t n = 0; at < size && n < kEventsMax; n++) {
        const uint8_t b = data[at++];
        const uint32_t client = b & 3;
        in.clients = std::max(in.clients, client + 1);
        Event e;
        switch ((b >> 2) % 10) {
            case 0: {
                const size_t len = std::min<size_t>(arg(), size - at);
                e = make_send(std::string(reinterpret_cast<const char*>(data) + at, len));
                at += len;
                break;
            }
            case 1:
                e = make_send(std::string(kTokens[arg() % std::size(kTokens)]));
                break;
            case 2:
                e = make_send(message_text(size_t{arg()} * 97));
                break;
            case 3: {
                const uint8_t v = arg();
                e.kind = Event::Kind::pause;
                e.n = uint64_t{(v & 15u) + 1} << ((v >> 4) + 4);  // 16 us .. 8.4 s
                break;
            }
            case 4:
                e.kind = Event::Kind::await_reply;
                break;
            case 5:
                e.kind = Event::Kind::read;
                e.n = size_t{arg()} + 1;
                break;
            case 6:
                e.kind = Event::Kind::fin;
                break;
            case 7:
                e.kind = Event::Kind::close;
                break;
            case 8:
                e.kind = Event::Kind::rst;
                break;
            default:
                e.kind = Event::Kind::silent;
                break;
        }
        in.scripts[client].push_back(std::move(e));
    }
    return in;
}

// The clients of one input: each plays its script against its socket and checks every reply
// line it reads.
class ScriptedClients final : public ClientModel {
  public:
    explicit ScriptedClients(const Input& in) : in_(in) {}

    void spawn(World& w) override {
        auto c = std::make_unique<Client>();
        c->id = static_cast<uint32_t>(w.clients.size());
        const bool untrusted = (in_.h[2] >> c->id) & 1;
        const uint32_t host = (in_.h[2] & 16) ? 1 : c->id + 1;
        c->ip = untrusted ? (0xc6336400u | host) : (0x0a000000u | host);  // 198.51.100/24, 10/8
        static constexpr uint32_t kWindows[] = {65536, 1024, 64, 16};
        Socket sk;
        sk.fd = w.new_fd();
        sk.client = c->id;
        sk.ip = c->ip;
        sk.window = kWindows[in_.h[2] >> 6];
        c->fd = sk.fd;
        c->next_us = w.now_us();
        w.sockets[sk.fd] = std::move(sk);
        w.backlog.push_back(c->fd);
        w.trace(0xc11e, c->id);
        w.clients.push_back(std::move(c));
        peers_.emplace_back();
    }

    void step(World& w, Client& c) override {
        Peer& p = peers_[c.id];
        const std::vector<Event>& script = in_.scripts[c.id];
        Socket* s = w.socket_of(c.fd);
        c.next_us = kNever;
        if (s->rst) {  // reset: the client learns nothing more
            finish(w, c, *s);
            return;
        }
        if (p.draining) read(w, c, *s, SIZE_MAX);
        if (s->server_closed && (p.silent || s->unread_by_client() == 0)) {
            finish(w, c, *s);
            return;
        }
        if (p.draining || p.silent) return;  // the server's close wakes it
        while (p.pc < script.size()) {
            const Event& e = script[p.pc];
            switch (e.kind) {
                case Event::Kind::send:
                    s->to_server.append(e.bytes);
                    break;
                case Event::Kind::pause:
                    if (p.resume_at_us == 0) p.resume_at_us = w.now_us() + e.n;
                    if (w.now_us() < p.resume_at_us) {
                        c.next_us = p.resume_at_us;
                        return;
                    }
                    p.resume_at_us = 0;
                    break;
                case Event::Kind::await_reply:
                    if (!p.awaiting) {
                        p.awaiting = true;
                        p.awaited++;
                    }
                    read(w, c, *s, SIZE_MAX);
                    if (p.replies < p.awaited && !s->server_closed) return;
                    p.awaiting = false;
                    break;
                case Event::Kind::read:
                    read(w, c, *s, e.n);
                    break;
                case Event::Kind::fin:  // half-close: reads until the server closes
                    s->client_fin = true;
                    p.draining = true;
                    p.pc++;
                    read(w, c, *s, SIZE_MAX);
                    if (s->server_closed && s->unread_by_client() == 0) finish(w, c, *s);
                    return;
                case Event::Kind::close:
                    p.pc = script.size();
                    break;
                case Event::Kind::rst:
                    s->rst = true;
                    finish(w, c, *s);
                    return;
                case Event::Kind::silent:
                    p.silent = true;
                    p.pc++;
                    if (s->server_closed) finish(w, c, *s);
                    return;
            }
            if (p.pc < script.size()) p.pc++;
        }
        s->client_fin = true;
        finish(w, c, *s);
    }

    // Queue ids of the messages some client read a 250 for.
    std::vector<std::string> acked;
    bool trace = false;

  private:
    struct Peer {
        size_t pc = 0;
        uint64_t resume_at_us = 0;  // in a pause
        bool awaiting = false;
        bool draining = false;
        bool silent = false;
        size_t replies = 0;  // whole replies read
        size_t awaited = 0;  // event 4s met so far: the nth waits for the nth reply
        std::string line;    // reply text read, not yet a whole line
        std::string code;    // of a multi-line reply in progress
        std::string heard;   // for RINGMAIL_FUZZ_TRACE
    };

    void finish(World& w, Client& c, Socket& s) {
        s.client_closed = true;
        c.state = Client::State::done;
        w.trace(0xe0f, c.id);
        if (trace)
            std::fprintf(stderr, "--- client %u read:\n%s\n", c.id, peers_[c.id].heard.c_str());
    }

    void read(World& w, Client& c, Socket& s, size_t max) {
        Peer& p = peers_[c.id];
        const size_t n = std::min(s.unread_by_client(), max);
        const std::string_view got(s.to_client.data() + s.to_client_off, n);
        if (trace) p.heard.append(got);
        for (const char ch : got) {
            p.line.push_back(ch);
            FUZZ_CHECK(p.line.size() <= kReplyLineMaxBytes);
            if (ch == '\n') {
                reply_line(w, c, p, p.line);
                p.line.clear();
            }
        }
        s.to_client_off += n;
        if (s.to_client_off == s.to_client.size()) {
            s.to_client.clear();
            s.to_client_off = 0;
        }
    }

    // "ddd" + ' ' or '-' + text + CRLF; a multi-line reply keeps its code (RFC 5321 §4.2.1).
    void reply_line(World& w, const Client& c, Peer& p, std::string_view line) {
        FUZZ_CHECK(line.size() >= 6 && line.ends_with("\r\n"));
        for (size_t i = 0; i < 3; i++)
            FUZZ_CHECK(line[i] >= '0' && line[i] <= '9');
        FUZZ_CHECK(line[0] >= '2' && line[0] <= '5');
        FUZZ_CHECK(line[3] == ' ' || line[3] == '-');
        const std::string_view text = line.substr(4, line.size() - 6);
        FUZZ_CHECK(text.find_first_of("\r\n") == std::string_view::npos);
        if (!p.code.empty()) FUZZ_CHECK(line.substr(0, 3) == p.code);
        if (line[3] == '-') {
            p.code = line.substr(0, 3);
            return;
        }
        p.code.clear();
        p.replies++;
        w.trace(0x4e91, c.id, line.size());
        constexpr std::string_view kQueued = "queued as ";
        const size_t q = text.find(kQueued);
        if (line.starts_with("250 ") && q != std::string_view::npos) {
            const std::string_view id = text.substr(q + kQueued.size());
            FUZZ_CHECK(id.size() == 16);
            acked.emplace_back(id);
        }
    }

    const Input& in_;
    std::vector<Peer> peers_;
};

Config make_config(const Input& in, const std::string& spool_dir) {
    const uint8_t* h = in.h;
    Config c;
    c.threads = 1;
    c.spool_dir = spool_dir;
    c.hostname = "mx.fuzz.test";
    c.relay_networks = {"10.0.0.0/8"};
    c.relay_domains = {"example.net"};
    c.delivery = false;
    c.log_level = "error";
    c.recipients_max = 20;
    c.message_size_max_bytes = 64 << 10;
    // Short timeouts: a client that stops talking costs a few hundred engine ticks, not
    // thousands.
    c.timeout_command_ms = 3000;
    c.timeout_data_ms = 2000;
    c.greet_delay_ms = 200;
    static constexpr uint32_t kConnections[] = {1, 2, 4, 16};
    c.connections_max = kConnections[h[0] & 3];
    c.connections_per_ip_max = (h[0] & 4) ? 1 : 200;
    c.commit_depth = ((h[0] >> 3) & 3) + 1;
    c.commit_window_us = (h[0] & 32) ? 500 : 0;
    c.ring_entries = (h[0] & 64) ? 8 : 256;
    static constexpr uint32_t kBufBytes[] = {512, 1024, 4096, 16384};
    static constexpr uint32_t kBufCount[] = {4, 16, 64, 256};
    c.recv_buffer_bytes = kBufBytes[h[1] & 3];
    c.recv_buffer_count = kBufCount[(h[1] >> 2) & 3];
    // Any record must fit an empty segment (core/program/config.cpp checks the same relation).
    const uint64_t record_max =
        c.message_size_max_bytes +
        uint64_t{c.recipients_max} * (limits::path_max_bytes + limits::mail_params_max_bytes + 8) +
        (64u << 10);
    c.segment_bytes = record_max + (64u << 10);
    c.staging_memory_max_bytes = c.message_size_max_bytes + (1u << 20);
    return c;
}

// What recovery reads in the spool now: every message a client saw acknowledged is there.
void verify_spool(const Config& cfg, const std::vector<std::string>& acked) {
    std::set<std::string> ids;
    for (uint32_t dir : core_dirs(cfg.spool_dir)) {
        spool::RecoveryStats st;
        std::string error;
        const bool ok = spool::recover_dir(
            spool::core_dir_path(cfg.spool_dir, dir), "",
            [&](const spool::RecoveredMessage& rm) {
                char id[16];
                smtp::format_queue_id(rm.message->id, id);
                FUZZ_CHECK(rm.message->body.starts_with("Received: "));
                ids.emplace(id, sizeof id);
            },
            st, &error);
        if (!ok) std::fprintf(stderr, "fuzz: recovery scan failed: %s\n", error.c_str());
        FUZZ_CHECK(ok);
    }
    for (const std::string& id : acked) {
        if (ids.count(id) == 0) std::fprintf(stderr, "fuzz: %s was acknowledged\n", id.c_str());
        FUZZ_CHECK(ids.count(id) != 0 && "every acknowledged message is in the spool");
    }
}

// Where the runs' spools go: memory when there is some (segments are zero-filled files).
std::string spool_parent() {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp != nullptr ? tmp : access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return base + "/ringmail-connection-fuzz-" + std::to_string(getpid());
}

// One engine life: recovery, the engine until a crash or a graceful stop. True when the life
// ended with the final stop (every client gone), false after a crash or a restart.
bool run_life(World& w, const Config& cfg, const smtp::RelayPolicy& policy,
              const std::vector<std::string>& acked) {
    FUZZ_CHECK(make_dirs(cfg.spool_dir));
    Recovered rec;
    FUZZ_CHECK(recover(cfg, rec));
    verify_spool(cfg, acked);  // what the last life acknowledged survived its end
    w.disk.new_epoch();
    Shared shared;
    shared.config = &cfg;
    shared.settings.hostname = cfg.hostname;
    shared.settings.message_size_max_bytes = cfg.message_size_max_bytes;
    shared.settings.recipients_max = cfg.recipients_max;
    shared.settings.junk_commands_max = cfg.junk_commands_max;
    shared.policy = policy;
    shared.settings.relay = &shared.policy;
    shared.mesh = std::make_unique<ChannelMesh<CoreMsg>>(1, cfg.channel_capacity);
    shared.ring_fds.assign(1, -1);
    shared.start_barrier = std::make_unique<std::barrier<>>(1);
    EngineStart st;
    const int listen_fd = w.new_fd();
    const int stop_fd = w.new_fd();
    st.listen_fds = {listen_fd};
    st.listen_kinds = {ListenerKind::plain};
    st.stop_fd = stop_fd;
    st.first_segment_seq = rec.next_segment_seq[0];
    st.first_id_counter = std::max<uint64_t>((rec.max_id >> 8) + 1, uint64_t(w.realtime_us()));
    st.queue = &rec.queues[0];
    st.recovered = &rec.pending[0];
    auto engine = std::make_unique<Engine>(0, shared, std::move(st));
    w.begin_epoch(engine.get(), listen_fd, stop_fd, 0, &rec.pending[0]);  // no delivery here
    try {
        FUZZ_CHECK(engine->run() == 0);
    } catch (const Crash&) {
        w.crash();
        return false;
    }
    engine.reset();
    w.end_epoch();
    FUZZ_CHECK(w.disk.open_fds() == 0);  // the engine closed every file it opened
    return w.final_stop();
}

uint64_t run(const Input& in, bool trace) {
    Options o;
    o.seed = uint64_t{in.h[3]} | uint64_t{in.h[4]} << 8;
    o.steps_max = kStepsMax;
    o.dir = spool_parent();
    std::error_code ec;
    std::filesystem::remove_all(o.dir, ec);
    std::filesystem::create_directories(o.dir);
    World w(o);
    install_sim_hooks(w);
    set_sim_backend(&w);
    ScriptedClients clients(in);
    clients.trace = trace;
    w.model = &clients;
    w.clients_total = in.clients;
    static constexpr uint64_t kGapsUs[] = {0,       100,     1000,      10'000,
                                           100'000, 300'000, 1'000'000, 3'000'000};
    w.arrival_gap_max_us = kGapsUs[in.h[5] >> 5];
    w.next_arrival_us = w.now_us();
    w.batch_bias = ((in.h[1] >> 4) & 3) + 1;
    static constexpr uint32_t kFaultsPpm[] = {0, 5'000, 50'000, 200'000};
    w.fault_rate_ppm = kFaultsPpm[in.h[1] >> 6];
    if (in.h[2] & 32) w.slow_disk_ppm = 20'000;
    if (in.h[0] & 128) w.crash_at_us = {w.now_us() + (uint64_t{in.h[5] & 31u} + 1) * 16'000};
    if (in.h[6] & 1) w.restart_at_us = {w.now_us() + (uint64_t(in.h[6] >> 1) + 1) * 8'000};
    const Config cfg = make_config(in, o.dir + "/spool");
    const smtp::RelayPolicy policy({*smtp::Cidr::parse("10.0.0.0/8")}, cfg.relay_domains);
    try {
        while (!run_life(w, cfg, policy, clients.acked)) {
        }
        FUZZ_CHECK(w.all_clients_done());
        Recovered last;
        FUZZ_CHECK(recover(cfg, last));
        verify_spool(cfg, clients.acked);
    } catch (const Failure& f) {
        std::fprintf(stderr, "fuzz: the simulated world failed: %s\n", f.what());
        FUZZ_CHECK(false && "the world's invariants hold");
    }
    set_sim_backend(nullptr);
    std::filesystem::remove_all(o.dir, ec);
    return w.digest();
}

}  // namespace
}  // namespace ringmail::sim

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace ringmail::sim;
    if (size < kHeaderBytes) return 0;
    static const bool trace = std::getenv("RINGMAIL_FUZZ_TRACE") != nullptr;
    static const bool twice = std::getenv("RINGMAIL_FUZZ_TWICE") != nullptr;
    // Disk faults and full disks are the input's doing, not news: the engine logs nothing
    // (below its lowest level) unless a trace is asked for.
    static const bool quiet = [] {
        ringmail::log::set_level(trace ? ringmail::log::Level::debug
                                       : static_cast<ringmail::log::Level>(-1));
        return true;
    }();
    (void)quiet;
    const Input in = parse(data, size);
    const uint64_t digest = run(in, trace);
    if (twice) FUZZ_CHECK(run(in, false) == digest);
    return 0;
}
