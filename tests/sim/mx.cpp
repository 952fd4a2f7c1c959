// mx.cpp — what delivery meets in the simulated world: DNS answers for the recipients' and
// senders' domains (delays, timeouts, SERVFAIL, NXDOMAIN, null MX, no address), and the MX
// hosts behind them, each a scripted SMTP server (sim.hpp MxSession) that refuses or ignores
// connections, goes away and comes back, and answers any step with a 4xx or 5xx, a reset, a
// close or silence, at rates drawn from the seed. Every recipient's copy it takes is recorded
// (World::delivered), as is every DSN the senders' domain takes (World::dsns_delivered).
//
// Permanent refusals that must not depend on the attempt are a property of the address: a
// recipient whose number is a multiple of 37 is unknown everywhere, so that a recipient once
// delivered is never refused for good later, except by a random 5xx (which run.cpp accepts
// only when a crash or a lost reply explains a copy delivered before).
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "tests/sim/sim.hpp"

namespace ringmail::sim {
namespace {

constexpr uint32_t kMxNet = 0xc0000200u;  // 192.0.2.0/24

IpAddress v4(uint32_t ip) {
    IpAddress a;
    a.bytes[10] = 0xff;
    a.bytes[11] = 0xff;
    a.bytes[12] = static_cast<uint8_t>(ip >> 24);
    a.bytes[13] = static_cast<uint8_t>(ip >> 16);
    a.bytes[14] = static_cast<uint8_t>(ip >> 8);
    a.bytes[15] = static_cast<uint8_t>(ip);
    return a;
}

bool ieq_prefix(std::string_view s, std::string_view p) {
    if (s.size() < p.size()) return false;
    for (size_t i = 0; i < p.size(); i++)
        if (tolower(static_cast<unsigned char>(s[i])) != tolower(static_cast<unsigned char>(p[i])))
            return false;
    return true;
}

// "<a@b>" after "MAIL FROM:" / "RCPT TO:", without its parameters.
std::string path_of(std::string_view arg) {
    const size_t lt = arg.find('<'), gt = arg.find('>');
    if (lt == std::string_view::npos || gt == std::string_view::npos || gt < lt) return "?";
    return std::string(arg.substr(lt + 1, gt - lt - 1));
}

// "userN@..." with N a multiple of 37: unknown on every host.
bool unknown_user(const std::string& rcpt) {
    if (!rcpt.starts_with("user")) return false;
    const unsigned long n = strtoul(rcpt.c_str() + 4, nullptr, 10);
    return n % 37 == 0;
}

std::string header_value(std::string_view text, std::string_view name) {
    const size_t at = text.find(name);
    if (at == std::string_view::npos) return "";
    const size_t from = at + name.size();
    const size_t e = text.find("\r\n", from);
    return std::string(text.substr(from, e == std::string_view::npos ? e : e - from));
}

// Reply steps, for the fault rates (a greeting and QUIT never get a permanent fault).
enum Step : int { kGreet, kEhlo, kMail, kRcpt, kData, kEnd, kOther };

}  // namespace

// --- the seed's destinations ------------------------------------------------------------------

void World::make_destinations(uint64_t span_us) {
    Rng& r = rng;
    auto host = [&](std::string name, bool sink) {
        MxHost h;
        h.name = std::move(name);
        h.ip = kMxNet | static_cast<uint32_t>(mx_hosts.size() + 1);
        h.sink = sink;
        h.pipelining = r.chance(3, 4);
        h.chunking = r.chance(1, 3);
        if (r.chance(1, 4)) h.rcpts_max = static_cast<uint32_t>(r.range(1, 5));
        const bool flaky = r.chance(1, 2);
        if (flaky) {
            h.refuse_ppm = static_cast<uint32_t>(r.range(0, 200'000));
            h.blackhole_ppm = r.chance(1, 3) ? static_cast<uint32_t>(r.range(0, 50'000)) : 0;
            h.temp_ppm = static_cast<uint32_t>(r.range(0, 60'000));
            h.perm_ppm = sink ? 0 : static_cast<uint32_t>(r.range(0, 15'000));
            h.cut_ppm = static_cast<uint32_t>(r.range(0, 30'000));
            h.hang_ppm = r.chance(1, 3) ? static_cast<uint32_t>(r.range(0, 10'000)) : 0;
        }
        // Away for a while and back; the senders' domain never longer than a DSN may wait.
        const uint64_t windows = r.chance(1, 3) ? r.range(1, 2) : 0;
        for (uint64_t i = 0; i < windows; i++) {
            const uint64_t from = now_us_ + r.range(0, span_us);
            h.down.emplace_back(from, from + r.range(500'000, sink ? 10'000'000 : 40'000'000));
        }
        h.down_silent = r.chance(1, 3);
        mx_hosts.push_back(std::move(h));
        return static_cast<uint32_t>(mx_hosts.size() - 1);
    };
    auto domain = [&](std::string name, bool sink) {
        MailDomain d;
        d.name = name;
        const uint64_t roll = sink ? 0 : r.below(100);
        d.kind = roll < 65   ? MailDomain::Kind::mx
                 : roll < 73 ? MailDomain::Kind::implicit
                 : roll < 81 ? MailDomain::Kind::nxdomain
                 : roll < 88 ? MailDomain::Kind::null_mx
                 : roll < 94 ? MailDomain::Kind::servfail
                             : MailDomain::Kind::no_address;
        if (d.kind == MailDomain::Kind::mx) {
            const uint64_t n = r.range(1, 3);
            for (uint64_t i = 0; i < n; i++)
                d.mx.emplace_back(host("mx" + std::to_string(i) + "." + name, sink),
                                  static_cast<uint16_t>(r.range(0, 2) * 10));
        } else if (d.kind == MailDomain::Kind::implicit) {
            d.mx.emplace_back(host(name, sink), 0);
        }
        if (r.chance(1, 2)) {
            d.servfail_ppm = static_cast<uint32_t>(r.range(0, 100'000));
            d.timeout_ppm = static_cast<uint32_t>(r.range(0, 50'000));
            d.host_tempfail_ppm = static_cast<uint32_t>(r.range(0, 50'000));
        }
        d.delay_max_ms = r.chance(1, 2) ? r.range(1, 3000) : 50;
        domains.push_back(std::move(d));
    };
    domain("sim.test", true);  // the senders': DSNs go there
    domain("example.net", false);
    for (int i = 0; i < 9; i++)
        domain("remote" + std::to_string(i) + ".test", false);
}

bool World::host_down(const MxHost& h) const {
    for (const auto& [from, to] : h.down)
        if (now_us_ >= from && now_us_ < to) return true;
    return false;
}

// --- DNS ------------------------------------------------------------------------------------

dns::SimDnsAnswer World::dns_query(std::string_view name) {
    using Mx = dns::SimDnsAnswer::Mx;
    stats.dns_queries++;
    dns::SimDnsAnswer a;
    a.ttl_s = static_cast<uint32_t>(rng.range(1, 600));
    a.delay_ms = rng.chance(1, 3) ? 0 : rng.range(1, 200);
    const MailDomain* d = nullptr;
    for (const MailDomain& x : domains)
        if (x.name == name) d = &x;
    trace(0xd45, std::hash<std::string_view>{}(name));
    if (d == nullptr) {
        a.mx = Mx::nxdomain;
        return a;
    }
    a.delay_ms = rng.chance(1, 3) ? 0 : rng.range(1, d->delay_max_ms);
    if (d->kind == MailDomain::Kind::servfail || rng.below(1'000'000) < d->servfail_ppm) {
        a.mx = Mx::servfail;
        return a;
    }
    if (rng.below(1'000'000) < d->timeout_ppm) {
        a.mx = Mx::timeout;
        a.delay_ms += rng.range(4'000, 28'000);  // udns: 4 s, doubled for each of 3 tries
        return a;
    }
    switch (d->kind) {
        case MailDomain::Kind::nxdomain:
            a.mx = Mx::nxdomain;
            return a;
        case MailDomain::Kind::null_mx:
            a.mx = Mx::records;
            a.records.push_back(dns::MxRecord{".", 0});
            return a;
        case MailDomain::Kind::no_address:
            a.mx = Mx::nodata;  // neither MX nor address: bounced (5.4.4)
            return a;
        case MailDomain::Kind::implicit:
            a.mx = Mx::nodata;
            break;
        default:
            a.mx = Mx::records;
            break;
    }
    for (const auto& [hi, pref] : d->mx) {
        const MxHost& h = mx_hosts[hi];
        if (a.mx == Mx::records) a.records.push_back(dns::MxRecord{h.name, pref});
        dns::HostAnswer ha;
        ha.host.name = h.name;
        if (rng.below(1'000'000) < d->host_tempfail_ppm)
            ha.tempfail = true;
        else
            ha.host.addresses.push_back(v4(h.ip));
        a.hosts.push_back(std::move(ha));
    }
    return a;
}

// --- connections ----------------------------------------------------------------------------

int World::sim_socket(int domain, int type) {
    if (domain != AF_INET && domain != AF_INET6) return -EAFNOSUPPORT;
    if ((type & 0xf) != SOCK_STREAM) return -EPROTONOSUPPORT;
    Socket sk;
    sk.fd = new_fd();
    sk.mx = Socket::kUnconnected;
    sk.window = rng.chance(1, 4) ? static_cast<uint32_t>(rng.range(64, 4096)) : 65536;
    sockets[sk.fd] = sk;
    trace(0x50c, static_cast<uint64_t>(sk.fd));
    return sk.fd;
}

int World::connect_verdict(const io_uring_sqe& s, bool* never) {
    *never = false;
    stats.connects++;
    const auto* sa = reinterpret_cast<const sockaddr*>(s.addr);
    if (sa == nullptr || sa->sa_family != AF_INET) return -ENETUNREACH;
    const auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
    const uint32_t ip = ntohl(sin->sin_addr.s_addr);
    const MxHost* h = nullptr;
    for (const MxHost& x : mx_hosts)
        if (x.ip == ip) h = &x;
    if (h == nullptr) return -ENETUNREACH;
    if (host_down(*h)) {
        *never = h->down_silent;
        return -ECONNREFUSED;
    }
    if (rng.below(1'000'000) < h->blackhole_ppm) {
        *never = true;
        stats.mx_faults++;
        return -ETIMEDOUT;
    }
    if (rng.below(1'000'000) < h->refuse_ppm) {
        stats.mx_faults++;
        return -ECONNREFUSED;
    }
    return 0;
}

void World::mx_connected(Socket& k) {
    MxSession m;
    m.fd = k.fd;
    // The host was found by connect_verdict; find it again by the session's address.
    for (const auto& op : ops_)
        if (op->sqe.opcode == IORING_OP_CONNECT && op->sqe.fd == k.fd) {
            const auto* sin = reinterpret_cast<const sockaddr_in*>(op->sqe.addr);
            const uint32_t ip = ntohl(sin->sin_addr.s_addr);
            for (uint32_t i = 0; i < mx_hosts.size(); i++)
                if (mx_hosts[i].ip == ip) m.host = i;
        }
    m.next_us = now_us_ + rng.range(0, 20'000);  // the greeting
    k.mx = static_cast<int32_t>(mx_sessions.size());
    mx_sessions.push_back(std::move(m));
    trace(0xc011, static_cast<uint64_t>(k.fd), mx_sessions.back().host);
}

// --- the server's side of a session -------------------------------------------------------------

void World::mx_write(MxSession&, Socket& k, std::string_view text) {
    k.to_server.append(text);
    k.to_server_total += text.size();
}

// A reply, or the fault the host's rates pick instead of it. step: the Step being answered.
void World::mx_reply(MxSession& m, Socket& k, int step, std::string ok) {
    const MxHost& h = mx_hosts[m.host];
    const uint64_t roll = rng.below(1'000'000);
    uint64_t edge = h.cut_ppm;
    if (step != kOther && roll < edge) {
        stats.mx_faults++;
        trace(0xc07, m.host, static_cast<uint64_t>(step));
        if (rng.chance(1, 2)) {
            k.rst = true;  // reset mid-transaction
        } else {
            k.client_fin = true;  // closed: reads nothing more
            k.client_closed = true;
        }
        m.phase = MxSession::Phase::gone;
        return;
    }
    edge += h.hang_ppm;
    if (step != kOther && roll < edge) {
        stats.mx_faults++;
        m.hung = true;  // silent: the engine's timeout must end it
        return;
    }
    edge += h.temp_ppm;
    if (step != kOther && roll < edge) {
        stats.mx_faults++;
        static const char* kTemp[] = {
            "421 4.3.2 too busy, come back later\r\n", "421 4.3.2 shutting down\r\n",
            "451 4.3.0 try again later\r\n",           "450 4.2.1 mailbox busy\r\n",
            "451 4.3.0 try again later\r\n",           "451 4.3.0 local error\r\n"};
        mx_write(m, k, kTemp[step]);
        if (step <= kEhlo) {  // 421: the server closes (RFC 5321 §3.8)
            k.client_fin = true;
            k.client_closed = true;
            m.phase = MxSession::Phase::gone;
        }
        if (step == kMail || step == kEnd) m.in_tx = false;
        if (step == kEnd) m.rcpts.clear();
        return;
    }
    edge += h.perm_ppm;
    if (step != kOther && step != kGreet && roll < edge) {
        stats.mx_faults++;
        static const char* kPerm[] = {"",
                                      "550 5.7.1 not welcome\r\n",
                                      "550 5.7.1 sender refused\r\n",
                                      "550 5.2.1 mailbox disabled\r\n",
                                      "554 5.6.0 transaction refused\r\n",
                                      "554 5.6.0 message refused\r\n"};
        mx_write(m, k, kPerm[step]);
        if (step == kMail || step == kEnd) m.in_tx = false;
        if (step == kEnd) m.rcpts.clear();
        return;
    }
    mx_write(m, k, ok);
}

void World::mx_message_end(MxSession& m, Socket& k) {
    const MxHost& h = mx_hosts[m.host];
    m.phase = MxSession::Phase::command;
    const size_t before = k.to_server_total;
    mx_reply(m, k, kEnd, "250 2.0.0 Ok: queued\r\n");
    const bool took = m.phase != MxSession::Phase::gone && !m.hung && k.to_server_total > before &&
                      k.to_server.ends_with("250 2.0.0 Ok: queued\r\n");
    if (took) {
        if (m.from.empty() && h.sink) {
            DsnSeen d;
            const std::string mid = header_value(m.body, "Message-ID: <");
            d.dsn_id = mid.substr(0, mid.find('.'));
            d.token = header_value(m.body, "X-Sim-Token: ");
            for (size_t at = m.body.find("Final-Recipient: rfc822; "); at != std::string::npos;
                 at = m.body.find("Final-Recipient: rfc822; ", at + 1))
                d.rcpts.push_back(header_value(m.body.substr(at), "Final-Recipient: rfc822; "));
            dsns_delivered.push_back(std::move(d));
        } else {
            const std::string token = header_value(m.body, "X-Sim-Token: ");
            for (const std::string& rc : m.rcpts)
                delivered.push_back(Delivered{token, rc, life, k.fd, k.to_server_total});
        }
        trace(0xde1, m.rcpts.size(), m.body.size());
    }
    m.in_tx = false;
    m.rcpts.clear();
    m.body.clear();
}

void World::mx_line(MxSession& m, Socket& k, std::string_view line) {
    const MxHost& h = mx_hosts[m.host];
    if (ieq_prefix(line, "EHLO ")) {
        std::string r = "250-" + h.name + "\r\n";
        if (h.pipelining) r += "250-PIPELINING\r\n";
        if (h.chunking) r += "250-CHUNKING\r\n";
        r += "250-8BITMIME\r\n250-SIZE 10485760\r\n250 ENHANCEDSTATUSCODES\r\n";
        return mx_reply(m, k, kEhlo, r);
    }
    if (ieq_prefix(line, "HELO ")) return mx_reply(m, k, kEhlo, "250 " + h.name + "\r\n");
    if (ieq_prefix(line, "MAIL FROM:")) {
        if (m.in_tx) return mx_write(m, k, "503 5.5.1 nested MAIL\r\n");
        m.from = path_of(line.substr(10));
        m.rcpts.clear();
        m.in_tx = true;
        return mx_reply(m, k, kMail, "250 2.1.0 Ok\r\n");
    }
    if (ieq_prefix(line, "RCPT TO:")) {
        if (!m.in_tx) return mx_write(m, k, "503 5.5.1 need MAIL\r\n");
        const std::string rcpt = path_of(line.substr(8));
        if (unknown_user(rcpt)) return mx_write(m, k, "550 5.1.1 <" + rcpt + ">: unknown user\r\n");
        if (h.rcpts_max && m.rcpts.size() >= h.rcpts_max)
            return mx_write(m, k, "452 4.5.3 too many recipients\r\n");
        const size_t before = k.to_server_total;
        mx_reply(m, k, kRcpt, "250 2.1.5 Ok\r\n");
        if (k.to_server_total > before && k.to_server.ends_with("250 2.1.5 Ok\r\n"))
            m.rcpts.push_back(rcpt);
        return;
    }
    if (ieq_prefix(line, "DATA")) {
        if (!m.in_tx || m.rcpts.empty()) {
            m.in_tx = false;
            return mx_write(m, k, "554 5.5.1 no valid recipients\r\n");
        }
        const size_t before = k.to_server_total;
        mx_reply(m, k, kData, "354 End data with <CR><LF>.<CR><LF>\r\n");
        if (k.to_server_total > before &&
            k.to_server.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n")) {
            m.phase = MxSession::Phase::data;
            m.body.clear();
        } else {
            m.in_tx = false;
        }
        return;
    }
    if (ieq_prefix(line, "BDAT ")) {
        m.bdat_left = strtoull(std::string(line.substr(5)).c_str(), nullptr, 10);
        m.bdat_last = line.find(" LAST") != std::string_view::npos;
        if (!m.in_tx || m.rcpts.empty()) m.bdat_failed = true;
        m.phase = MxSession::Phase::bdat;
        return;
    }
    if (ieq_prefix(line, "RSET")) {
        m.in_tx = false;
        m.rcpts.clear();
        m.body.clear();
        m.bdat_failed = false;
        return mx_write(m, k, "250 2.0.0 Ok\r\n");
    }
    if (ieq_prefix(line, "NOOP")) return mx_write(m, k, "250 2.0.0 Ok\r\n");
    if (ieq_prefix(line, "QUIT")) {
        mx_write(m, k, "221 2.0.0 Bye\r\n");
        k.client_fin = true;
        k.client_closed = true;
        m.phase = MxSession::Phase::gone;
        return;
    }
    mx_write(m, k, "502 5.5.2 command not recognised\r\n");
}

// The host's turn: greet, then take what the engine sent, a line or a chunk at a time.
void World::mx_step(MxSession& m) {
    m.next_us = kNever;
    Socket& k = sockets.at(m.fd);
    if (k.rst || k.server_closed) {
        // The engine closed (or a crash reset it): this end closes too.
        k.client_closed = true;
        m.phase = MxSession::Phase::gone;
        return;
    }
    if (host_down(mx_hosts[m.host])) {
        k.rst = true;  // the host went away: its connections are reset
        m.phase = MxSession::Phase::gone;
        stats.mx_faults++;
        return;
    }
    if (m.hung) return;
    if (m.phase == MxSession::Phase::greet) {
        m.phase = MxSession::Phase::command;
        mx_reply(m, k, kGreet, "220 " + mx_hosts[m.host].name + " ESMTP sim\r\n");
        if (m.phase == MxSession::Phase::gone || m.hung) return;
    }
    m.in.append(k.to_client, k.to_client_off);
    k.to_client.clear();
    k.to_client_off = 0;
    size_t pos = 0;
    // (An empty chunk, "BDAT 0 LAST", is answered with no byte after it.)
    while (m.phase != MxSession::Phase::gone && !m.hung &&
           (pos < m.in.size() || (m.phase == MxSession::Phase::bdat && m.bdat_left == 0))) {
        if (m.phase == MxSession::Phase::bdat) {
            const size_t n = std::min(m.bdat_left, m.in.size() - pos);
            if (!m.bdat_failed) m.body.append(m.in, pos, n);
            pos += n;
            m.bdat_left -= n;
            if (m.bdat_left > 0) break;
            m.phase = MxSession::Phase::command;
            if (m.bdat_failed) {
                mx_write(m, k, "554 5.5.1 no valid transaction\r\n");
                if (m.bdat_last) m.bdat_failed = false;
                m.in_tx = false;
            } else if (m.bdat_last) {
                mx_message_end(m, k);
            } else {
                const size_t before = k.to_server_total;
                mx_reply(m, k, kData, "250 2.0.0 chunk Ok\r\n");
                if (!(k.to_server_total > before &&
                      k.to_server.ends_with("250 2.0.0 chunk Ok\r\n")))
                    m.bdat_failed = true;  // the rest of the chunks are refused too
            }
            continue;
        }
        const size_t eol = m.in.find("\r\n", pos);
        if (eol == std::string::npos) break;
        const std::string_view line(m.in.data() + pos, eol - pos);
        pos = eol + 2;
        if (m.phase == MxSession::Phase::data) {
            if (line == ".") {
                mx_message_end(m, k);
            } else {
                m.body.append(line.starts_with('.') ? line.substr(1) : line);
                m.body += "\r\n";
            }
            continue;
        }
        mx_line(m, k, line);
    }
    m.in.erase(0, pos);
    if (m.phase == MxSession::Phase::gone) k.client_closed = true;
}

}  // namespace ringmail::sim
