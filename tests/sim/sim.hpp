// sim.hpp — the deterministic simulator of one ringmail node (TigerBeetle's VOPR,
// FoundationDB's simulation): the real engine, connections and committer of ringmail_core_sim
// run over a simulated reactor (core/runtime/reactor.hpp built with RINGMAIL_SIM) whose
// operations this World executes against simulated TCP clients, MX hosts and DNS, and a disk
// whose durability it tracks. One 64-bit seed decides everything: client shapes, byte splits,
// completion order, latencies, faults, crash instants; the same seed gives the same run, event
// for event.
//
// Pieces: World (world.cpp: the SimBackend, its event loop and operations), Disk (disk.cpp:
// real files in a per-run directory, what is durable, crash images), the network and clients
// (clients.cpp: sockets, SMTP sessions of random shape that record every 250 they read),
// delivery's world (mx.cpp: DNS answers and MX hosts with faults, recording what they took),
// run.cpp (one seed: epochs of engine runs, crashes, recovery, invariants) and main.cpp (the
// ringmail-sim runner). Simulator code may throw (Failure, Crash); the engine never sees it
// except as the unwinding of a crash.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/runtime/reactor.hpp"
#include "dns/sim_resolver.hpp"

namespace ringmail {
class Engine;
struct RecoveredQueueEntry;
}  // namespace ringmail

namespace ringmail::sim {

// xoshiro256** seeded through splitmix64: fast, and the same sequence everywhere.
class Rng {
  public:
    explicit Rng(uint64_t seed) {
        for (uint64_t& w : s_) {
            seed += 0x9e3779b97f4a7c15ull;
            uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            w = z ^ (z >> 31);
        }
    }
    uint64_t next() {
        const uint64_t r = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return r;
    }
    uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
    uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }  // inclusive
    bool chance(uint32_t num, uint32_t den) { return below(den) < num; }

  private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

// An invariant broke: the run fails with this text (and its seed).
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// Thrown from SimBackend::wait to stop the engine at that instant, as a power cut would.
struct Crash {};

// Simulated descriptors start here, far above any real one (RLIMIT_NOFILE is much lower).
inline constexpr int kSimFdBase = 1 << 24;
inline constexpr uint64_t kNever = UINT64_MAX;

class World;

// --- disk --------------------------------------------------------------------------------

// Real files in the run's directory; what a crash would keep is tracked here. Bytes written
// and not yet covered by a completed fsync/fdatasync are not durable; neither is a new file's
// directory entry before its directory is fsynced. crash() rewrites every file to what a
// power cut may leave: the durable image plus, per pending write, all, none or a random
// subset of its 512-byte sectors.
class Disk {
  public:
    explicit Disk(Rng& rng) : rng_(rng) {}
    int open(const char* path, int flags, mode_t mode);  // real fd or -errno
    int close(int fd);
    int unlink(const char* path);
    int pwrite(int fd, const char* p, size_t n, uint64_t off);
    int pwritev(int fd, const iovec* iov, int n, uint64_t off, size_t limit);
    int pread(int fd, char* p, size_t n, uint64_t off);
    int sync(int fd);  // fsync or fdatasync: everything written so far is durable
    int fallocate(int fd, uint64_t off, uint64_t len);
    [[nodiscard]] bool is_file(int fd) const { return fds_.count(fd) != 0; }
    [[nodiscard]] size_t open_fds() const { return fds_.size(); }
    [[nodiscard]] std::string open_paths() const {
        std::string p;
        for (const auto& [fd, f] : fds_)
            p += " " + f.path;
        return p;
    }
    void crash();               // the power cut: files rewritten to what may survive, fds dropped
    void new_epoch();           // after recovery: what is on disk now is all durable
    uint64_t crashes_torn = 0;  // pending writes that were torn by a crash

  private:
    struct Pending {
        uint64_t off;
        std::string bytes;
        uint64_t resize = 0;  // 0: a write; else a size change to this (fallocate)
    };
    struct File {
        std::string path;
        std::string dir;
        std::string data;     // what the file holds now
        std::string durable;  // what a crash keeps for sure
        std::vector<Pending> pending;
        bool entry_durable = false;  // its directory was fsynced after it was created
    };
    struct Fd {
        std::string path;  // a File's key, or a directory
        bool dir = false;
    };
    void write_at(File& f, uint64_t off, const char* p, size_t n);
    Rng& rng_;
    std::map<std::string, File> files_;
    std::map<int, Fd> fds_;
};

// --- the network and its clients -------------------------------------------------------------

// One TCP connection. The engine's end is `fd`; the far end is a simulated client (inbound:
// `client`, mx < 0) or a simulated MX server's session (outbound, delivery: `mx`). "server"
// names the engine's side and "client" the far side in both directions.
struct Socket {
    int fd = -1;  // the engine's end
    uint32_t client = 0;
    int32_t mx = kInbound;  // outbound: index of its MxSession once connected
    uint32_t ip = 0;        // IPv4, host order
    std::string to_server;
    size_t to_server_off = 0;
    std::string to_client;
    size_t to_client_off = 0;
    uint32_t window = 65536;     // bytes the client's receive buffer takes before sends wait
    bool client_fin = false;     // the client shut its writing side
    bool client_closed = false;  // the client closed the socket: it reads nothing more
    bool rst = false;
    bool server_closed = false;
    uint64_t to_server_total = 0;    // outbound: bytes the MX server ever wrote
    uint64_t server_read_total = 0;  // bytes the engine ever received
    static constexpr int32_t kInbound = -1, kUnconnected = -2;
    [[nodiscard]] size_t unread_by_server() const { return to_server.size() - to_server_off; }
    [[nodiscard]] size_t unread_by_client() const { return to_client.size() - to_client_off; }
};

// One message a client tried to send, and what happened to it.
struct SentMessage {
    std::string token;
    std::string from;
    std::vector<std::string> rcpts;
    std::vector<bool> rcpt_ok;
    std::string content;  // what the spool must hold after our Received header
    bool bdat = false;
    bool complete = false;  // its last byte (".CRLF" or the LAST chunk) was sent
    std::string acked_id;   // from "250 ... queued as ID"
};

struct Client;

// Who the clients are and what they do. Without one, the World plays the seeded random
// clients of clients.cpp; the connection fuzz target (tests/fuzz/connection_fuzz.cpp) plays
// clients scripted by its input. A model's clients live in World::clients like the others:
// the World reads only their id, fd, state and next_us.
class ClientModel {
  public:
    // A new client arrives (the World's arrival schedule): push it to World::clients and put
    // its socket in the listener's backlog.
    virtual void spawn(World& w) = 0;
    // The client's time has come (next_us), or the server did something on its socket.
    virtual void step(World& w, Client& c) = 0;

  protected:
    ~ClientModel() = default;
};

// --- destinations: the DNS and the MX servers that delivery talks to (mx.cpp) ----------------

// One simulated MX host, its faults drawn from the seed.
struct MxHost {
    std::string name;
    uint32_t ip = 0;    // IPv4, host order
    bool sink = false;  // serves the senders' domain, where DSNs go: no permanent refusal
    bool pipelining = true, chunking = false;
    uint32_t rcpts_max = 0;  // 0: no limit; else "452 4.5.3" past it in a transaction
    // Per connection attempt: refused, or never answered (the engine's connect timeout).
    uint32_t refuse_ppm = 0, blackhole_ppm = 0;
    // Per reply: a 4xx, a 5xx, a reset or close instead of it, silence instead of it.
    uint32_t temp_ppm = 0, perm_ppm = 0, cut_ppm = 0, hang_ppm = 0;
    // Gone (refusing or silent, its open sessions reset) during these [from, to) instants.
    std::vector<std::pair<uint64_t, uint64_t>> down;
    bool down_silent = false;
};

// One mail domain as DNS sees it.
struct MailDomain {
    std::string name;
    enum class Kind : uint8_t { mx, implicit, nxdomain, null_mx, servfail, no_address } kind;
    std::vector<std::pair<uint32_t, uint16_t>> mx;                      // MxHost index, preference
    uint32_t servfail_ppm = 0, timeout_ppm = 0, host_tempfail_ppm = 0;  // per query
    uint64_t delay_max_ms = 0;
};

// The far end of one outbound connection: a scripted SMTP server (RFC 5321, PIPELINING,
// CHUNKING) whose replies may be faults.
struct MxSession {
    uint32_t host = 0;
    int fd = -1;
    enum class Phase : uint8_t { greet, command, data, bdat, gone } phase = Phase::greet;
    uint64_t next_us = 0;
    bool hung = false;  // silent from now on
    std::string in;     // bytes received, not yet taken
    size_t bdat_left = 0;
    bool bdat_last = false;
    bool in_tx = false, bdat_failed = false;
    std::string from;
    std::vector<std::string> rcpts;  // accepted in this transaction
    std::string body;
};

// One recipient's copy as an MX server took it (the reply 250 to its data was written).
struct Delivered {
    std::string token;  // the message's X-Sim-Token
    std::string rcpt;
    uint32_t life = 0;  // the engine's life then
    int fd = -1;        // the connection: its 250 may have been lost with it
    uint64_t reply_end = 0;
};
// A DSN taken by a senders' domain server, or found in the spool.
struct DsnSeen {
    std::string dsn_id;              // its queue id: the same for every copy of one DSN
    std::string token;               // of the bounced message, from its quoted headers
    std::vector<std::string> rcpts;  // Final-Recipient
};

struct Options {
    uint64_t seed = 0;
    uint64_t steps_max = 3'000'000;
    bool verbose = false;
    std::string dir;                 // the run's spool parent directory
    uint32_t recv_buffer_count = 0;  // provided receive buffers; 0: drawn from the seed
};

struct RunStats {
    uint64_t clients = 0, messages_sent = 0, acked = 0, recovered = 0, crashes = 0,
             unacked_recovered = 0, cqes = 0, steps = 0, faults = 0;
    uint64_t recv_enobufs = 0;  // receives that found no provided buffer
    // Delivery (seeds that simulate it).
    uint64_t delivered = 0, bounced = 0, dsns = 0, queued_at_end = 0, duplicates = 0,
             dsn_duplicates = 0, connects = 0, mx_faults = 0, dns_queries = 0;
};

class World final : public SimBackend {
  public:
    World(const Options& o);
    ~World();

    // SimBackend.
    void submit(Reactor& r, const io_uring_sqe* sqes, uint32_t n) override;
    void wait(Reactor& r, std::vector<SimCqe>& out) override;
    void detach(Reactor& r) override;

    // The seam of core/runtime/sim_hooks.hpp.
    uint64_t now_us() const { return now_us_; }
    int64_t realtime_us() const { return int64_t{1'800'000'000} * 1'000'000 + int64_t(now_us_); }
    int getpeername(int fd, sockaddr* addr, socklen_t* len);

    // Set by run.cpp for each engine life.
    // recovered: the messages the engine hands to delivery when its loop starts.
    void begin_epoch(Engine* engine, int listen_fd, int stop_fd, uint32_t life,
                     const std::vector<RecoveredQueueEntry>* recovered);
    void end_epoch();  // the engine returned (graceful stop): the process exits
    // The stop that ended the engine was the last one (every client had gone, the baseline
    // was checked), not a restart.
    [[nodiscard]] bool final_stop() const { return baseline_checked_; }
    void crash();  // the engine was abandoned at a crash: sockets reset, disk crashed

    void trace(uint64_t a, uint64_t b = 0, uint64_t c = 0);
    [[nodiscard]] uint64_t digest() const { return digest_; }
    [[nodiscard]] bool all_clients_done() const;
    [[nodiscard]] size_t server_sockets_open() const;

    // Clients (clients.cpp).
    void client_step(Client& c);
    void check_patience(Client& c, const Socket& s);
    void spawn_client();
    void wake_client(uint32_t id, uint64_t delay_us);
    Socket* socket_of(int fd);
    void wake_peer(Socket& s, uint64_t delay_us);

    // Destinations (mx.cpp).
    void make_destinations(uint64_t span_us);
    dns::SimDnsAnswer dns_query(std::string_view domain);
    int sim_socket(int domain, int type);
    int connect_verdict(const io_uring_sqe& sqe, bool* never);  // 0 or -errno
    void mx_connected(Socket& s);
    void mx_step(MxSession& m);
    [[nodiscard]] bool host_down(const MxHost& h) const;
    // The engine has delivery: the run goes on after the clients until the queue is empty
    // or past this many microseconds.
    bool delivery = false;
    uint64_t drain_us = 0;
    std::vector<MxHost> mx_hosts;
    std::vector<MailDomain> domains;
    std::vector<MxSession> mx_sessions;
    std::vector<Delivered> delivered;
    std::vector<DsnSeen> dsns_delivered;
    uint32_t life = 0;
    // Called with a spool segment's path just before the engine deletes it (run.cpp checks
    // that everything it holds is final).
    std::function<void(const std::string& path)> before_unlink;

    Rng rng;
    Disk disk;
    Options opt;
    RunStats stats;
    std::vector<SentMessage> messages;
    std::vector<std::unique_ptr<Client>> clients;
    std::map<int, Socket> sockets;  // by server fd
    std::deque<int> backlog;        // connected, not yet accepted

    // The run's shape, drawn from the seed (run.cpp).
    uint32_t clients_total = 0;
    uint64_t arrival_gap_max_us = 0;
    uint64_t next_arrival_us = 0;
    std::vector<uint64_t> crash_at_us;    // ascending
    std::vector<uint64_t> restart_at_us;  // graceful stops with clients connected, ascending
    uint32_t fault_rate_ppm = 0;          // per file operation
    uint64_t slow_disk_ppm = 0;
    uint32_t batch_bias = 2;
    bool trusted_only = false;
    ClientModel* model = nullptr;  // null: the random clients of clients.cpp

  private:
    struct Op {
        uint64_t seq = 0;
        Reactor* r = nullptr;
        io_uring_sqe sqe{};
        enum class St : uint8_t { linked, active, cancelled } st = St::active;
        uint64_t ready_at = 0;
        Op* link_next = nullptr;
        bool hard_link = false;
        bool fired = false;   // a multishot that posted at least one completion
        int connect_res = 0;  // IORING_OP_CONNECT: decided when it starts
        bool never = false;   // IORING_OP_CONNECT: no answer ever (a silent host)
    };
    void mx_write(MxSession& m, Socket& k, std::string_view text);
    void mx_reply(MxSession& m, Socket& k, int step, std::string ok);
    void mx_line(MxSession& m, Socket& k, std::string_view line);
    void mx_message_end(MxSession& m, Socket& k);
    void activate(Op& op);
    [[nodiscard]] bool ready(const Op& op) const;
    void execute(Op& op, std::vector<SimCqe>& out);
    void complete(Op& op, int res, uint32_t flags, std::vector<SimCqe>& out);
    void cancel(Op& cancel_op);
    void remove(Op& op);
    void run_clients();
    [[nodiscard]] uint64_t next_event_us() const;
    void check_iteration(Reactor& r);
    void check_baseline(Reactor& r);
    [[nodiscard]] std::string describe() const;
    int file_fault(uint8_t opcode);
    uint64_t file_latency_us(uint8_t opcode);
    void check_enobufs(const Op& op);

    uint64_t now_us_ = 1'000'000;
    uint64_t seq_ = 0;
    uint64_t digest_ = 1469598103934665603ull;
    std::vector<std::unique_ptr<Op>> ops_;  // in submission order
    Engine* engine_ = nullptr;
    const std::vector<RecoveredQueueEntry>* recovered_ = nullptr;
    int listen_fd_ = -1;
    int stop_fd_ = -1;
    bool stop_requested_ = false;
    uint64_t settle_deadline_us_ = 0;
    uint64_t drain_deadline_us_ = 0;
    bool baseline_checked_ = false;
    int next_fd_ = kSimFdBase;
    size_t crash_index_ = 0;
    size_t restart_index_ = 0;
    // A receive that found the ring empty: what had been published then, and how many timers
    // had fired (the engine's tick), per socket.
    struct Starved {
        uint64_t published = 0;
        uint64_t timeouts = 0;
    };
    std::map<int, Starved> starved_;
    uint64_t timeouts_fired_ = 0;

  public:
    int new_fd() { return next_fd_++; }
};

// Routes the engine's clock, randomness and descriptor calls (core/runtime/sim_hooks.hpp) to w.
void install_sim_hooks(World& w);

// One seed, start to finish: returns normally when every invariant held; throws Failure.
void run_seed(const Options& o, RunStats& stats, uint64_t& digest);

}  // namespace ringmail::sim
