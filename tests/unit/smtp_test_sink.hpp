// smtp_test_sink.hpp — a recording MessageSink and a driver loop for the server session tests.
//
// Used by tests/unit/smtp_*_test.cpp. The sink copies everything it is given and checks the
// sink protocol itself (begin → body* → end|abort, envelope views still intact at end); the
// harness plays the driver: feeds a client write, drains output, answers commits, re-feeds.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "net/smtp/relay_policy.hpp"
#include "net/smtp/smtp_server.hpp"

namespace ringmail::smtp::test {

class RecordingSink final : public MessageSink {
  public:
    struct Message {
        std::string helo, protocol, mail_from, mail_params;
        std::vector<std::pair<std::string, std::string>> rcpts;
        std::string received;  // the first chunk
        std::string body;      // every later chunk, concatenated
        size_t chunks = 0;
        bool ended = false;
        bool aborted = false;
    };

    Start message_begin(const Envelope& env) override {
        EXPECT_FALSE(open_) << "message_begin while a message is open";
        events.push_back("begin");
        if (!give_id) return {};
        Message m;
        m.helo = env.helo;
        m.protocol = env.protocol;
        m.mail_from = env.mail_from;
        m.mail_params = env.mail_params;
        for (const Recipient& r : env.rcpts)
            m.rcpts.emplace_back(r.address, r.params);
        messages.push_back(std::move(m));
        env_ = env;
        open_ = true;
        return {next_id, unix_time_s};
    }
    bool message_body(std::string_view chunk) override {
        EXPECT_TRUE(open_) << "message_body outside a message";
        Message& m = messages.back();
        if (m.chunks++ == 0) {
            m.received = chunk;
        } else {
            m.body.append(chunk);
        }
        body_calls++;
        return body_calls <= body_calls_ok;
    }
    void message_end() override {
        EXPECT_TRUE(open_) << "message_end outside a message";
        events.push_back("end");
        Message& m = messages.back();
        m.ended = true;
        // The envelope views must still point at the same text (session-owned arena).
        EXPECT_EQ(std::string(env_.mail_from), m.mail_from);
        EXPECT_EQ(env_.rcpts.size(), m.rcpts.size());
        for (size_t i = 0; i < env_.rcpts.size() && i < m.rcpts.size(); ++i)
            EXPECT_EQ(std::string(env_.rcpts[i].address), m.rcpts[i].first);
        open_ = false;
    }
    void message_abort() override {
        EXPECT_TRUE(open_) << "message_abort outside a message";
        events.push_back("abort");
        messages.back().aborted = true;
        open_ = false;
    }

    [[nodiscard]] size_t count(std::string_view event) const {
        size_t n = 0;
        for (const auto& e : events)
            n += e == event;
        return n;
    }

    std::vector<std::string> events;
    std::vector<Message> messages;
    bool give_id = true;
    uint64_t next_id = 0x1234;
    int64_t unix_time_s = 1700000000;  // Tue, 14 Nov 2023 22:13:20 +0000
    size_t body_calls_ok = SIZE_MAX;   // message_body fails after this many calls
    size_t body_calls = 0;

  private:
    bool open_ = false;
    Envelope env_;
};

// One server session with its settings, policy and sink, driven like the real driver does.
struct Harness {
    explicit Harness(bool trusted = false) : Harness(trusted, [](ServerSettings&) {}) {}
    template <typename Tweak>
    Harness(bool trusted, Tweak tweak)
        : policy({*Cidr::parse("127.0.0.0/8")}, {"relay.test", ".sub.test"}) {
        settings.hostname = "mx.test";
        settings.relay = &policy;
        tweak(settings);
        session = std::make_unique<ServerSession>(settings, sink);
        ClientInfo client;
        client.addr_text = trusted ? "127.0.0.1" : "192.0.2.7";
        client.addr = *IpAddress::parse(client.addr_text);
        client.relay_allowed = trusted;
        session->start(client);
        drain();
    }

    // One client write: fed, re-fed after each drain / commit until consumed or closing.
    void write(std::string_view data) {
        size_t pos = 0;
        int stuck = 0;
        while (pos < data.size() && !session->wants_close()) {
            const size_t n = session->feed(data.substr(pos));
            pos += n;
            drain();
            if (session->waiting_commit()) {
                session->commit_done(commit_result);
                drain();
            }
            stuck = n == 0 ? stuck + 1 : 0;
            ASSERT_LT(stuck, 3) << "session makes no progress";
        }
    }
    // Writes split into pieces at the given offsets.
    void write_split(std::string_view data, std::initializer_list<size_t> cuts) {
        size_t from = 0;
        for (const size_t c : cuts) {
            write(data.substr(from, c - from));
            from = c;
        }
        write(data.substr(from));
    }
    void write_bytewise(std::string_view data) {
        for (const char c : data)
            write(std::string_view(&c, 1));
    }
    void drain() {
        const std::string_view o = session->output();
        EXPECT_LE(o.size(), limits::session_output_bytes);
        out.append(o);
        session->output_sent(o.size());
    }
    // The reply lines received so far (without CRLF).
    [[nodiscard]] std::vector<std::string> lines() const {
        std::vector<std::string> r;
        size_t from = 0;
        for (size_t at; (at = out.find("\r\n", from)) != std::string::npos; from = at + 2)
            r.push_back(out.substr(from, at - from));
        return r;
    }
    [[nodiscard]] std::string last() const {
        const auto l = lines();
        return l.empty() ? std::string() : l.back();
    }
    // Lines after the first `skip` (the greeting and EHLO are usually skipped).
    [[nodiscard]] std::vector<std::string> lines_from(size_t skip) const {
        auto l = lines();
        l.erase(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(std::min(skip, l.size())));
        return l;
    }
    void clear_output() { out.clear(); }

    RelayPolicy policy;
    ServerSettings settings;
    RecordingSink sink;
    std::unique_ptr<ServerSession> session;
    std::string out;
    CommitResult commit_result = CommitResult::ok;
};

}  // namespace ringmail::smtp::test
