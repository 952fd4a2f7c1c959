// config.hpp — the settings of one ringmail process, from flags (and --config FILE).
//
// Defaults come from core/base/limits.hpp; parse_config() is the only place that reads argv.
// The result is immutable once the reactors start, and each reactor reads it without locks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/limits.hpp"

namespace ringmail {

// What a listening socket serves: SMTP (25), submission with STARTTLS (587, RFC 6409) or
// submission over implicit TLS (465, RFC 8314).
enum class ListenerKind : uint8_t { plain, submission, smtps };

struct ListenAddress {
    std::string host;  // "127.0.0.1", "::1"
    uint16_t port = 0;
    ListenerKind kind = ListenerKind::plain;
};

struct Config {
    std::vector<ListenAddress> listen;
    std::optional<ListenAddress> metrics_listen;  // --metrics-listen: Prometheus /metrics
    uint32_t threads = 0;                         // 0: online CPUs
    std::string spool_dir = "./var/spool";
    std::string hostname;  // default: gethostname()
    std::vector<std::string> relay_networks;
    std::vector<std::string> relay_domains;

    uint32_t recipients_max = limits::recipients_max_default;
    uint64_t message_size_max_bytes = limits::message_size_max_bytes_default;
    uint32_t connections_max = limits::connections_max_default;
    uint32_t connections_per_ip_max = limits::connections_per_ip_max_default;
    uint32_t junk_commands_max = limits::junk_commands_max_default;
    uint32_t timeout_command_ms = limits::timeout_command_ms_default;
    uint32_t timeout_data_ms = limits::timeout_data_ms_default;
    uint32_t greet_delay_ms = limits::greet_delay_ms_default;
    uint32_t commit_window_us = limits::commit_window_us_default;
    uint32_t commit_depth = limits::commit_depth_default;

    uint32_t ring_entries = limits::ring_entries_default;
    uint32_t recv_buffer_bytes = limits::recv_buffer_bytes_default;
    uint32_t recv_buffer_count = limits::recv_buffer_count_default;
    uint32_t channel_capacity = limits::channel_capacity_default;
    uint64_t segment_bytes = limits::segment_bytes_default;
    uint64_t staging_memory_max_bytes = limits::staging_memory_max_bytes_default;
    // Outbound delivery.
    bool delivery = true;  // --no-delivery: accept and queue only (ingest benchmarks, holds)
    std::vector<std::string> dns_servers;  // empty: /etc/resolv.conf
    std::string smarthost;                 // HOST[:PORT] or [IP]:PORT; empty: MX routing
    uint16_t delivery_port = 25;
    uint32_t connections_per_destination_max = 20;
    uint32_t messages_per_connection_max = 100;
    uint32_t recipients_per_transaction_max = 100;
    uint32_t active_queue_max = limits::active_queue_max_default;  // per thread
    uint32_t destinations_max = limits::destinations_max_default;  // per thread
    std::string retry_schedule = "5m:1h";
    std::string queue_lifetime = "5d";
    uint64_t retry_first_ms = 0, retry_max_ms = 0, queue_lifetime_ms = 0;  // parsed from the two
    uint32_t outbound_connections_max = 2000;                              // per thread
    uint32_t timeout_connect_ms = 30'000;
    uint32_t outbound_timeout_scale_percent = 100;  // RFC 5321 §4.5.3.2 client timeouts, scaled
    uint32_t outbound_idle_ms = 2000;               // idle reused connection before QUIT
    std::string outbound_tls = "may";  // may | encrypt | none: STARTTLS to destinations
    uint32_t received_headers_max = 50;
    std::string compact_after = "1h";  // a segment this old that pins live messages is compacted
    uint64_t compact_after_ms = 0;     // more: a mail loop, bounce 5.4.6
    bool fsync = true;                 // only a benchmark may turn this off; logged loudly
    std::string log_level = "info";
    std::string log_format = "text";  // or "json"
    bool check_config = false;        // --check-config: validate, load the files named, exit
    // TLS and AUTH (server side).
    std::string tls_cert_file;  // PEM chain; with it STARTTLS is offered on plain listeners
    std::string tls_key_file;
    std::string auth_users_file;               // user:crypt-hash lines
    uint32_t auth_failures_max = 5;            // per client address in the window, then 421
    uint32_t auth_failure_delay_ms = 1000;     // first 535 held back this long; doubles after
    uint32_t auth_failure_window_ms = 600000;  // failures forgotten after this quiet time
};

// Parses flags. Returns 0 to continue; otherwise the process should exit with (ret - 1)
// (0 after --help, 2 after a usage error, which has been printed).
[[nodiscard]] int parse_config(int argc, char** argv, Config& out);

// A name this relay may go by (greeting, EHLO to other servers, Received "by"): an RFC 5321
// §4.1.2 Domain of ASCII letters, digits and hyphens, labels of 1-63 octets not starting or
// ending with a hyphen, 255 octets in all, no trailing dot.
[[nodiscard]] bool hostname_ok(std::string_view name);

}  // namespace ringmail
