// ringmail_bench_main.cpp — `ringmail-bench`: the bundled load generator (`source`) and smart
// sink (`sink`). Parses flags with CLI11 and hands a config to run_source() / run_sink().
#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>

#include "bench/tool_sink.hpp"
#include "bench/tool_source.hpp"

using namespace ringmail;
using namespace ringmail::bench;

namespace {

// "127.0.0.1:2525", "[::1]:2525".
bool split_host_port(const std::string& text, std::string* host, uint16_t* port) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    std::string h = text.substr(0, colon);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    if (h.empty()) h = "0.0.0.0";
    unsigned p = 0;
    const char* b = text.data() + colon + 1;
    const char* e = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(b, e, p);
    if (ec != std::errc() || ptr != e || p == 0 || p > 65535) return false;
    *host = h;
    *port = static_cast<uint16_t>(p);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringmail-bench — SMTP load generator (source) and smart sink (sink)"};
    app.require_subcommand(1);
    app.get_formatter()->column_width(44);

    // --- source ------------------------------------------------------------------------------
    SourceConfig src;
    std::string target, size_text = "1k", size_dist, pipelining = "on";
    bool starttls = false, tls = false;
    std::string auth;
    CLI::App* source = app.add_subcommand("source", "generate SMTP load against HOST:PORT");
    source->add_option("target", target, "server to send to (HOST:PORT)")->required();
    source->add_option("--threads", src.threads, "reactor threads (0: online CPUs)")
        ->capture_default_str();
    source->add_option("--sessions", src.sessions, "concurrent SMTP sessions")
        ->capture_default_str()
        ->check(CLI::Range(1u, 10000000u));
    source->add_option("--messages", src.messages,
                       "messages in all (default 10000 unless --duration is given)");
    source->add_option("--duration", src.duration_s, "seconds to keep starting messages");
    source
        ->add_option("--messages-per-connection", src.messages_per_connection,
                     "then QUIT and reconnect (0: unlimited)")
        ->capture_default_str();
    source->add_option("--recipients", src.recipients, "recipients per message")
        ->capture_default_str()
        ->check(CLI::Range(1u, 100000u));
    source->add_option("--domains", src.domains, "distinct recipient domains")
        ->capture_default_str()
        ->check(CLI::Range(1u, 100000000u));
    source->add_option("--size", size_text, "message size (bytes, or 1k, 1m)")
        ->capture_default_str();
    source->add_option("--size-dist", size_dist, "size distribution, e.g. 1k:70,10k:25,100k:5");
    source->add_option("--pipelining", pipelining, "use PIPELINING when offered")
        ->capture_default_str()
        ->check(CLI::IsMember({"on", "off"}));
    source->add_option("--from", src.from, "envelope sender")->capture_default_str();
    source
        ->add_option("--to-domain", src.to_domain, "recipient domain (d<k>.DOMAIN with --domains)")
        ->capture_default_str();
    source->add_option("--source-ip", src.source_ips, "bind connections round robin to these")
        ->delimiter(',');
    source->add_option("--rate", src.rate, "open loop: message starts per second (all threads)");
    source->add_flag("--idle", src.idle,
                     "hold --sessions connections open after EHLO (until --duration or SIGINT)");
    source->add_flag("--json", src.json, "print the report as one JSON object");
    source->add_flag("!--no-progress", src.progress, "no live progress line on stderr");
    CLI::Option* starttls_opt =
        source->add_flag("--starttls", starttls, "STARTTLS after EHLO (certificate not verified)");
    source->add_flag("--tls", tls, "implicit TLS from the first byte (certificate not verified)")
        ->excludes(starttls_opt);
    source->add_option("--auth", auth, "AUTH PLAIN as USER:PASS after the (last) EHLO");

    // --- sink --------------------------------------------------------------------------------
    SinkConfig snk;
    std::vector<std::string> listen{"127.0.0.1:2526"};
    bool no_pipelining = false, no_chunking = false, no_size = false, no_starttls = false;
    CLI::App* sink = app.add_subcommand("sink", "accept and count SMTP mail, as scripted");
    sink->add_option("--listen", listen, "ADDR:PORT to accept on (repeatable)")
        ->capture_default_str()
        ->delimiter(',');
    sink->add_option("--threads", snk.threads, "reactor threads (0: online CPUs)")
        ->capture_default_str();
    sink->add_option("--hostname", snk.session.hostname, "name in the greeting")
        ->capture_default_str();
    sink->add_flag("--verify", snk.session.verify,
                   "check each body's X-Ringmail-Bench checksum and count duplicates");
    sink->add_option("--expect", snk.expect, "messages expected (sizes the duplicate bitmap)")
        ->capture_default_str();
    sink->add_option("--report-interval", snk.report_interval_s, "seconds between report lines");
    sink->add_option("--stats-file", snk.stats_file, "JSON counts, rewritten every interval");
    sink->add_option("--seqs-file", snk.seqs_file,
                     "seqs of the verified messages accepted, one a line, rewritten every "
                     "interval (needs --verify)");
    sink->add_flag("--json", snk.json, "final report as one JSON object");
    auto fraction = CLI::Range(0.0, 1.0);
    sink->add_option("--rcpt-temp-fail", snk.session.rcpt_temp_fail, "fraction of RCPT → 450")
        ->check(fraction);
    sink->add_option("--rcpt-perm-fail", snk.session.rcpt_perm_fail, "fraction of RCPT → 550")
        ->check(fraction);
    sink->add_option("--data-temp-fail", snk.session.data_temp_fail, "fraction of messages → 451")
        ->check(fraction);
    sink->add_option("--data-perm-fail", snk.session.data_perm_fail, "fraction of messages → 554")
        ->check(fraction);
    sink->add_option("--drop-fraction", snk.session.drop_fraction,
                     "fraction of messages whose end gets a disconnect instead of a reply")
        ->check(fraction);
    sink->add_option("--seed", snk.session.seed, "seed of the scripted decisions")
        ->capture_default_str();
    sink->add_option("--data-delay-ms", snk.session.data_delay_ms, "delay of each data reply")
        ->capture_default_str();
    sink->add_option("--max-sessions", snk.max_sessions, "beyond: 421 at the greeting (0: none)")
        ->capture_default_str();
    sink->add_flag("--no-pipelining", no_pipelining, "do not offer PIPELINING");
    sink->add_flag("--no-chunking", no_chunking, "do not offer CHUNKING");
    sink->add_flag("--no-size", no_size, "do not offer SIZE");
    sink->add_flag("--no-starttls", no_starttls, "do not offer STARTTLS (never offered yet)");

    CLI11_PARSE(app, argc, argv);

    if (source->parsed()) {
        src.tls = starttls ? SourceTls::starttls : tls ? SourceTls::implicit : SourceTls::none;
        if (!auth.empty()) {
            auto colon = auth.find(':');
            if (colon == std::string::npos || colon == 0) {
                fprintf(stderr, "ringmail-bench source: bad --auth (want USER:PASS)\n");
                return 2;
            }
            src.auth_user = auth.substr(0, colon);
            src.auth_password = auth.substr(colon + 1);
        }
        if (!split_host_port(target, &src.host, &src.port)) {
            fprintf(stderr, "ringmail-bench source: bad target '%s' (want HOST:PORT)\n",
                    target.c_str());
            return 2;
        }
        std::string error;
        uint64_t size = 0;
        if (!size_dist.empty()) {
            if (!src.sizes.parse(size_dist, &error)) {
                fprintf(stderr, "ringmail-bench source: %s\n", error.c_str());
                return 2;
            }
        } else if (parse_size(size_text, &size)) {
            src.sizes.set_fixed(size);
        } else {
            fprintf(stderr, "ringmail-bench source: bad --size '%s'\n", size_text.c_str());
            return 2;
        }
        src.pipelining = pipelining == "on";
        return run_source(src);
    }

    for (const std::string& l : listen) {
        ListenAddress a;
        if (!split_host_port(l, &a.host, &a.port)) {
            fprintf(stderr, "ringmail-bench sink: bad --listen '%s' (want ADDR:PORT)\n", l.c_str());
            return 2;
        }
        snk.listen.push_back(a);
    }
    snk.session.pipelining = !no_pipelining;
    snk.session.chunking = !no_chunking;
    snk.session.size = !no_size;
    if (!snk.seqs_file.empty() && !snk.session.verify) {
        fprintf(stderr, "ringmail-bench sink: --seqs-file needs --verify\n");
        return 2;
    }
    double total =
        snk.session.drop_fraction + snk.session.data_temp_fail + snk.session.data_perm_fail;
    if (snk.session.rcpt_temp_fail + snk.session.rcpt_perm_fail > 1.0 || total > 1.0) {
        fprintf(stderr, "ringmail-bench sink: failure fractions add up to more than 1\n");
        return 2;
    }
    return run_sink(snk);
}
