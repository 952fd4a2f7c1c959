// config.cpp — flags with CLI11; --config FILE takes the same keys as "key = value" lines.
#include "core/base/config.hpp"

#include "core/engine/engine.hpp"
#include "core/queue/scheduler.hpp"
#include "dns/destination.hpp"

#include <arpa/inet.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdarg>

namespace ringmail {
namespace {

bool parse_listen(const std::string& text, ListenAddress& out) {
    // "127.0.0.1:2525", "[::1]:2525", ":2525" (all IPv4 addresses)
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    std::string host = text.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    if (host.empty()) host = "0.0.0.0";
    // Only numeric addresses: the listener binds with inet_pton, and a name would fail there,
    // after recovery, rather than here.
    unsigned char bin[16];
    if (inet_pton(AF_INET, host.c_str(), bin) != 1 && inet_pton(AF_INET6, host.c_str(), bin) != 1)
        return false;
    unsigned port = 0;
    auto p = text.data() + colon + 1, e = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(p, e, port);
    if (ec != std::errc() || ptr != e || port == 0 || port > 65535) return false;
    out.host = host;
    out.port = static_cast<uint16_t>(port);
    return true;
}

}  // namespace

bool hostname_ok(std::string_view name) {
    if (name.empty() || name.size() > limits::domain_max_bytes) return false;
    size_t label = 0;  // bytes of the label being read
    char prev = '.';
    for (const char ch : name) {
        if (ch == '.') {
            if (label == 0 || prev == '-') return false;
            label = 0;
        } else {
            const bool ldh = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                             (ch >= '0' && ch <= '9') || ch == '-';
            if (!ldh || (label == 0 && ch == '-') || ++label > limits::domain_label_max_bytes)
                return false;
        }
        prev = ch;
    }
    return label > 0 && prev != '-';
}

namespace {

std::string default_hostname() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
    return buf;
}

// A value the code after start cannot live with: one line on stderr, exit code 2.
int refuse(const char* format, ...) __attribute__((format(printf, 1, 2)));
int refuse(const char* format, ...) {
    va_list ap;
    va_start(ap, format);
    fputs("ringmail: ", stderr);
    vfprintf(stderr, format, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 3;
}

}  // namespace

int parse_config(int argc, char** argv, Config& c) {
    CLI::App app{"ringmail — a durable, thread-per-core mail relay on io_uring"};
    app.set_config("--config", "", "read flags from FILE (key = value lines)");
    app.set_version_flag("--version", RINGMAIL_VERSION);
    app.get_formatter()->column_width(44);
    // One line, and the caller exits 2: a usage error is not a crash.
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return std::string("ringmail: ") + e.what() + "\n";
    });

    std::vector<std::string> listen{"127.0.0.1:2525"};
    std::vector<std::string> networks{"127.0.0.0/8", "::1/128"};
    app.add_option("--listen", listen, "address:port to accept SMTP on (repeatable)")
        ->capture_default_str()
        ->delimiter(',');
    app.add_option("--threads", c.threads, "reactor threads, one per core (0: online CPUs)")
        ->capture_default_str()
        ->check(CLI::Range(0u, limits::threads_max));
    app.add_option("--spool-dir", c.spool_dir, "spool directory")->capture_default_str();
    app.add_option("--hostname", c.hostname,
                   "name in the greeting and Received headers (a domain name: labels of "
                   "letters, digits and hyphens, 1-63 octets each, 255 in all)")
        ->default_str("the host name");
    app.add_option("--relay-networks", networks, "client networks that may relay anywhere")
        ->capture_default_str()
        ->delimiter(',');
    app.add_option("--relay-domains", c.relay_domains,
                   "domains anyone may send to (.example.com: its subdomains)")
        ->delimiter(',');
    app.add_option("--max-recipients", c.recipients_max, "recipients per message")
        ->capture_default_str()
        ->check(CLI::Range(limits::rfc_recipients_min, limits::recipients_max_max));
    app.add_option("--max-message-size", c.message_size_max_bytes,
                   "bytes per message (advertised in SIZE)")
        ->capture_default_str()
        ->check(CLI::Range(limits::message_size_max_bytes_min, limits::message_size_max_bytes_max));
    app.add_option("--max-connections", c.connections_max,
                   "connections in all (split over threads)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 10000000u));
    app.add_option("--max-connections-per-ip", c.connections_per_ip_max,
                   "connections from one client address")
        ->capture_default_str()
        ->check(CLI::Range(1u, 10000000u));
    app.add_option("--max-junk-commands", c.junk_commands_max,
                   "bad or unknown commands before 421 and disconnect")
        ->capture_default_str()
        ->check(CLI::Range(0u, 1000000u));
    app.add_option("--timeout-command-ms", c.timeout_command_ms, "idle time waiting for a command")
        ->capture_default_str()
        ->check(CLI::Range(limits::timeout_ms_min, limits::timeout_ms_max));
    app.add_option("--timeout-data-ms", c.timeout_data_ms, "idle time inside DATA/BDAT")
        ->capture_default_str()
        ->check(CLI::Range(limits::timeout_ms_min, limits::timeout_ms_max));
    app.add_option("--greet-delay-ms", c.greet_delay_ms,
                   "greeting delay for clients outside relay networks; talking first is refused")
        ->capture_default_str()
        ->check(CLI::Range(0u, limits::greet_delay_ms_max));
    app.add_option("--commit-window-us", c.commit_window_us,
                   "extra wait to grow a commit batch (0: commit as soon as the disk is free)")
        ->capture_default_str()
        ->check(CLI::Range(0u, limits::commit_window_us_max));
    app.add_option("--commit-depth", c.commit_depth,
                   "group commits (write + fdatasync) in flight per thread; a new batch starts "
                   "while earlier ones sync, answers stay in order")
        ->capture_default_str()
        ->check(CLI::Range(1u, limits::commit_depth_max));
    app.add_option("--ring-entries", c.ring_entries, "io_uring submission entries per thread")
        ->capture_default_str()
        ->check(CLI::Range(limits::ring_entries_min, limits::ring_entries_max));
    app.add_option("--recv-buffer-bytes", c.recv_buffer_bytes, "bytes per receive buffer")
        ->capture_default_str()
        ->check(CLI::Range(static_cast<uint32_t>(limits::command_line_max_bytes),
                           limits::recv_buffer_bytes_max));
    app.add_option("--recv-buffer-count", c.recv_buffer_count,
                   "receive buffers per thread (power of two; bytes x count at most 1 GiB)")
        ->capture_default_str()
        ->check(CLI::Range(limits::recv_buffer_count_min, limits::recv_buffer_count_max));
    app.add_option("--channel-capacity", c.channel_capacity,
                   "entries of each core-to-core channel (power of two)")
        ->capture_default_str()
        ->check(CLI::Range(limits::channel_capacity_min, limits::channel_capacity_max));
    app.add_option("--segment-size", c.segment_bytes,
                   "bytes preallocated per spool segment (halved, down to 1 MiB, while the disk "
                   "has less room)")
        ->capture_default_str()
        ->check(CLI::Range(limits::segment_bytes_min, limits::segment_bytes_max));
    app.add_option("--staging-memory", c.staging_memory_max_bytes,
                   "bytes per thread for message text not yet committed")
        ->capture_default_str();
    app.add_flag("!--no-delivery", c.delivery,
                 "accept and queue only; deliver nothing (benchmarks, maintenance)");
    app.add_option("--dns-server", c.dns_servers, "DNS server IP[:PORT] (repeatable)")
        ->default_str("/etc/resolv.conf");
    app.add_option("--smarthost", c.smarthost, "send everything to HOST[:PORT] instead of MX");
    app.add_option("--delivery-port", c.delivery_port, "port of MX hosts")
        ->capture_default_str()
        ->check(CLI::Range(uint16_t{1}, uint16_t{65535}));
    app.add_option("--max-connections-per-destination", c.connections_per_destination_max,
                   "concurrent connections to one destination (MX host set)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 10000u));
    app.add_option("--max-messages-per-connection", c.messages_per_connection_max,
                   "messages sent over one outbound connection before QUIT")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--max-recipients-per-transaction", c.recipients_per_transaction_max,
                   "recipients per outbound transaction (lowered to what the server allows)")
        ->capture_default_str()
        ->check(CLI::Range(1u, static_cast<uint32_t>(limits::job_rcpts_max)));
    app.add_option("--active-queue-max", c.active_queue_max,
                   "messages per thread in a delivery attempt at once; more wait, due, in the "
                   "queue (Postfix's qmgr_message_active_limit)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 10000000u));
    app.add_option("--max-destinations", c.destinations_max,
                   "destinations (MX host sets) remembered per thread; idle ones past this "
                   "are forgotten, least recently used first")
        ->capture_default_str()
        ->check(CLI::Range(1u, 10000000u));
    app.add_option("--retry-schedule", c.retry_schedule,
                   "FIRST:MAX exponential retry delays, with jitter (units ms s m h d)")
        ->capture_default_str();
    app.add_option("--max-queue-lifetime", c.queue_lifetime,
                   "time in the queue before a message bounces (4.4.7)")
        ->capture_default_str();
    app.add_option("--max-outbound-connections", c.outbound_connections_max,
                   "outbound connections per thread")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--timeout-connect-ms", c.timeout_connect_ms, "outbound TCP connect")
        ->capture_default_str()
        ->check(CLI::Range(limits::timeout_ms_min, limits::timeout_ms_max));
    app.add_option("--outbound-timeout-percent", c.outbound_timeout_scale_percent,
                   "scale of the RFC 5321 client timeouts (100: as the RFC says)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000u));
    app.add_option("--outbound-idle-ms", c.outbound_idle_ms,
                   "how long an idle outbound connection waits for the next message")
        ->capture_default_str()
        ->check(CLI::Range(limits::timeout_ms_min, limits::timeout_ms_max));
    app.add_option("--outbound-tls", c.outbound_tls,
                   "STARTTLS to destinations: may (when offered; clear after a failed "
                   "handshake), encrypt (defer rather than send in clear), none")
        ->capture_default_str()
        ->check(CLI::IsMember({"may", "encrypt", "none"}));
    app.add_option("--compact-after", c.compact_after,
                   "age of a spool segment whose few live messages are copied forward")
        ->capture_default_str();
    app.add_option("--max-received-headers", c.received_headers_max,
                   "Received headers beyond which a message is a loop (5.4.6)")
        ->capture_default_str()
        ->check(CLI::Range(1u, limits::received_headers_max_max));
    app.add_flag("!--no-fsync", c.fsync,
                 "DANGEROUS, benchmarks only: answer 250 without fdatasync");
    // --- TLS and AUTH (server side) ---
    std::vector<std::string> submission_listen, smtps_listen;
    app.add_option("--tls-cert", c.tls_cert_file, "PEM certificate chain (enables STARTTLS)");
    app.add_option("--tls-key", c.tls_key_file, "PEM private key of --tls-cert");
    app.add_option("--submission-listen", submission_listen,
                   "address:port for submission: STARTTLS, then AUTH before MAIL (587)")
        ->delimiter(',');
    app.add_option("--smtps-listen", smtps_listen,
                   "address:port for submission over implicit TLS (465, RFC 8314)")
        ->delimiter(',');
    app.add_option("--auth-users", c.auth_users_file,
                   "AUTH users file: user:hash lines, crypt(3) hashes ($y$, $6$)");
    app.add_option("--auth-failures-max", c.auth_failures_max,
                   "AUTH failures from one address (in the window) before 421")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000u));
    app.add_option("--auth-failure-delay-ms", c.auth_failure_delay_ms,
                   "delay of the first AUTH failure reply; doubles with each failure")
        ->capture_default_str()
        ->check(CLI::Range(0u, 60000u));
    app.add_option("--auth-failure-window-ms", c.auth_failure_window_ms,
                   "quiet time after which an address's AUTH failures are forgotten")
        ->capture_default_str()
        ->check(CLI::Range(1000u, 86400000u));
    std::string metrics_listen;
    app.add_option("--metrics-listen", metrics_listen,
                   "IP:PORT to serve Prometheus metrics on (GET /metrics); off when not given");
    app.add_flag("--check-config", c.check_config,
                 "check the flags and the files they name (TLS certificate and key, AUTH users, "
                 "spool directory), print the result and exit: 0 good, 2 not");
    app.add_option("--log-format", c.log_format,
                   "text, or json: one object per line with stable keys (see the README)")
        ->capture_default_str()
        ->check(CLI::IsMember({"text", "json"}));
    app.add_option("--log-level", c.log_level, "error, warn, info or debug")
        ->capture_default_str()
        ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help is a "parse error" of exit code 0; every other one is a usage error: 2.
        return app.exit(e) == 0 ? 1 : 3;
    }

    // Every ordered pair of cores has a channel; its slots are touched as it cycles.
    auto channel_bytes = [&](uint64_t threads) {
        return threads * (threads - 1) * c.channel_capacity * sizeof(CoreMsg);
    };
    if (c.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c.threads =
            std::clamp<uint32_t>(n > 0 ? static_cast<uint32_t>(n) : 1, 1, limits::threads_max);
        // A default is lowered rather than refused: a machine with many CPUs still starts.
        const uint32_t online = c.threads;
        while (c.threads > 1 && channel_bytes(c.threads) > limits::channel_memory_max_bytes)
            c.threads--;
        if (c.threads < online)
            fprintf(stderr,
                    "ringmail: %u threads, not one per each of the %u CPUs: the channels "
                    "between more would take over %llu bytes (set --threads)\n",
                    c.threads, online,
                    static_cast<unsigned long long>(limits::channel_memory_max_bytes));
    }
    auto pow2 = [](uint32_t v) { return (v & (v - 1)) == 0; };
    if (!pow2(c.recv_buffer_count))
        return refuse("--recv-buffer-count %u: must be a power of two", c.recv_buffer_count);
    if (!pow2(c.channel_capacity))
        return refuse("--channel-capacity %u: must be a power of two", c.channel_capacity);
    if (uint64_t{c.recv_buffer_bytes} * c.recv_buffer_count > limits::recv_buffer_memory_max_bytes)
        return refuse(
            "--recv-buffer-bytes x --recv-buffer-count must be at most %llu bytes "
            "per thread",
            static_cast<unsigned long long>(limits::recv_buffer_memory_max_bytes));
    if (channel_bytes(c.threads) > limits::channel_memory_max_bytes)
        return refuse(
            "--threads %u with --channel-capacity %u needs %llu bytes of channels; at "
            "most %llu: lower one of them",
            c.threads, c.channel_capacity,
            static_cast<unsigned long long>(channel_bytes(c.threads)),
            static_cast<unsigned long long>(limits::channel_memory_max_bytes));
    if (c.hostname.empty()) {
        c.hostname = default_hostname();
        if (!hostname_ok(c.hostname)) {
            fprintf(stderr,
                    "ringmail: the host name %s is not a domain name; using localhost "
                    "(set --hostname)\n",
                    c.hostname.c_str());
            c.hostname = "localhost";
        }
    } else if (!hostname_ok(c.hostname)) {
        // It is the greeting, the EHLO name sent to other servers and the Received "by".
        return refuse(
            "--hostname %.300s: expected a domain name of at most %zu octets, labels "
            "of letters, digits and hyphens, 1-%zu octets each",
            c.hostname.c_str(), limits::domain_max_bytes, limits::domain_label_max_bytes);
    }
    if (c.staging_memory_max_bytes < c.message_size_max_bytes + (1u << 20)) {
        fprintf(stderr, "ringmail: --staging-memory must exceed --max-message-size by 1 MiB\n");
        return 3;
    }
    // Any single message record must fit an empty segment: its text, its envelope (at most
    // recipients × (path + parameters + lengths)) and headers.
    uint64_t record_max =
        c.message_size_max_bytes +
        uint64_t{c.recipients_max} * (limits::path_max_bytes + limits::mail_params_max_bytes + 8) +
        (64u << 10);
    if (c.segment_bytes < record_max) {
        fprintf(stderr, "ringmail: --segment-size must be at least %llu for these limits\n",
                static_cast<unsigned long long>(record_max));
        return 3;
    }
    sched::RetryPolicy rp;
    if (!sched::parse_retry_schedule(c.retry_schedule, &rp) ||
        rp.max_ms > limits::duration_max_ms) {
        fprintf(stderr,
                "ringmail: --retry-schedule %s: expected FIRST:MAX, e.g. 5m:1h, "
                "0 < FIRST <= MAX <= 3650d\n",
                c.retry_schedule.c_str());
        return 3;
    }
    if (!sched::parse_duration_ms(c.queue_lifetime, &c.queue_lifetime_ms) ||
        c.queue_lifetime_ms == 0 || c.queue_lifetime_ms > limits::duration_max_ms) {
        fprintf(stderr,
                "ringmail: --max-queue-lifetime %s: expected a duration up to 3650d, e.g. 5d\n",
                c.queue_lifetime.c_str());
        return 3;
    }
    if (!sched::parse_duration_ms(c.compact_after, &c.compact_after_ms) ||
        c.compact_after_ms == 0 || c.compact_after_ms > limits::duration_max_ms) {
        fprintf(stderr, "ringmail: --compact-after %s: expected a duration up to 3650d, e.g. 1h\n",
                c.compact_after.c_str());
        return 3;
    }
    if (!c.smarthost.empty() && !dns::parse_smarthost(c.smarthost)) {
        fprintf(stderr,
                "ringmail: --smarthost %s: expected HOST[:PORT], IPV4[:PORT] or [ADDRESS][:PORT]\n",
                c.smarthost.c_str());
        return 3;
    }
    if (c.dns_servers.size() > dns::dns_servers_max)
        return refuse("at most %zu --dns-server", dns::dns_servers_max);
    for (const auto& d : c.dns_servers)
        if (!dns::parse_dns_server(d))
            return refuse("--dns-server %s: expected IP[:PORT] or [IPV6]:PORT", d.c_str());
    c.retry_first_ms = rp.first_ms;
    c.retry_max_ms = rp.max_ms;
    c.listen.clear();
    for (const auto& l : listen) {
        ListenAddress a;
        if (!parse_listen(l, a)) {
            fprintf(stderr, "ringmail: --listen %s: expected IP:PORT (port 1-65535)\n", l.c_str());
            return 3;
        }
        c.listen.push_back(a);
    }
    if (!metrics_listen.empty()) {
        ListenAddress a;
        if (!parse_listen(metrics_listen, a)) {
            fprintf(stderr, "ringmail: --metrics-listen %s: expected IP:PORT (port 1-65535)\n",
                    metrics_listen.c_str());
            return 3;
        }
        c.metrics_listen = a;
    }
    const std::pair<const std::vector<std::string>*, ListenerKind> tls_listeners[] = {
        {&submission_listen, ListenerKind::submission}, {&smtps_listen, ListenerKind::smtps}};
    for (const auto& [texts, kind] : tls_listeners) {
        for (const auto& l : *texts) {
            ListenAddress a;
            if (!parse_listen(l, a)) {
                fprintf(stderr, "ringmail: %s: expected IP:PORT (port 1-65535)\n", l.c_str());
                return 3;
            }
            a.kind = kind;
            c.listen.push_back(a);
        }
    }
    // The second bind of one address would fail after recovery, with exit code 1.
    for (size_t i = 0; i < c.listen.size(); i++)
        for (size_t k = 0; k < i; k++)
            if (c.listen[i].host == c.listen[k].host && c.listen[i].port == c.listen[k].port)
                return refuse(
                    "%s:%u is listed twice (--listen, --submission-listen, "
                    "--smtps-listen)",
                    c.listen[i].host.c_str(), c.listen[i].port);
    if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
        fprintf(stderr, "ringmail: --tls-cert and --tls-key go together\n");
        return 3;
    }
    // Submission needs AUTH, and AUTH is offered only over TLS: refuse a setup where nobody
    // could ever send, rather than discover it at the first client.
    const bool submission = !submission_listen.empty() || !smtps_listen.empty();
    if ((submission || !c.auth_users_file.empty()) &&
        (c.tls_cert_file.empty() || (submission && c.auth_users_file.empty()))) {
        fprintf(stderr,
                "ringmail: --submission-listen, --smtps-listen and --auth-users need --tls-cert "
                "and --tls-key; submission listeners need --auth-users\n");
        return 3;
    }
    c.relay_networks = networks;
    return 0;
}

}  // namespace ringmail
