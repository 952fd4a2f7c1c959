// clients.cpp — the simulated network's clients (client.hpp): their scripts, drawn from the
// seed, and their steps, run by the World at their virtual times.
#include <algorithm>
#include <cstring>

#include "tests/sim/client.hpp"
#include "tests/sim/sim.hpp"

namespace ringmail::sim {
namespace {

// A client waiting longer than this for a reply it is owed has found a server that hangs
// (the server's own timeouts are 300 s for commands and 180 s for data).
constexpr uint64_t kPatienceUs = 900ull * 1000 * 1000;

std::string random_line(Rng& rng, size_t len) {
    static const char kChars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_=+!?<>@/";
    std::string s;
    s.reserve(len);
    for (size_t i = 0; i < len; i++)
        s.push_back(kChars[rng.below(sizeof kChars - 1)]);
    return s;
}

// The message content (CRLF lines), dot-stuffed for DATA into *wire.
std::string make_content(Rng& rng, const std::string& token, size_t target) {
    std::string c =
        "X-Sim-Token: " + token + "\r\nSubject: " + random_line(rng, rng.range(0, 40)) + "\r\n\r\n";
    while (c.size() < target) {
        size_t len = rng.chance(1, 20) ? rng.range(200, 990) : rng.range(0, 78);
        std::string l = random_line(rng, len);
        if (rng.chance(1, 8)) l.insert(0, ".");  // needs stuffing
        if (rng.chance(1, 40)) l = ".";          // a lone dot: stuffed to ".."
        c += l + "\r\n";
    }
    return c;
}

std::string dot_stuff(const std::string& c) {
    std::string w;
    w.reserve(c.size() + 64);
    bool line_start = true;
    for (char ch : c) {
        if (line_start && ch == '.') w.push_back('.');
        w.push_back(ch);
        line_start = ch == '\n';
    }
    return w;
}

Action send(std::string bytes, std::vector<Expect> ex, int msg = -1) {
    Action a;
    a.kind = Action::Kind::send;
    a.bytes = std::move(bytes);
    a.expects = std::move(ex);
    a.msg = msg;
    return a;
}

Action wait_replies() {
    Action a;
    a.kind = Action::Kind::wait_replies;
    return a;
}

size_t message_size(Rng& rng) {
    switch (rng.below(10)) {
        case 0:
            return rng.range(20'000, 120'000);  // several receive buffers
        case 1:
            if (rng.chance(1, 4)) return rng.range(250'000, 300'000);  // over the size limit
            return rng.range(2'000, 20'000);
        default:
            return rng.range(0, 2'000);
    }
}

}  // namespace

void World::spawn_client() {
    auto c = std::make_unique<Client>();
    c->id = static_cast<uint32_t>(clients.size());
    Rng& r = rng;
    const bool trusted = trusted_only || r.chance(3, 4);
    // A few addresses only, so the per-address connection limit is met.
    c->ip = trusted ? (0x0a000000u | static_cast<uint32_t>(r.range(1, 6)))
                    : (0xc6336400u | static_cast<uint32_t>(r.range(1, 4)));
    const bool esmtp = r.chance(9, 10);
    const bool pipelining = esmtp && r.chance(1, 2);
    if (r.chance(1, 5)) c->write_chunk_max = static_cast<uint32_t>(r.range(1, 64));
    if (r.chance(1, 5)) c->read_chunk_max = static_cast<uint32_t>(r.range(1, 64));
    c->gap_us = r.chance(1, 6) ? r.range(1'000, 400'000) : r.range(0, 300);
    std::vector<Action>& s = c->script;
    // Untrusted clients wait for a delayed greeting; some talk first (and are refused).
    const bool talk_first = !trusted && r.chance(1, 5);
    if (!talk_first) s.push_back(wait_replies());
    const std::string helo_name = "client" + std::to_string(c->id) + ".sim.test";
    s.push_back(send((esmtp ? "EHLO " : "HELO ") + helo_name + "\r\n", {{Expect::Kind::hello}}));
    s.push_back(wait_replies());
    const uint32_t ntx = static_cast<uint32_t>(r.below(5));
    for (uint32_t t = 0; t < ntx; t++) {
        const int m = static_cast<int>(messages.size());
        SentMessage msg;
        msg.token =
            "s" + std::to_string(opt.seed) + "c" + std::to_string(c->id) + "m" + std::to_string(m);
        msg.from = r.chance(1, 10) ? "" : "sender" + std::to_string(r.below(100)) + "@sim.test";
        const uint32_t nrcpt = r.chance(1, 15) ? static_cast<uint32_t>(r.range(18, 24))
                                               : static_cast<uint32_t>(r.range(1, 4));
        for (uint32_t i = 0; i < nrcpt; i++) {
            const bool local = !trusted || r.chance(1, 2);
            msg.rcpts.push_back(
                "user" + std::to_string(r.below(1000)) + "@" +
                (local ? "example.net" : "remote" + std::to_string(r.below(9)) + ".test"));
        }
        msg.rcpt_ok.assign(nrcpt, false);
        msg.bdat = esmtp && r.chance(1, 3);
        msg.content = make_content(r, msg.token, message_size(r));
        if (r.chance(1, 30)) {  // a bare LF in the text: refused, never stored
            size_t at = r.below(msg.content.size());
            msg.content.insert(at, "\n");
        }
        auto cmd = [&](std::string line, Expect e) {
            s.push_back(send(std::move(line) + "\r\n", {e}, m));
            if (!pipelining) s.push_back(wait_replies());
        };
        cmd("MAIL FROM:<" + msg.from + ">", {Expect::Kind::mail, m, 0});
        for (uint32_t i = 0; i < nrcpt; i++)
            cmd("RCPT TO:<" + msg.rcpts[i] + ">", {Expect::Kind::rcpt, m, static_cast<int>(i)});
        if (r.chance(1, 12)) {  // changes its mind
            cmd("RSET", {Expect::Kind::other});
            messages.push_back(std::move(msg));
            continue;
        }
        if (msg.bdat) {
            size_t off = 0;
            do {
                size_t n = std::min<size_t>(msg.content.size() - off,
                                            r.chance(1, 2) ? r.range(1, 3000) : r.range(1, 70000));
                const bool last = off + n == msg.content.size();
                Action a = send("BDAT " + std::to_string(n) + (last ? " LAST" : "") + "\r\n" +
                                    msg.content.substr(off, n),
                                {{last ? Expect::Kind::bdat_last : Expect::Kind::bdat, m, 0}}, m);
                a.completes_msg = last;
                s.push_back(std::move(a));
                if (!pipelining || r.chance(1, 4)) s.push_back(wait_replies());
                off += n;
            } while (off < msg.content.size());
        } else {
            s.push_back(send("DATA\r\n", {{Expect::Kind::data, m, 0}}, m));
            s.push_back(wait_replies());
            Action body;
            body.kind = Action::Kind::body_if_go;
            body.bytes = dot_stuff(msg.content) + ".\r\n";
            body.expects = {{Expect::Kind::data_end, m, 0}};
            body.msg = m;
            body.completes_msg = true;
            s.push_back(std::move(body));
        }
        if (!pipelining || r.chance(1, 2)) s.push_back(wait_replies());
        if (r.chance(1, 10)) cmd("NOOP", {Expect::Kind::other});
        messages.push_back(std::move(msg));
        stats.messages_sent++;
    }
    if (r.chance(4, 5)) {
        s.push_back(send("QUIT\r\n", {{Expect::Kind::other}}));
        s.push_back(wait_replies());
    }
    // The cut: at a random action, after a random part of its bytes.
    if (r.chance(2, 5)) {
        c->cut_at = r.below(s.size());
        c->cut_off = s[c->cut_at].bytes.empty() ? 0 : r.below(s[c->cut_at].bytes.size() + 1);
        c->cut = static_cast<Client::Cut>(r.range(1, 4));
    }
    // Connect: the socket waits in the listener's backlog for the engine's accept.
    Socket sk;
    sk.fd = new_fd();
    sk.client = c->id;
    sk.ip = c->ip;
    sk.window = r.chance(1, 4) ? static_cast<uint32_t>(r.range(16, 2048)) : 65536;
    c->fd = sk.fd;
    c->expects.push_back({Expect::Kind::greet});
    c->waiting_since_us = now_us();
    c->next_us = now_us() + (talk_first ? r.range(0, 2000) : kPatienceUs);
    sockets[sk.fd] = std::move(sk);
    backlog.push_back(c->fd);
    trace(0xc11e, c->id, c->script.size());
    clients.push_back(std::move(c));
    stats.clients++;
}

void World::wake_client(uint32_t id, uint64_t delay_us) {
    Client& c = *clients[id];
    if (c.state == Client::State::done) return;
    c.next_us = std::min(c.next_us, now_us() + delay_us);
}

namespace {

int reply_code(const std::string& line) {
    if (line.size() < 3) return 0;
    return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

}  // namespace

// One step: read what arrived (a reply may decide the next action), then write what the
// script says, up to the cut.
void World::client_step(Client& c) {
    Socket* s = socket_of(c.fd);
    if (s == nullptr || s->rst) {  // reset: the client learns nothing more
        c.state = Client::State::done;
        if (s) s->client_closed = true;
        return;
    }
    c.next_us = kNever;
    if (c.state != Client::State::silent) {
        // Read a chunk of what the server sent.
        size_t n = std::min<size_t>(s->unread_by_client(), c.read_chunk_max);
        const size_t start = s->to_client_off;
        s->to_client_off += n;
        for (size_t i = start; i < start + n; i++) {
            char ch = s->to_client[i];
            c.line.push_back(ch);
            if (ch != '\n') continue;
            std::string line;
            line.swap(c.line);
            trace(0x4e91, c.id, line.size());
            if (line.size() < 4 || line[3] == '-') continue;  // a continuation line
            const int code = reply_code(line);
            if (c.expects.empty()) continue;  // an unsolicited 421 before a close
            Expect e = c.expects.front();
            c.expects.pop_front();
            c.waiting_since_us = now_us();
            if (e.kind == Expect::Kind::rcpt && code == 250) messages[e.msg].rcpt_ok[e.idx] = true;
            if (e.kind == Expect::Kind::data) c.last_data_code = code;
            const size_t q = line.find("queued as ");
            if (q != std::string::npos) {
                if (code != 250 ||
                    (e.kind != Expect::Kind::data_end && e.kind != Expect::Kind::bdat_last))
                    throw Failure("client " + std::to_string(c.id) + ": \"queued as\" answers " +
                                  "another command: " + line);
                SentMessage& m = messages[e.msg];
                if (!m.complete)
                    throw Failure("client " + std::to_string(c.id) +
                                  ": 250 for a message not completely sent: " + m.token);
                m.acked_id = line.substr(q + 10, 16);
                stats.acked++;
                trace(0xacced, c.id, static_cast<uint64_t>(e.msg));
            }
        }
        if (s->to_client_off == s->to_client.size()) {
            s->to_client.clear();
            s->to_client_off = 0;
        }
        if (s->unread_by_client() > 0) c.next_us = now_us() + std::max<uint64_t>(c.gap_us, 1);
    }
    const bool eof = s->server_closed && s->unread_by_client() == 0;
    if (eof || (c.state == Client::State::silent && s->server_closed)) {
        s->client_closed = true;
        c.state = Client::State::done;
        trace(0xe0f, c.id);
        return;
    }
    if (c.state == Client::State::draining || c.state == Client::State::silent) {
        check_patience(c, *s);
        return;
    }
    // Write.
    bool yielded = false;
    while (c.pc < c.script.size() && !yielded) {
        Action& a = c.script[c.pc];
        if (c.pc == c.cut_at && c.sent_off >= c.cut_off) {
            trace(0xc07, c.id, static_cast<uint64_t>(c.cut));
            switch (c.cut) {
                case Client::Cut::fin:  // half-close: keeps reading until the server closes
                    s->client_fin = true;
                    c.state = Client::State::draining;
                    c.waiting_since_us = now_us();
                    check_patience(c, *s);
                    return;
                case Client::Cut::close:
                    s->client_fin = true;
                    s->client_closed = true;
                    c.state = Client::State::done;
                    return;
                case Client::Cut::rst:
                    s->rst = true;
                    c.state = Client::State::done;
                    return;
                default:
                    c.state = Client::State::silent;
                    c.waiting_since_us = now_us();
                    check_patience(c, *s);
                    return;
            }
        }
        switch (a.kind) {
            case Action::Kind::wait_replies:
                if (!c.expects.empty()) {
                    yielded = true;
                    break;
                }
                c.pc++;
                continue;
            case Action::Kind::body_if_go:
                if (c.last_data_code != 354) {
                    c.pc++;
                    continue;
                }
                a.kind = Action::Kind::send;
                [[fallthrough]];
            case Action::Kind::send: {
                if (c.sent_off == 0) {
                    for (const Expect& e : a.expects)
                        c.expects.push_back(e);
                    if (!a.expects.empty() && c.expects.size() == a.expects.size())
                        c.waiting_since_us = now_us();
                }
                size_t room = a.bytes.size() - c.sent_off;
                if (c.pc == c.cut_at) room = std::min(room, c.cut_off - c.sent_off);
                const size_t n = std::min<size_t>(room, c.write_chunk_max);
                s->to_server.append(a.bytes, c.sent_off, n);
                c.sent_off += n;
                if (n > 0) c.waiting_since_us = now_us();  // still talking: not blocked
                if (c.sent_off == a.bytes.size()) {
                    if (a.completes_msg) messages[a.msg].complete = true;
                    c.pc++;
                    c.sent_off = 0;
                }
                if (n < room || c.write_chunk_max != UINT32_MAX || c.gap_us > 0) {
                    yielded = true;
                    c.next_us = std::min(c.next_us, now_us() + std::max<uint64_t>(c.gap_us, 1));
                }
                break;
            }
        }
    }
    if (c.pc == c.script.size() && c.state == Client::State::running) {
        // Done talking: without a QUIT the client just closes; after one, it reads to EOF.
        const bool quit = !c.script.empty() && c.script.back().kind == Action::Kind::wait_replies &&
                          c.script.size() >= 2 && c.script[c.script.size() - 2].bytes == "QUIT\r\n";
        if (!quit) {
            s->client_fin = true;
            s->client_closed = true;
            c.state = Client::State::done;
            return;
        }
        c.state = Client::State::draining;
        c.waiting_since_us = now_us();
    }
    check_patience(c, *s);
}

// A client owed a reply, or waiting for the server to close, waits at most kPatienceUs: past
// that the server hangs (its own timeouts are shorter).
void World::check_patience(Client& c, const Socket& s) {
    const bool waiting = !c.expects.empty() || c.state == Client::State::draining ||
                         c.state == Client::State::silent;
    if (!waiting || s.server_closed) return;
    if (now_us() - c.waiting_since_us >= kPatienceUs)
        throw Failure("client " + std::to_string(c.id) + " waited " +
                      std::to_string(kPatienceUs / 1000000) + " s for the server" + describe());
    c.next_us = std::min(c.next_us, c.waiting_since_us + kPatienceUs);
}

}  // namespace ringmail::sim
