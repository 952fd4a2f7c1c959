// smtp_server_fuzz.cpp — the SMTP server session (net/smtp/smtp_server.hpp) fed arbitrary client
// bytes at arbitrary split points, with DATA and BDAT bodies, STARTTLS and AUTH.
//
// Input: four header bytes, then what the client sends.
//   [0] settings: bit0 client in --relay-networks, bit1 STARTTLS offered, bit2 AUTH offered,
//       bit3 submission listener, bit4 implicit TLS (tls_started right after start), bit5
//       message size limit 200 bytes, bit6 three recipients at most, bit7 three junk commands
//   [1] driver: bits0-1 commit results (ok, failed, no_space, each in turn), bit2 no queue id
//       for every third message, bit3 storage runs out after 64 bytes of text, bits4-5 AUTH
//       outcomes (ok, failed, temporary, each in turn), bits6-7 how the connection ends
//       (client stops, peer_closed, timeout, shutdown)
//   [2] split schedule: bits0-2 the largest write, bit3 a cut after every LF as well (a client
//       that waits for each reply), the whole byte seeds the random cuts
//   [3] bit0 timeout, bit1 shutdown, while the first commit is pending
//
// Each input runs twice: once in writes cut by the schedule, once a byte at a time. Both runs
// check the session's promises as they go (replies "ddd text" ending CRLF, at most 512 octets
// a line, enhanced status codes; the sink protocol; no bare CR/LF in an accepted message; no
// open relay; AUTH only over TLS; credentials wiped; progress). Then the two transcripts must
// be equal: how bytes are cut must not change what the session does — except where RFC 3207
// says so (bytes after STARTTLS in the same write are dropped) and RFC 2920 (text sent in the
// same write as DATA, before 354, is refused), which the byte-at-a-time client never does.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/limits.hpp"
#include "net/smtp/address.hpp"
#include "net/smtp/relay_policy.hpp"
#include "net/smtp/smtp_reply.hpp"
#include "net/smtp/smtp_server.hpp"
#include "tests/fuzz/fuzz_check.hpp"
#include "tls/auth.hpp"

namespace ringmail::smtp {
namespace {

constexpr size_t kHeaderBytes = 4;
constexpr std::string_view kHostname = "mx.test";
constexpr size_t kStorageTextMaxBytes = 64;  // bit3 of the driver byte
constexpr uint64_t kSmallSizeMaxBytes = 200;
constexpr std::string_view kStartTlsReply = "220 2.0.0 Ready to start TLS";
constexpr std::string_view kPipeliningViolation = "554 5.5.0 ";

// A reply line starting with kPipeliningViolation (not the same text inside another reply, e.g.
// an echoed address).
bool has_pipelining_violation(std::string_view out) {
    for (size_t at = 0; at < out.size();) {
        if (out.substr(at).starts_with(kPipeliningViolation)) return true;
        const size_t end = out.find("\r\n", at);
        if (end == std::string_view::npos) break;
        at = end + 2;
    }
    return false;
}

bool no_bare_cr_lf(std::string_view s) {
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return false;
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
    }
    return true;
}

bool has_cr_lf_nul(std::string_view s) {
    return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

struct Config {
    bool trusted, starttls, auth, submission, implicit_tls;
    uint64_t size_max;
    uint32_t rcpts_max, junk_max;
    uint8_t commit_mode, auth_mode, end_mode;
    bool refuse_ids, storage_limit;
    uint8_t split;
    bool timeout_in_commit, shutdown_in_commit;

    explicit Config(const uint8_t* h)
        : trusted(h[0] & 1),
          starttls(h[0] & 2),
          auth(h[0] & 4),
          submission(h[0] & 8),
          implicit_tls(h[0] & 16),
          size_max(h[0] & 32 ? kSmallSizeMaxBytes : limits::message_size_max_bytes_default),
          rcpts_max(h[0] & 64 ? 3 : limits::recipients_max_default),
          junk_max(h[0] & 128 ? 3 : limits::junk_commands_max_default),
          commit_mode(h[1] & 3),
          auth_mode((h[1] >> 4) & 3),
          end_mode((h[1] >> 6) & 3),
          refuse_ids(h[1] & 4),
          storage_limit(h[1] & 8),
          split(h[2]),
          timeout_in_commit(h[3] & 1),
          shutdown_in_commit(h[3] & 2) {}
};

// Records what the session hands over and checks the sink protocol and the envelope rules.
class Sink final : public MessageSink {
  public:
    Sink(const Config& cfg, const RelayPolicy& policy) : cfg_(cfg), policy_(policy) {}
    void attach(const ServerSession* s) { session_ = s; }

    Start message_begin(const Envelope& env) override {
        FUZZ_CHECK(!open_);
        ++begins_;
        check_envelope(env);
        log += "begin ";
        log += env.protocol;
        log += " <";
        log += env.mail_from;
        log += "> ";
        log += std::to_string(env.rcpts.size());
        log += "\n";
        if (cfg_.refuse_ids && begins_ % 3 == 1) return {};  // no storage for this one
        open_ = true;
        received_seen_ = false;
        text_.clear();
        env_ = env;
        mail_from_ = env.mail_from;
        rcpts_.clear();
        for (const Recipient& r : env.rcpts)
            rcpts_.emplace_back(r.address);
        id_ = 0x1000 + begins_;
        return {id_, 1700000000 + static_cast<int64_t>(begins_) * 86400 * 97};
    }

    bool message_body(std::string_view chunk) override {
        FUZZ_CHECK(open_);
        if (!received_seen_) {
            received_seen_ = true;
            check_received(chunk);
            return true;
        }
        FUZZ_CHECK(!chunk.empty());
        text_.append(chunk);
        return !(cfg_.storage_limit && text_.size() > kStorageTextMaxBytes);
    }

    void message_end() override {
        FUZZ_CHECK(open_);
        FUZZ_CHECK(received_seen_);
        // The envelope views still point at the same text (the session's arena).
        FUZZ_CHECK(env_.mail_from == mail_from_);
        FUZZ_CHECK(env_.rcpts.size() == rcpts_.size());
        for (size_t i = 0; i < rcpts_.size(); ++i)
            FUZZ_CHECK(env_.rcpts[i].address == rcpts_[i]);
        // Only a complete, valid message is committed (smtp.md: SMTP smuggling).
        FUZZ_CHECK(no_bare_cr_lf(text_));
        FUZZ_CHECK(text_.size() <= cfg_.size_max);
        FUZZ_CHECK(!(cfg_.storage_limit && text_.size() > kStorageTextMaxBytes));
        log += "end ";
        log += std::to_string(text_.size());
        log += "\n";
        log += text_;
        log += "\n";
        open_ = false;
        ++ends;
    }

    void message_abort() override {
        FUZZ_CHECK(open_);
        log += "abort\n";
        open_ = false;
    }

    [[nodiscard]] bool open() const { return open_; }
    [[nodiscard]] uint64_t last_id() const { return id_; }

    std::string log;
    size_t ends = 0;

  private:
    void check_envelope(const Envelope& env) const {
        FUZZ_CHECK(session_ != nullptr);
        FUZZ_CHECK(!env.rcpts.empty());
        FUZZ_CHECK(env.rcpts.size() <= cfg_.rcpts_max);
        FUZZ_CHECK(!has_cr_lf_nul(env.helo) && !env.helo.empty());
        FUZZ_CHECK(env.protocol == "SMTP" || env.protocol == "ESMTP" || env.protocol == "ESMTPS" ||
                   env.protocol == "ESMTPA" || env.protocol == "ESMTPSA");
        FUZZ_CHECK(!has_cr_lf_nul(env.mail_from) && !has_cr_lf_nul(env.mail_params));
        FUZZ_CHECK(env.mail_params.size() <= limits::mail_params_max_bytes);
        // RFC 6409: a submission listener takes mail only over TLS, after AUTH.
        if (cfg_.submission) FUZZ_CHECK(session_->tls_active() && session_->authenticated());
        // The stored reverse-path is a path again (parse ∘ print ∘ parse = parse).
        const std::string from = "<" + std::string(env.mail_from) + ">";
        const PathResult pf = parse_path(from, {.allow_null = true});
        FUZZ_CHECK(pf.status == PathStatus::ok && pf.rest.empty());
        FUZZ_CHECK(pf.path.address == env.mail_from);
        const bool may_relay = cfg_.trusted || session_->authenticated();
        for (const Recipient& r : env.rcpts) {
            FUZZ_CHECK(!has_cr_lf_nul(r.address) && !has_cr_lf_nul(r.params));
            FUZZ_CHECK(r.params.size() <= limits::mail_params_max_bytes);
            const std::string to = "<" + std::string(r.address) + ">";
            const PathResult pr = parse_path(to, {.allow_postmaster = true});
            FUZZ_CHECK(pr.status == PathStatus::ok && pr.rest.empty());
            FUZZ_CHECK(pr.path.address == r.address);
            // No open relay: an untrusted, unauthenticated client reaches only our domains
            // (or postmaster, RFC 5321 §4.5.1).
            if (!may_relay && !pr.path.domain.empty())
                FUZZ_CHECK(policy_.may_send(false, pr.path.local_part, pr.path.domain));
        }
    }

    // RFC 5321 §4.4: one header, folded with tabs; client text can never start a line of its own.
    static void check_received(std::string_view h) {
        FUZZ_CHECK(h.starts_with("Received: from "));
        FUZZ_CHECK(h.size() >= 2 && h.ends_with("\r\n"));
        FUZZ_CHECK(no_bare_cr_lf(h));
        size_t at = 0;
        for (size_t lf; (lf = h.find("\r\n", at)) != std::string_view::npos; at = lf + 2) {
            if (lf + 2 == h.size()) break;
            FUZZ_CHECK(h[lf + 2] == '\t');
        }
        for (const char c : h) {
            const auto u = static_cast<unsigned char>(c);
            FUZZ_CHECK(u >= 0x20 || c == '\r' || c == '\n' || c == '\t');
            FUZZ_CHECK(u != 0x7f);
        }
    }

    const Config& cfg_;
    const RelayPolicy& policy_;
    const ServerSession* session_ = nullptr;
    bool open_ = false;
    bool received_seen_ = false;
    size_t begins_ = 0;
    uint64_t id_ = 0;
    Envelope env_;
    std::string mail_from_;
    std::vector<std::string> rcpts_;
    std::string text_;
};

// Checks the reply stream: every line "ddd" + ' ' or '-' + text + CRLF, at most 512 octets; a
// multi-line reply keeps its code; every reply but the greeting, EHLO/HELO and the 3xx ones
// (AUTH challenges, 354) carries an enhanced status code of its class (RFC 2034, RFC 3463).
void check_replies(std::string_view out) {
    FUZZ_CHECK(out.empty() || out.ends_with("\r\n"));
    FUZZ_CHECK(no_bare_cr_lf(out));
    bool first = true;
    bool continued = false;
    bool multi = false;
    std::string_view code;
    for (size_t at = 0; at < out.size();) {
        const size_t end = out.find("\r\n", at);
        const std::string_view line = out.substr(at, end - at);
        at = end + 2;
        FUZZ_CHECK(line.size() + 2 <= limits::command_line_max_bytes);  // RFC 5321 §4.5.3.1.5
        FUZZ_CHECK(line.size() >= 4);
        FUZZ_CHECK(line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '5' &&
                   line[2] >= '0' && line[2] <= '9');
        FUZZ_CHECK(line[3] == ' ' || line[3] == '-');
        if (continued) FUZZ_CHECK(line.substr(0, 3) == code);
        if (!continued) multi = line[3] == '-';
        code = line.substr(0, 3);
        continued = line[3] == '-';
        const std::string_view text = line.substr(4);
        const auto n =
            static_cast<uint16_t>((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
        const bool greeting = first && text == "mx.test ESMTP ringmail";
        const bool hello = code == "250" && (multi || text == kHostname);
        const bool intermediate = code[0] == '3';  // 334, 354: RFC 3463 has no class 3
        if (!greeting && !hello && !intermediate && parse_enhanced_status(n, text).empty()) {
            std::fprintf(stderr, "reply without an enhanced status code: %.*s\n",
                         static_cast<int>(line.size()), line.data());
            FUZZ_CHECK(false && "every reply carries an enhanced status code");
        }
        first = false;
    }
    FUZZ_CHECK(!continued);  // a reply is written whole
}

struct Transcript {
    std::string out;
    std::string log;
    bool starttls = false;
};

// One connection, played like net/inbound/connection.cpp plays it.
class Driver {
  public:
    Driver(const Config& cfg, const RelayPolicy& policy, std::string_view client_addr)
        : cfg_(cfg), sink_(cfg, policy) {
        settings_.hostname = kHostname;
        settings_.relay = &policy;
        settings_.starttls_available = cfg.starttls;
        settings_.auth_available = cfg.auth;
        settings_.message_size_max_bytes = cfg.size_max;
        settings_.recipients_max = cfg.rcpts_max;
        settings_.junk_commands_max = cfg.junk_max;
        session_ = std::make_unique<ServerSession>(settings_, sink_);
        sink_.attach(session_.get());
        ClientInfo client;
        client.addr_text = client_addr;
        client.addr = *IpAddress::parse(client_addr);
        client.relay_allowed = cfg.trusted;
        client.submission = cfg.submission;
        session_->start(client);
        if (cfg.implicit_tls) session_->tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
        service();
    }

    // One client write, fed again after every drain until it is consumed or the session closes.
    void write(std::string_view data) {
        size_t pos = 0;
        int stuck = 0;
        while (pos < data.size() && !session_->wants_close()) {
            const size_t n = session_->feed(data.substr(pos));
            FUZZ_CHECK(n <= data.size() - pos);
            pos += n;
            service();
            stuck = n == 0 ? stuck + 1 : 0;
            FUZZ_CHECK(stuck < 3);  // the session makes progress once the driver did its part
        }
    }

    Transcript finish() {
        switch (cfg_.end_mode) {
            case 1:
                session_->peer_closed();
                break;
            case 2:
                session_->timeout();
                break;
            case 3:
                session_->shutdown();
                break;
            default:
                break;
        }
        service();
        if (cfg_.end_mode != 0) FUZZ_CHECK(session_->wants_close());
        if (session_->wants_close()) {
            // Closed is closed: no more input is taken and nothing more is said.
            FUZZ_CHECK(!sink_.open());
            FUZZ_CHECK(session_->feed("NOOP\r\n") == 0);
            session_->timeout();
            session_->shutdown();
            FUZZ_CHECK(session_->output().empty());
        } else {
            session_->peer_closed();  // the driver's end of a connection
            FUZZ_CHECK(!sink_.open());
        }
        FUZZ_CHECK(sink_.ends == commits_);
        check_replies(t_.out);
        t_.log = std::move(sink_.log);
        return std::move(t_);
    }

  private:
    void drain() {
        const std::string_view o = session_->output();
        FUZZ_CHECK(o.size() <= limits::session_output_bytes);
        // AUTH is offered only inside TLS, STARTTLS only outside it (RFC 3207, RFC 4954). Client
        // text echoed inside a reply ("555 5.5.4 Unsupported option: ...") never starts a line.
        for (size_t at = 0; at < o.size();) {
            const size_t end = o.find("\r\n", at);
            const std::string_view line = o.substr(at, end - at);
            at = end == std::string_view::npos ? o.size() : end + 2;
            if (!session_->tls_active()) FUZZ_CHECK(!line.starts_with("250-AUTH "));
            if (session_->tls_active()) FUZZ_CHECK(!line.starts_with("250-STARTTLS"));
        }
        if (o.find(kStartTlsReply) != std::string_view::npos) t_.starttls = true;
        t_.out.append(o);
        session_->output_sent(o.size());
        FUZZ_CHECK(session_->output().empty());
    }

    // What the driver does between reads: send, commit, run the TLS handshake, check passwords.
    void service() {
        drain();
        if (session_->waiting_commit()) {
            FUZZ_CHECK(!sink_.open());
            if (commits_ == 0 && cfg_.timeout_in_commit) session_->timeout();
            if (commits_ == 0 && cfg_.shutdown_in_commit) session_->shutdown();
            const CommitResult r = next_commit();
            session_->commit_done(r);
            if (r == CommitResult::ok) check_queued();
            drain();
        }
        if (session_->wants_starttls()) {
            FUZZ_CHECK(!session_->tls_active());
            session_->tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
            drain();
        }
        if (session_->wants_auth_check()) {
            // smtp.md: AUTH only over TLS; the credentials are a PLAIN or LOGIN pair.
            FUZZ_CHECK(session_->tls_active());
            const std::string_view user = session_->auth_username();
            const std::string_view pass = session_->auth_password();
            FUZZ_CHECK(!user.empty() && user.size() <= tls::auth_field_max_bytes);
            FUZZ_CHECK(!pass.empty() && pass.size() <= tls::auth_field_max_bytes);
            session_->auth_check_started();
            FUZZ_CHECK(session_->auth_username().empty() && session_->auth_password().empty());
            session_->auth_result(next_auth());
            drain();
        }
        if (session_->authenticated()) FUZZ_CHECK(session_->tls_active());
    }

    void check_queued() {
        char id[16];
        format_queue_id(sink_.last_id(), id);
        const std::string want = "250 2.0.0 Ok: queued as " + std::string(id, sizeof id) + "\r\n";
        FUZZ_CHECK(session_->output().starts_with(want));
    }

    CommitResult next_commit() {
        static constexpr CommitResult kCycle[] = {CommitResult::ok, CommitResult::failed,
                                                  CommitResult::no_space};
        const size_t n = commits_++;
        return cfg_.commit_mode == 3 ? kCycle[n % 3] : kCycle[cfg_.commit_mode];
    }

    AuthOutcome next_auth() {
        static constexpr AuthOutcome kCycle[] = {AuthOutcome::failed, AuthOutcome::ok,
                                                 AuthOutcome::temporary, AuthOutcome::too_many};
        const size_t n = auths_++;
        switch (cfg_.auth_mode) {
            case 0:
                return AuthOutcome::ok;
            case 1:
                return AuthOutcome::failed;
            case 2:
                return AuthOutcome::temporary;
            default:
                return kCycle[n % 4];
        }
    }

    const Config& cfg_;
    ServerSettings settings_;
    Sink sink_;
    std::unique_ptr<ServerSession> session_;
    Transcript t_;
    size_t commits_ = 0;
    size_t auths_ = 0;
};

// The refusal of a message refused for two reasons once depended on how its text was cut
// (corpus/smtp_server/regression-refusal-depends-on-split.bin): the replies must be identical.
bool same_replies(std::string_view a, std::string_view b) {
    return a == b;
}

uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

Transcript run(const Config& cfg, const RelayPolicy& policy, std::string_view client,
               bool bytewise) {
    Driver d(cfg, policy, cfg.trusted ? "127.0.0.1" : "192.0.2.7");
    if (bytewise) {
        for (size_t i = 0; i < client.size(); ++i)
            d.write(client.substr(i, 1));
        return d.finish();
    }
    // Largest write: from one byte to more than the session's output buffer.
    static constexpr size_t kMaxWrite[] = {2, 3, 8, 40, 300, 600, 5000, 100000};
    const size_t max_write = kMaxWrite[cfg.split & 7];
    const bool at_lines = (cfg.split & 8) != 0;
    uint64_t rng = cfg.split;
    for (size_t at = 0; at < client.size();) {
        size_t n = 1 + static_cast<size_t>(splitmix64(rng) % max_write);
        if (at_lines) {
            const size_t lf = client.find('\n', at);
            if (lf != std::string_view::npos && lf < at + n) n = lf + 1 - at;
        }
        d.write(client.substr(at, n));
        at += n;
    }
    return d.finish();
}

}  // namespace
}  // namespace ringmail::smtp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace ringmail::smtp;
    if (size < kHeaderBytes) return 0;
    static const RelayPolicy policy({*Cidr::parse("127.0.0.0/8")}, {"relay.test", ".sub.test"});
    const Config cfg(data);
    const std::string_view client(reinterpret_cast<const char*>(data) + kHeaderBytes,
                                  size - kHeaderBytes);
    const Transcript cut = run(cfg, policy, client, false);
    const Transcript bytes = run(cfg, policy, client, true);
    // RINGMAIL_FUZZ_TRACE=1 shows what the session said and stored, to read a saved input.
    static const bool trace = std::getenv("RINGMAIL_FUZZ_TRACE") != nullptr;
    if (trace) {
        std::fprintf(stderr, "--- cut writes:\n%s%s--- byte at a time:\n%s%s", cut.out.c_str(),
                     cut.log.c_str(), bytes.out.c_str(), bytes.log.c_str());
    }
    // A client that waits for each reply never pipelines DATA's text.
    FUZZ_CHECK(!has_pipelining_violation(bytes.out));
    const bool cut_matters = cut.starttls || bytes.starttls || has_pipelining_violation(cut.out);
    if (!cut_matters) {
        FUZZ_CHECK(same_replies(cut.out, bytes.out));
        FUZZ_CHECK(cut.log == bytes.log);
    }
    return 0;
}
