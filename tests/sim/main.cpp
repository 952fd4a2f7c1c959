// main.cpp — ringmail-sim, the runner of the deterministic simulator (sim.hpp).
//
//   ringmail-sim --seeds N [--seed S] | --list S1,S2,... [--steps K] [--verbose] [--no-fork]
//                [--check-determinism] [--recv-buffers N]
//
// --recv-buffers gives the engine N provided receive buffers instead of the seed's choice
// (the rest of the run is drawn as without it): few buffers and many clients keep receives
// starved.
// Runs seeds S..S+N-1, each in a forked child so that an engine abort (a broken RM_ASSERT) is
// reported with its seed instead of ending the runner; prints every failing seed with the
// command that replays it and, last, "N seeds, F failures". Exits non-zero on any failure.
// --check-determinism runs every seed twice and fails a seed whose two event digests differ.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/base/limits.hpp"
#include "core/base/log.hpp"
#include "tests/sim/sim.hpp"

using namespace ringmail;

namespace {

struct Args {
    uint64_t seed = 1;
    uint64_t seeds = 1;
    uint64_t steps = 3'000'000;
    bool verbose = false;
    bool fork = true;
    bool determinism = false;
    uint64_t recv_buffers = 0;
    std::vector<uint64_t> list;  // --list: these seeds instead of a range
};

struct Outcome {
    bool ok = false;
    uint64_t digest = 0;
    std::string text;  // the result line, or why it failed
    std::string log;   // what the engine logged (shown on failure)
};

constexpr char kResult[] = "@@result ";

// The run of one seed, in this process; prints its result line on stderr.
int run_here(const Args& a, uint64_t seed, const std::string& base) {
    sim::Options o;
    o.seed = seed;
    o.steps_max = a.steps;
    o.verbose = a.verbose;
    o.dir = base + "/seed-" + std::to_string(seed);
    o.recv_buffer_count = static_cast<uint32_t>(a.recv_buffers);
    std::filesystem::remove_all(o.dir);
    std::filesystem::create_directories(o.dir);
    log::set_level(log::Level::error);
    if (const char* level = getenv("RINGMAIL_SIM_LOG")) log::set_level(level);  // e.g. debug
    sim::RunStats st;
    uint64_t digest = 0;
    int rc = 0;
    try {
        sim::run_seed(o, st, digest);
        fprintf(stderr,
                "%sok digest=%016" PRIx64 " clients=%" PRIu64 " messages=%" PRIu64 " acked=%" PRIu64
                " recovered=%" PRIu64 " unacked_recovered=%" PRIu64 " crashes=%" PRIu64
                " faults=%" PRIu64 " steps=%" PRIu64 " enobufs=%" PRIu64 " delivered=%" PRIu64
                " bounced=%" PRIu64 " dsns=%" PRIu64 " queued=%" PRIu64 " duplicates=%" PRIu64
                " dsn_duplicates=%" PRIu64 " connects=%" PRIu64 " mx_faults=%" PRIu64
                " dns=%" PRIu64 "\n",
                kResult, digest, st.clients, st.messages_sent, st.acked, st.recovered,
                st.unacked_recovered, st.crashes, st.faults, st.steps, st.recv_enobufs,
                st.delivered, st.bounced, st.dsns, st.queued_at_end, st.duplicates,
                st.dsn_duplicates, st.connects, st.mx_faults, st.dns_queries);
    } catch (const sim::Failure& f) {
        fprintf(stderr, "%sFAIL %s\n", kResult, f.what());
        rc = 1;
    }
    std::error_code ec;
    std::filesystem::remove_all(o.dir, ec);
    return rc;
}

Outcome run_forked(const Args& a, uint64_t seed, const std::string& base) {
    Outcome out;
    int p[2];
    if (pipe(p) != 0) {
        out.text = "pipe failed";
        return out;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        dup2(p[1], 1);
        close(p[1]);
        _exit(run_here(a, seed, base));
    }
    close(p[1]);
    std::string all;
    char buf[65536];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) all.append(buf, static_cast<size_t>(n));
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    const size_t r = all.rfind(kResult);
    if (r != std::string::npos) {
        out.text = all.substr(r + strlen(kResult));
        while (!out.text.empty() && out.text.back() == '\n')
            out.text.pop_back();
        out.log = all.substr(0, r);
    } else {
        out.log = all;
    }
    if (WIFSIGNALED(status)) {
        out.text = std::string("the engine died: ") + strsignal(WTERMSIG(status));
        return out;
    }
    out.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && out.text.starts_with("ok ");
    if (out.ok) out.digest = strtoull(out.text.c_str() + strlen("ok digest="), nullptr, 16);
    return out;
}

Outcome run_one(const Args& a, uint64_t seed, const std::string& base) {
    if (a.fork) return run_forked(a, seed, base);
    Outcome out;
    out.ok = run_here(a, seed, base) == 0;
    out.text = out.ok ? "ok" : "failed (see above)";
    return out;
}

void tail(const std::string& log, size_t lines) {
    if (log.empty()) return;
    size_t at = log.size();
    for (size_t i = 0; i <= lines && at > 0; i++)
        at = log.rfind('\n', at - 1);
    fputs(log.c_str() + (at == std::string::npos ? 0 : at + 1), stdout);
}

// The runs' spools: $TMPDIR when set, else memory (/dev/shm) when there is one, else the
// system's temporary directory. Each seed writes megabytes of zero-filled segments that are
// deleted at once: on a disk, the writeback of that churn made the runner wait for I/O longer
// than it computed.
std::filesystem::path temp_dir() {
    if (getenv("TMPDIR") == nullptr && access("/dev/shm", W_OK) == 0) return "/dev/shm";
    return std::filesystem::temp_directory_path();
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; i++) {
        const std::string s = argv[i];
        auto num = [&](uint64_t& v) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ringmail-sim: %s needs a value\n", s.c_str());
                exit(2);
            }
            v = strtoull(argv[++i], nullptr, 0);
        };
        if (s == "--seed")
            num(a.seed);
        else if (s == "--seeds")
            num(a.seeds);
        else if (s == "--steps")
            num(a.steps);
        else if (s == "--verbose")
            a.verbose = true;
        else if (s == "--no-fork")
            a.fork = false;
        else if (s == "--check-determinism")
            a.determinism = true;
        else if (s == "--recv-buffers")
            num(a.recv_buffers);
        else if (s == "--list" && i + 1 < argc) {
            for (const char* p = argv[++i]; *p;) {
                char* end;
                a.list.push_back(strtoull(p, &end, 0));
                p = *end == ',' ? end + 1 : end;
                if (end == p && *p) break;
            }
        } else {
            fprintf(stderr,
                    "usage: ringmail-sim --seeds N [--seed S] | --list S1,S2,... [--steps K] "
                    "[--verbose] [--no-fork] [--check-determinism] [--recv-buffers N]\n");
            return 2;
        }
    }
    if (a.recv_buffers > limits::recv_buffer_count_max) {
        fprintf(stderr, "ringmail-sim: --recv-buffers is at most %u\n",
                limits::recv_buffer_count_max);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    // glibc reports heap corruption on the terminal unless told to use stderr, which the
    // runner captures.
    setenv("LIBC_FATAL_STDERR_", "1", 1);
    const std::string base = (temp_dir() / ("ringmail-sim-" + std::to_string(getpid()))).string();
    std::filesystem::create_directories(base);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t failures = 0;
    if (a.list.empty())
        for (uint64_t seed = a.seed; seed < a.seed + a.seeds; seed++)
            a.list.push_back(seed);
    a.seeds = a.list.size();
    for (uint64_t seed : a.list) {
        Outcome o = run_one(a, seed, base);
        if (o.ok && a.determinism) {
            Outcome again = run_one(a, seed, base);
            if (!again.ok || again.digest != o.digest) {
                o.ok = false;
                o.text = "not deterministic: digest " + o.text + " then " + again.text;
            }
        }
        if (a.verbose || !o.ok) printf("seed %" PRIu64 ": %s\n", seed, o.text.c_str());
        if (!o.ok) {
            failures++;
            tail(o.log, 25);
            printf("  replay: ringmail-sim --seed %" PRIu64 " --seeds 1 --verbose\n", seed);
        }
        fflush(stdout);
    }
    std::error_code ec;
    std::filesystem::remove_all(base, ec);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (a.verbose) printf("%.2f s, %.1f seeds/s\n", secs, static_cast<double>(a.seeds) / secs);
    printf("%" PRIu64 " seeds, %" PRIu64 " failures\n", a.seeds, failures);
    return failures == 0 ? 0 : 1;
}
