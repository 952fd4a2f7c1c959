// tool_source.hpp — `ringmail-bench source`: the SMTP load generator.
//
// Who calls it: bench/ringmail_bench_main.cpp after parsing flags. It runs one io_uring reactor
// thread per core, each driving its share of --sessions SMTP client connections, and prints one
// report (human or JSON) on stdout at the end; a live progress line goes to stderr when stderr
// is a terminal. Returns the process exit code (0 when the run completed; reply codes, even
// failures, are results, not errors).
//
// Guarantees:
//  - closed loop: a session starts its next message as soon as the last reply allows;
//  - open loop (--rate): message k is due at start + k/rate; its latency is measured from that
//    intended time, so a stalled server shows up as latency (no coordinated omission);
//  - with PIPELINING (requested and advertised), MAIL, every RCPT and DATA go in one send, and
//    the message text, its terminator and the next MAIL/RCPT/DATA go in one send (RFC 2920);
//  - message seqs are unique across threads in one run: with --messages N they are 0..N-1;
//  - with TLS (STARTTLS, RFC 3207, or implicit, RFC 8314) nothing but the TLS handshake
//    crosses the connection in clear after the 220 to STARTTLS; EHLO is repeated inside TLS and
//    AUTH PLAIN (RFC 4616) is sent only after it. A connection keeps its TLS session for all its
//    messages (--messages-per-connection sets how many: 1 measures handshakes). TLS is
//    opportunistic: the server's certificate is not verified (a load generator, not a client
//    that must trust its peer).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/tool_message.hpp"

namespace ringmail::bench {

enum class SourceTls : uint8_t { none, starttls, implicit };

struct SourceConfig {
    std::string host = "127.0.0.1";
    uint16_t port = 25;
    uint32_t threads = 0;  // 0: online CPUs
    uint32_t sessions = 20;
    uint64_t messages = 0;                 // 0 with duration 0: 10000
    double duration_s = 0;                 // stop starting messages after this long
    uint32_t messages_per_connection = 0;  // 0: unlimited
    uint32_t recipients = 1;
    uint32_t domains = 1;
    SizeDist sizes;
    bool pipelining = true;
    std::string from = "bench@source.ringmail-bench.test";
    std::string to_domain = "sink.ringmail-bench.test";
    std::vector<std::string> source_ips;
    double rate = 0;    // messages/s over all threads; 0: closed loop
    bool idle = false;  // hold --sessions connections open (after EHLO) for --duration
    SourceTls tls = SourceTls::none;
    std::string auth_user;  // non-empty: AUTH PLAIN after the (last) EHLO
    std::string auth_password;
    bool json = false;
    bool progress = true;  // only when stderr is a terminal
};

[[nodiscard]] int run_source(const SourceConfig& cfg);

}  // namespace ringmail::bench
