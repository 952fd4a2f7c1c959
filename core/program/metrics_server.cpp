// metrics_server.cpp — see metrics_server.hpp.
#include "core/program/metrics_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "core/base/log.hpp"
#include "net/inbound/listener.hpp"

namespace ringmail {
namespace {

constexpr size_t request_bytes_max = 8192;

enum class Kind : uint8_t { counter, gauge };

struct Family {
    const char* name;
    Kind kind;
    const char* help;
};

struct Series {
    Metric metric;
    const Family* family;
    const char* labels;  // "" or `reason="busy"`
    double scale;        // the published integer times this (µs → s)
};

constexpr Family connections_accepted{"ringmail_connections_accepted_total", Kind::counter,
                                      "SMTP connections accepted."};
constexpr Family connections_refused{"ringmail_connections_refused_total", Kind::counter,
                                     "SMTP connections refused at accept, by reason."};
constexpr Family connections_open{"ringmail_connections_open", Kind::gauge,
                                  "SMTP connections open now."};
constexpr Family messages_accepted{"ringmail_messages_accepted_total", Kind::counter,
                                   "Messages made durable and acknowledged with 250."};
constexpr Family bytes_accepted{"ringmail_message_bytes_accepted_total", Kind::counter,
                                "Spool bytes of the messages accepted."};
constexpr Family messages_refused{"ringmail_messages_refused_total", Kind::counter,
                                  "Complete messages answered 4xx instead of 250, by reason."};
constexpr Family commits{"ringmail_spool_commits_total", Kind::counter,
                         "Group commits: one write and one fdatasync for a batch of messages."};
constexpr Family status_records{"ringmail_spool_status_records_total", Kind::counter,
                                "Recipient status records appended to the spool."};
constexpr Family segments_created{"ringmail_spool_segments_created_total", Kind::counter,
                                  "Spool segments created."};
constexpr Family segments_deleted{"ringmail_spool_segments_deleted_total", Kind::counter,
                                  "Spool segments deleted once every message in them was final."};
constexpr Family compacted{"ringmail_spool_messages_compacted_total", Kind::counter,
                           "Live messages copied forward out of old segments."};
constexpr Family queue{"ringmail_queue_messages", Kind::gauge,
                       "Messages in the queue with a pending recipient, by state."};
constexpr Family outcomes{"ringmail_delivery_recipients_total", Kind::counter,
                          "Recipient outcomes of delivery attempts, by outcome."};
constexpr Family outbound_connections{"ringmail_outbound_connections_total", Kind::counter,
                                      "Outbound SMTP connections opened."};
constexpr Family transactions{"ringmail_outbound_transactions_total", Kind::counter,
                              "Outbound SMTP transactions (MAIL FROM) started."};
constexpr Family reactor{"ringmail_reactor_seconds_total", Kind::counter,
                         "Time each core's reactor spent, by state: busy or waiting for I/O."};

constexpr Series series[] = {
    {Metric::connections_accepted, &connections_accepted, "", 1},
    {Metric::connections_refused_busy, &connections_refused, "reason=\"busy\"", 1},
    {Metric::connections_refused_per_ip, &connections_refused, "reason=\"per_ip\"", 1},
    {Metric::connections_open, &connections_open, "", 1},
    {Metric::messages_accepted, &messages_accepted, "", 1},
    {Metric::message_bytes_accepted, &bytes_accepted, "", 1},
    {Metric::messages_refused_storage, &messages_refused, "reason=\"storage\"", 1},
    {Metric::commits, &commits, "", 1},
    {Metric::status_records, &status_records, "", 1},
    {Metric::segments_created, &segments_created, "", 1},
    {Metric::segments_deleted, &segments_deleted, "", 1},
    {Metric::messages_compacted, &compacted, "", 1},
    {Metric::delivered, &outcomes, "outcome=\"delivered\"", 1},
    {Metric::deferred, &outcomes, "outcome=\"deferred\"", 1},
    {Metric::bounced, &outcomes, "outcome=\"bounced\"", 1},
    {Metric::expired, &outcomes, "outcome=\"expired\"", 1},
    {Metric::outbound_connections, &outbound_connections, "", 1},
    {Metric::outbound_transactions, &transactions, "", 1},
};

void header(std::string& out, const Family& f) {
    out += "# HELP ";
    out += f.name;
    out += ' ';
    out += f.help;
    out += "\n# TYPE ";
    out += f.name;
    out += f.kind == Kind::counter ? " counter\n" : " gauge\n";
}

void sample(std::string& out, const char* name, std::string_view labels, double v) {
    char buf[64];
    out += name;
    if (!labels.empty()) {
        out += '{';
        out += labels;
        out += '}';
    }
    snprintf(buf, sizeof buf, " %.17g\n", v);
    out += buf;
}

void histogram(std::string& out, const char* name, const char* help, const CoreMetrics* cores,
               uint32_t count, PublishedHistogram CoreMetrics::*which) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += " histogram\n";
    uint64_t cumulative = 0, sum_us = 0;
    std::string bucket = std::string(name) + "_bucket";
    for (size_t b = 0; b < LatencyHistogram::buckets; b++) {
        for (uint32_t c = 0; c < count; c++)
            cumulative += (cores[c].*which).counts[b].load(std::memory_order_relaxed);
        char le[48];
        if (b < LatencyHistogram::bounds_us.size())
            snprintf(le, sizeof le, "le=\"%g\"",
                     static_cast<double>(LatencyHistogram::bounds_us[b]) / 1e6);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        sample(out, bucket.c_str(), le, static_cast<double>(cumulative));
    }
    for (uint32_t c = 0; c < count; c++)
        sum_us += (cores[c].*which).sum_us.load(std::memory_order_relaxed);
    sample(out, (std::string(name) + "_sum").c_str(), "", static_cast<double>(sum_us) / 1e6);
    sample(out, (std::string(name) + "_count").c_str(), "", static_cast<double>(cumulative));
}

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
}

void respond(int fd, const char* status, std::string_view type, std::string_view body) {
    std::string head = std::string("HTTP/1.1 ") + status + "\r\nContent-Type: ";
    head += type;
    head += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    if (write_all(fd, head)) write_all(fd, body);
}

}  // namespace

std::string metrics_text(const CoreMetrics* cores, uint32_t count) {
    std::string out;
    out.reserve(8192);
    const Family* last = nullptr;
    for (const Series& s : series) {
        if (s.family != last) header(out, *s.family);
        last = s.family;
        uint64_t v = 0;
        for (uint32_t c = 0; c < count; c++)
            v += cores[c].get(s.metric);
        sample(out, s.family->name, s.labels, static_cast<double>(v) * s.scale);
    }
    // The queue by state: active (being delivered) and deferred (waiting for a retry).
    header(out, queue);
    uint64_t queued = 0, active = 0;
    for (uint32_t c = 0; c < count; c++) {
        queued += cores[c].get(Metric::queue_messages);
        active += cores[c].get(Metric::queue_active);
    }
    sample(out, queue.name, "state=\"active\"", static_cast<double>(active));
    sample(out, queue.name, "state=\"deferred\"",
           static_cast<double>(queued > active ? queued - active : 0));
    header(out, reactor);
    for (uint32_t c = 0; c < count; c++) {
        char labels[48];
        snprintf(labels, sizeof labels, "core=\"%u\",state=\"busy\"", c);
        sample(out, reactor.name, labels,
               static_cast<double>(cores[c].get(Metric::reactor_busy_us)) / 1e6);
        snprintf(labels, sizeof labels, "core=\"%u\",state=\"waiting\"", c);
        sample(out, reactor.name, labels,
               static_cast<double>(cores[c].get(Metric::reactor_wait_us)) / 1e6);
    }
    histogram(out, "ringmail_spool_commit_duration_seconds",
              "From a batch's submission to its write and fdatasync done.", cores, count,
              &CoreMetrics::commit_latency);
    histogram(out, "ringmail_end_of_data_to_reply_seconds",
              "From a message's end of data to the reply that says whether it is durable.", cores,
              count, &CoreMetrics::eod_to_reply);
    return out;
}

MetricsServer::~MetricsServer() {
    stop();
}

bool MetricsServer::start(const ListenAddress& at, const CoreMetrics* cores, uint32_t count,
                          std::string* error) {
    auto fds = net::open_listeners({at}, 1, error);
    if (fds.empty() || fds[0].empty()) {
        *error = "--metrics-listen: " + *error;
        return false;
    }
    listen_fd_ = fds[0][0];
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    cores_ = cores;
    count_ = count;
    thread_ = std::thread([this] { serve(); });
    return true;
}

void MetricsServer::stop() {
    if (thread_.joinable()) {
        const uint64_t one = 1;
        ssize_t w = write(stop_fd_, &one, sizeof one);
        (void)w;
        thread_.join();
    }
    if (listen_fd_ >= 0) close(listen_fd_);
    if (stop_fd_ >= 0) close(stop_fd_);
    listen_fd_ = stop_fd_ = -1;
}

void MetricsServer::serve() {
    log::set_thread_tag(-1);
    for (;;) {
        pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) continue;  // EINTR
        if (p[1].revents != 0) return;
        if (p[0].revents == 0) continue;
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        answer(fd);
        close(fd);
    }
}

void MetricsServer::answer(int fd) {
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string req;
    char buf[2048];
    while (req.find("\r\n\r\n") == std::string::npos) {
        if (req.size() >= request_bytes_max) return respond(fd, "431 Too Large", "text/plain", "");
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return;  // gone, or too slow
        req.append(buf, static_cast<size_t>(n));
    }
    const std::string_view line(req.data(), req.find("\r\n"));
    const size_t sp1 = line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos)
        return respond(fd, "400 Bad Request", "text/plain", "bad request\n");
    const std::string_view method = line.substr(0, sp1);
    std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
    path = path.substr(0, path.find('?'));
    if (path != "/metrics") return respond(fd, "404 Not Found", "text/plain", "try /metrics\n");
    if (method != "GET" && method != "HEAD")
        return respond(fd, "405 Method Not Allowed", "text/plain", "GET only\n");
    const std::string body = metrics_text(cores_, count_);
    respond(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8",
            method == "HEAD" ? std::string_view() : std::string_view(body));
}

}  // namespace ringmail
