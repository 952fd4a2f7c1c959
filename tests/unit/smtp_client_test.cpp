// smtp_client_test.cpp — the SMTP client session against scripted servers: EHLO/HELO, whole
// transactions with and without PIPELINING and with CHUNKING (every reply fed at every split
// point), dot-stuffing, per-recipient outcomes, the RSET/QUIT rules, local refusals (5.6.7,
// 5.3.4, 5.1.3), 452 "too many recipients", timeouts, and hostile replies (OpenSMTPD
// CVE-2020-8794) — plus the reply parser alone and a fixed-seed byte-soup run.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "net/smtp/smtp_client.hpp"
#include "net/smtp/smtp_reply.hpp"

namespace ringmail::smtp {
namespace {

using Lines = std::vector<std::string>;
using E = ClientEvent;

constexpr std::string_view kGreeting = "220 mx.remote.test ESMTP\r\n";
constexpr std::string_view kEhloPipelining =
    "250-mx.remote.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n";
constexpr std::string_view kEhloPlain = "250-mx.remote.test\r\n250 SIZE\r\n";
constexpr std::string_view kEhloChunking =
    "250-mx.remote.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n";
constexpr std::string_view kEhloChunkingOnly = "250-mx.remote.test\r\n250 CHUNKING\r\n";

const char* outcome_name(RcptOutcome o) {
    switch (o) {
        case RcptOutcome::delivered:
            return "delivered";
        case RcptOutcome::deferred:
            return "deferred";
        case RcptOutcome::bounced:
            return "bounced";
        case RcptOutcome::deferred_too_many:
            return "too_many";
    }
    return "?";
}

// "bounced 550 5.1.1" — what the tests compare (the text is checked separately).
std::string describe(const RcptResult& r) {
    return std::string(outcome_name(r.outcome)) + " " + std::to_string(r.code) + " " +
           std::string(r.status);
}

struct Message {
    std::string mail_from = "sender@origin.test";
    std::vector<std::string> rcpts;
    std::vector<std::string> pieces;  // the text, in the chunks the driver pushes
    bool last_flag = false;           // push the final piece with last=true
    bool needs_8bit = false;
    bool needs_utf8 = false;
};

// Plays the delivery driver: drains output as if the socket took it all, reacts to events
// (begins the queued transactions, pushes text, quits when done), records what happened.
struct Harness {
    explicit Harness(uint32_t max_rcpts = 100) {
        settings.helo_name = "relay.test";
        settings.max_recipients_per_transaction = max_rcpts;
        c = std::make_unique<ClientSession>(settings);
        c->start();
    }

    void add(Message m) { messages.push_back(std::move(m)); }

    // Server bytes, fed like a driver does (re-fed after draining when not all consumed).
    void server(std::string_view bytes) {
        size_t pos = 0;
        int stuck = 0;
        while (pos < bytes.size()) {
            const size_t n = c->feed(bytes.substr(pos));
            ASSERT_LE(n, bytes.size() - pos);
            pos += n;
            pump();
            stuck = n == 0 ? stuck + 1 : 0;
            ASSERT_LT(stuck, 3) << "client makes no progress";
        }
    }
    void server_split(std::string_view bytes, size_t cut) {
        server(bytes.substr(0, std::min(cut, bytes.size())));
        if (cut < bytes.size()) server(bytes.substr(cut));
    }

    void pump() {
        for (int round = 0; round < 1000; ++round) {
            drain();
            bool progress = false;
            for (ClientEvent e; (e = c->next_event()) != E::none;) {
                progress = true;
                on_event(e);
            }
            if (c->wants_body()) progress |= push_body();
            if (!progress && c->output().empty()) return;
        }
        FAIL() << "driver loop does not settle";
    }

    void drain() {
        const std::string_view o = c->output();
        sent.append(o);
        c->output_sent(o.size());
    }

    void on_event(ClientEvent e) {
        events.push_back(e);
        if (e == E::ready && !hold) begin_next();
        if (e == E::transaction_done) {
            std::vector<std::string> r;
            std::vector<std::string> t;
            for (const RcptResult& x : c->results()) {
                r.push_back(describe(x));
                t.emplace_back(x.text);
            }
            results.push_back(r);
            texts.push_back(t);
        }
    }

    void begin_next() {
        // Events are history: a later reply in the same read may already have ended the
        // session, so a driver checks the phase before acting on `ready`.
        if (c->phase() != ClientPhase::ready) return;
        if (next < messages.size()) {
            const Message& m = messages[next++];
            views.assign(m.rcpts.begin(), m.rcpts.end());
            Transaction t;
            t.mail_from = m.mail_from;
            t.rcpts = views;
            for (const auto& p : m.pieces)
                t.size_bytes += p.size();
            t.needs_8bitmime = m.needs_8bit;
            t.needs_smtputf8 = m.needs_utf8;
            current = &m;
            piece = offset = 0;
            ASSERT_TRUE(c->begin_transaction(t));
        } else if (auto_quit) {
            c->quit();
        }
    }

    bool push_body() {
        bool progress = false;
        while (c->wants_body() && piece < current->pieces.size()) {
            const std::string_view p = std::string_view(current->pieces[piece]).substr(offset);
            const bool last = current->last_flag && piece + 1 == current->pieces.size();
            const size_t n = c->body_chunk(p, last);
            offset += n;
            if (offset == current->pieces[piece].size() && (n > 0 || p.empty())) {
                ++piece;
                offset = 0;
                progress = true;
                continue;
            }
            if (n == 0) return progress;
            progress = true;
            drain();
        }
        if (c->wants_body() && piece == current->pieces.size()) progress |= c->body_end();
        return progress;
    }

    [[nodiscard]] size_t count(ClientEvent e) const {
        return static_cast<size_t>(std::count(events.begin(), events.end(), e));
    }

    ClientSettings settings;
    std::unique_ptr<ClientSession> c;
    std::string sent;
    std::vector<ClientEvent> events;
    std::vector<Lines> results;
    std::vector<Lines> texts;
    std::vector<Message> messages;
    std::vector<std::string_view> views;
    const Message* current = nullptr;
    size_t next = 0, piece = 0, offset = 0;
    bool hold = false;  // do not begin transactions on ready
    bool auto_quit = true;
};

Message simple(std::vector<std::string> rcpts,
               std::vector<std::string> pieces = {"Subject: t\r\n\r\nhi\r\n"}) {
    Message m;
    m.rcpts = std::move(rcpts);
    m.pieces = std::move(pieces);
    return m;
}

// Runs a whole scripted session with every server write split at `cut`.
struct Outcome {
    std::string sent;
    std::vector<Lines> results;
    std::vector<ClientEvent> events;
    bool operator==(const Outcome&) const = default;
};

Outcome run(const std::vector<Message>& msgs, const std::vector<std::string>& script, size_t cut,
            uint32_t max_rcpts = 100) {
    Harness h(max_rcpts);
    for (const auto& m : msgs)
        h.add(m);
    for (const auto& s : script)
        h.server_split(s, cut);
    return {h.sent, h.results, h.events};
}

void expect_same_at_every_split(const std::vector<Message>& msgs,
                                const std::vector<std::string>& script, const Outcome& want) {
    size_t longest = 0;
    for (const auto& s : script)
        longest = std::max(longest, s.size());
    for (size_t cut = 0; cut <= longest; ++cut)
        ASSERT_EQ(run(msgs, script, cut), want) << "split at " << cut;
}

// --- whole transactions ------------------------------------------------------------------

TEST(SmtpClient, PipelinedTransactionWithMixedRecipientOutcomes) {
    const std::vector<Message> msgs = {simple({"a@dest.test", "b@dest.test", "c@dest.test"},
                                              {"Subject: t\r\n\r\n", ".leading dot\r\nend\r\n"})};
    const std::vector<std::string> script = {
        std::string(kGreeting), std::string(kEhloPipelining),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n450 4.2.1 Mailbox busy\r\n550 5.1.1 No such user\r\n"
        "354 End data with <CR><LF>.<CR><LF>\r\n",
        "250 2.0.0 Ok: queued as 12345\r\n", "221 2.0.0 Bye\r\n"};
    const Outcome got = run(msgs, script, SIZE_MAX);
    EXPECT_EQ(got.sent,
              "EHLO relay.test\r\n"
              "MAIL FROM:<sender@origin.test> SIZE=33\r\nRCPT TO:<a@dest.test>\r\n"
              "RCPT TO:<b@dest.test>\r\nRCPT TO:<c@dest.test>\r\nDATA\r\n"
              "Subject: t\r\n\r\n..leading dot\r\nend\r\n.\r\n"
              "QUIT\r\n");
    EXPECT_EQ(
        got.results,
        (std::vector<Lines>{{"delivered 250 2.0.0", "deferred 450 4.2.1", "bounced 550 5.1.1"}}));
    EXPECT_EQ(got.events, (std::vector<E>{E::greeting_ok, E::ready, E::body_wanted,
                                          E::transaction_done, E::ready, E::closed}));
    expect_same_at_every_split(msgs, script, got);
}

TEST(SmtpClient, WithoutPipeliningOneCommandAtATime) {
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPlain);
    EXPECT_FALSE(h.c->offers_pipelining());
    EXPECT_EQ(h.sent, "EHLO relay.test\r\nMAIL FROM:<sender@origin.test> SIZE=18\r\n");
    h.server("250 ok\r\n");
    EXPECT_TRUE(h.sent.ends_with("SIZE=18\r\nRCPT TO:<a@dest.test>\r\n"));
    h.server("250 ok\r\n");
    EXPECT_TRUE(h.sent.ends_with("RCPT TO:<b@dest.test>\r\n"));
    h.server("550 no\r\n");
    EXPECT_TRUE(h.sent.ends_with("RCPT TO:<b@dest.test>\r\nDATA\r\n"));
    h.server("354 go\r\n");
    EXPECT_TRUE(h.sent.ends_with("DATA\r\nSubject: t\r\n\r\nhi\r\n.\r\n"));
    h.server("250 ok\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"delivered 250 2.0.0", "bounced 550 5.0.0"}}));
    EXPECT_EQ(h.texts[0][1], "550 no");

    const std::vector<std::string> script = {std::string(kGreeting), std::string(kEhloPlain),
                                             "250 ok\r\n",           "250 ok\r\n",
                                             "550 no\r\n",           "354 go\r\n",
                                             "250 ok\r\n",           "221 bye\r\n"};
    expect_same_at_every_split({simple({"a@dest.test", "b@dest.test"})}, script,
                               run({simple({"a@dest.test", "b@dest.test"})}, script, SIZE_MAX));
}

TEST(SmtpClient, ChunkingSendsBdatWithoutStuffing) {
    Message m = simple({"a@dest.test"}, {"abc\r\n", ".def\r\n", ".x"});
    m.last_flag = true;
    const std::vector<std::string> script = {std::string(kGreeting),
                                             std::string(kEhloChunking),
                                             "250 2.1.0 ok\r\n250 2.1.5 ok\r\n",
                                             "250 2.0.0 chunk\r\n250 2.0.0 chunk\r\n",
                                             "250 2.0.0 queued\r\n",
                                             "221 bye\r\n"};
    const Outcome got = run({m}, script, SIZE_MAX);
    EXPECT_EQ(got.sent,
              "EHLO relay.test\r\nMAIL FROM:<sender@origin.test>\r\nRCPT TO:<a@dest.test>\r\n"
              "BDAT 5\r\nabc\r\nBDAT 6\r\n.def\r\nBDAT 2 LAST\r\n.x"
              "QUIT\r\n");
    EXPECT_EQ(got.results, (std::vector<Lines>{{"delivered 250 2.0.0"}}));
    expect_same_at_every_split({m}, script, got);
}

TEST(SmtpClient, ChunkingEndedByBodyEndSendsBdatZeroLast) {
    Harness h;
    h.add(simple({"a@dest.test"}, {"abc\r\n"}));
    h.server(kGreeting);
    h.server(kEhloChunkingOnly);
    h.server("250 ok\r\n");
    h.server("250 ok\r\n");
    // Without PIPELINING each chunk waits for the answer to the previous one.
    EXPECT_TRUE(h.sent.ends_with("RCPT TO:<a@dest.test>\r\nBDAT 5\r\nabc\r\n"));
    h.server("250 ok\r\n");
    EXPECT_TRUE(h.sent.ends_with("BDAT 5\r\nabc\r\nBDAT 0 LAST\r\n"));
    EXPECT_EQ(h.c->timeout_ms(), 600'000u);
    h.server("250 2.0.0 queued\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"delivered 250 2.0.0"}}));
}

TEST(SmtpClient, RefusedBdatChunkFailsTheMessageAndResets) {
    Harness h;
    Message m = simple({"a@dest.test", "b@dest.test"}, {"abc\r\n", "def\r\n"});
    h.add(m);
    h.server(kGreeting);
    h.server(kEhloChunking);
    h.server("250 ok\r\n250 ok\r\n250 ok\r\n");
    EXPECT_TRUE(h.sent.ends_with("BDAT 5\r\nabc\r\nBDAT 5\r\ndef\r\nBDAT 0 LAST\r\n"));
    h.server("552 5.3.4 too big\r\n503 5.5.1 no\r\n503 5.5.1 no\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"bounced 552 5.3.4", "bounced 552 5.3.4"}}));
    EXPECT_TRUE(h.sent.ends_with("RSET\r\n"));
    h.server("250 ok\r\n");
    EXPECT_TRUE(h.sent.ends_with("RSET\r\nQUIT\r\n"));
}

TEST(SmtpClient, DotStuffingAcrossChunkBoundaries) {
    const std::vector<std::string> pieces = {"a\r\n", ".b\r\n", "\r", "\n.", "c\r\n..", "d"};
    for (const bool pipelining : {true, false}) {
        Harness h;
        h.add(simple({"x@dest.test"}, pieces));
        h.server(kGreeting);
        h.server(pipelining ? kEhloPipelining : kEhloPlain);
        h.server(pipelining ? "250 ok\r\n250 ok\r\n354 go\r\n" : "250 ok\r\n");
        if (!pipelining) h.server("250 ok\r\n");
        if (!pipelining) h.server("354 go\r\n");
        // Text not ending in CRLF gets one before the final dot.
        EXPECT_TRUE(h.sent.ends_with("DATA\r\na\r\n..b\r\n\r\n..c\r\n...d\r\n.\r\n")) << h.sent;
    }
}

TEST(SmtpClient, EmptyTextAndLastFlagInDataMode) {
    Harness h;
    Message empty = simple({"x@dest.test"}, {});
    Message flagged = simple({"x@dest.test"}, {"a\r\n", "b"});
    flagged.last_flag = true;
    h.add(empty);
    h.add(flagged);
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    EXPECT_TRUE(h.sent.ends_with("DATA\r\n.\r\n"));
    h.server("250 ok\r\n");
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    EXPECT_TRUE(h.sent.ends_with("DATA\r\na\r\nb\r\n.\r\n"));
    h.server("250 ok\r\n");
    EXPECT_EQ(h.results.size(), 2u);
}

TEST(SmtpClient, LongTextFlowsThroughTheBoundedOutput) {
    std::string text;
    for (int i = 0; i < 5000; ++i)
        text += (i % 7 == 0 ? ".dotted line " : "line ") + std::to_string(i) + "\r\n";
    std::string stuffed;
    for (size_t at = 0; at < text.size();) {
        const size_t lf = text.find('\n', at);
        if (text[at] == '.') stuffed += '.';
        stuffed += text.substr(at, lf + 1 - at);
        at = lf + 1;
    }
    Harness h;
    h.add(simple({"x@dest.test"}, {text}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    EXPECT_TRUE(h.sent.ends_with("DATA\r\n" + stuffed + ".\r\n"));
}

// --- failures of a transaction -----------------------------------------------------------

TEST(SmtpClient, MailRefusedAppliesToEveryRecipient) {
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server(
        "550 5.7.1 Sender blocked\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n"
        "503 5.5.1 need MAIL\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"bounced 550 5.7.1", "bounced 550 5.7.1"}}));
    EXPECT_EQ(h.texts[0][0], "550 5.7.1 Sender blocked");
    EXPECT_TRUE(h.sent.ends_with("DATA\r\nRSET\r\n"));

    Harness plain;
    plain.add(simple({"a@dest.test", "b@dest.test"}));
    plain.server(kGreeting);
    plain.server(kEhloPlain);
    plain.server("451 4.3.0 try later\r\n");
    EXPECT_EQ(plain.results, (std::vector<Lines>{{"deferred 451 4.3.0", "deferred 451 4.3.0"}}));
    EXPECT_EQ(plain.sent.find("RCPT"), std::string::npos);
    EXPECT_TRUE(plain.sent.ends_with("SIZE=18\r\nRSET\r\n"));
}

TEST(SmtpClient, DataRefusedAppliesToAcceptedRecipients) {
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n554 5.6.0 no thanks\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"bounced 554 5.6.0", "bounced 550 5.1.1"}}));
    EXPECT_TRUE(h.sent.ends_with("DATA\r\nRSET\r\n"));
    h.server("250 ok\r\n");
    EXPECT_EQ(h.count(E::ready), 2u);
}

TEST(SmtpClient, FinalDotTemporaryAndPermanentFailures) {
    for (const auto& [reply, want] : std::vector<std::pair<std::string, std::string>>{
             {"451 4.3.0 queue trouble\r\n", "deferred 451 4.3.0"},
             {"552 5.3.4 too big\r\n", "bounced 552 5.3.4"},
             {"554 rejected\r\n", "bounced 554 5.0.0"}}) {
        Harness h;
        h.add(simple({"a@dest.test", "b@dest.test"}));
        h.server(kGreeting);
        h.server(kEhloPipelining);
        h.server("250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n");
        EXPECT_EQ(h.c->timeout_ms(), 600'000u) << "final dot timeout";
        h.server(reply);
        EXPECT_EQ(h.results, (std::vector<Lines>{{want, "bounced 550 5.1.1"}}));
        // The server ended the transaction itself: no RSET, straight to the next step.
        EXPECT_TRUE(h.sent.ends_with(".\r\nQUIT\r\n"));
    }
}

TEST(SmtpClient, NoRecipientAcceptedSendsRsetInsteadOfText) {
    Harness h;  // pipelined: DATA went out already; its 554 is expected
    h.add(simple({"a@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"bounced 550 5.1.1"}}));
    EXPECT_TRUE(h.sent.ends_with("DATA\r\nRSET\r\n"));
    EXPECT_EQ(h.count(E::body_wanted), 0u);

    Harness odd;  // a server that says 354 anyway gets an empty message, then RSET
    odd.add(simple({"a@dest.test"}));
    odd.server(kGreeting);
    odd.server(kEhloPipelining);
    odd.server("250 ok\r\n550 5.1.1 no\r\n354 go\r\n");
    EXPECT_TRUE(odd.sent.ends_with("DATA\r\n.\r\n"));
    EXPECT_EQ(odd.count(E::transaction_done), 0u);
    odd.server("250 ok\r\n");
    EXPECT_EQ(odd.results, (std::vector<Lines>{{"bounced 550 5.1.1"}}));
    EXPECT_TRUE(odd.sent.ends_with("DATA\r\n.\r\nRSET\r\n"));

    Harness plain;  // without pipelining DATA is never sent
    plain.add(simple({"a@dest.test"}));
    plain.server(kGreeting);
    plain.server(kEhloPlain);
    plain.server("250 ok\r\n");
    plain.server("450 4.2.0 busy\r\n");
    EXPECT_EQ(plain.results, (std::vector<Lines>{{"deferred 450 4.2.0"}}));
    EXPECT_TRUE(plain.sent.ends_with("RCPT TO:<a@dest.test>\r\nRSET\r\n"));
}

TEST(SmtpClient, EhloRefusedFallsBackToHelo) {
    Harness h;
    h.add(simple({"a@dest.test"}));
    h.server(kGreeting);
    h.server("502 5.5.2 command not recognized\r\n");
    EXPECT_EQ(h.sent, "EHLO relay.test\r\nHELO relay.test\r\n");
    h.server("250 mx.remote.test\r\n");
    EXPECT_FALSE(h.c->esmtp());
    EXPECT_TRUE(h.sent.ends_with("HELO relay.test\r\nMAIL FROM:<sender@origin.test>\r\n"));
}

TEST(SmtpClient, GreetingOrHeloRefusedTriesTheNextMx) {
    for (const auto& script : std::vector<std::vector<std::string>>{
             {"554 5.7.1 go away\r\n"},
             {"421 4.3.2 busy\r\n"},
             {std::string(kGreeting), "421 4.7.0 not now\r\n"},
             {std::string(kGreeting), "500 what\r\n", "550 no\r\n"}}) {
        Harness h;
        for (const auto& s : script)
            h.server(s);
        EXPECT_EQ(h.count(E::greeting_failed), 1u);
        EXPECT_TRUE(h.sent.ends_with("QUIT\r\n"));
        EXPECT_EQ(h.c->last_reply_text().substr(0, 3), script.back().substr(0, 3));
        h.server("221 bye\r\n");
        EXPECT_EQ(h.events.back(), E::closed);
        EXPECT_TRUE(h.c->wants_close());
    }
}

TEST(SmtpClient, TooManyRecipientsDefersTheRestAndLowersTheLimit) {
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test", "c@dest.test"}));
    h.add(simple({"b@dest.test", "c@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server(
        "250 ok\r\n250 ok\r\n452 4.5.3 Too many recipients\r\n452 4.5.3 Too many\r\n"
        "354 go\r\n");
    h.server("250 2.0.0 ok\r\n");
    EXPECT_EQ(h.results[0],
              (Lines{"delivered 250 2.0.0", "too_many 452 4.5.3", "too_many 452 4.5.3"}));
    EXPECT_EQ(h.c->recipient_limit(), 1u);
    // The next transaction on this connection carries one recipient; the other waits.
    EXPECT_TRUE(h.sent.ends_with("RCPT TO:<b@dest.test>\r\nDATA\r\n"));
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.server("250 2.0.0 ok\r\n");
    EXPECT_EQ(h.results[1], (Lines{"delivered 250 2.0.0", "too_many 0 4.5.3"}));

    Harness plain;  // without pipelining no RCPT follows the 452
    plain.add(simple({"a@dest.test", "b@dest.test", "c@dest.test"}));
    plain.server(kGreeting);
    plain.server(kEhloPlain);
    plain.server("250 ok\r\n");
    plain.server("250 ok\r\n");
    plain.server("452 4.5.3 Too many recipients\r\n");
    EXPECT_TRUE(plain.sent.ends_with("RCPT TO:<b@dest.test>\r\nDATA\r\n"));
    plain.server("354 go\r\n");
    plain.server("250 ok\r\n");
    EXPECT_EQ(plain.results[0],
              (Lines{"delivered 250 2.0.0", "too_many 452 4.5.3", "too_many 452 4.5.3"}));
}

TEST(SmtpClient, FirstRecipient452IsAnOrdinaryDeferral) {
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n452 4.2.2 mailbox full\r\n250 ok\r\n354 go\r\n");
    h.server("250 ok\r\n");
    EXPECT_EQ(h.results[0], (Lines{"deferred 452 4.2.2", "delivered 250 2.0.0"}));
    EXPECT_EQ(h.c->recipient_limit(), 100u);
}

TEST(SmtpClient, RecipientsOverTheSettingWaitForTheNextTransaction) {
    Harness h(2);
    h.add(simple({"a@dest.test", "b@dest.test", "c@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    EXPECT_EQ(h.sent.find("c@dest.test"), std::string::npos);
    h.server("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    h.server("250 ok\r\n");
    EXPECT_EQ(h.results[0],
              (Lines{"delivered 250 2.0.0", "delivered 250 2.0.0", "too_many 0 4.5.3"}));
}

TEST(SmtpClient, Smtputf8NeededButNotOfferedBouncesWithoutSending) {
    Harness h;
    Message m = simple({"a@dest.test", "b@dest.test"});
    m.needs_utf8 = true;
    h.add(m);
    h.server(kGreeting);
    h.server(kEhloPipelining);
    EXPECT_EQ(h.sent, "EHLO relay.test\r\nQUIT\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"bounced 0 5.6.7", "bounced 0 5.6.7"}}));
    EXPECT_EQ(h.events, (std::vector<E>{E::greeting_ok, E::ready, E::transaction_done, E::ready}));

    Harness ok;  // offered: the parameter goes with MAIL
    ok.add(m);
    ok.server(kGreeting);
    ok.server(kEhloChunking);
    EXPECT_TRUE(
        ok.sent.ends_with("MAIL FROM:<sender@origin.test> SMTPUTF8\r\n"
                          "RCPT TO:<a@dest.test>\r\nRCPT TO:<b@dest.test>\r\n"));
}

TEST(SmtpClient, MessageOverTheServerSizeBouncesWithoutSending) {
    Harness h;
    h.add(simple({"a@dest.test"}, {std::string(1000001, 'x')}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    EXPECT_EQ(h.c->server_size_max(), 1000000u);
    EXPECT_EQ(h.sent, "EHLO relay.test\r\nQUIT\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"bounced 0 5.3.4"}}));
}

TEST(SmtpClient, EightBitParameterOnlyWhereOffered) {
    Message m = simple({"a@dest.test"});
    m.needs_8bit = true;
    Harness h;
    h.add(m);
    h.server(kGreeting);
    h.server(kEhloPipelining);
    EXPECT_TRUE(
        h.sent.ends_with("MAIL FROM:<sender@origin.test> SIZE=18 BODY=8BITMIME\r\n"
                         "RCPT TO:<a@dest.test>\r\nDATA\r\n"));
    Harness plain;  // not offered: sent as is (documented choice)
    plain.add(m);
    plain.server(kGreeting);
    plain.server(kEhloPlain);
    EXPECT_TRUE(plain.sent.ends_with("MAIL FROM:<sender@origin.test> SIZE=18\r\n"));
}

TEST(SmtpClient, UnsendableAddressesAreRefusedLocally) {
    Harness h;
    h.add(simple({"a@dest.test", "evil@dest.test>\r\nRSET", std::string(300, 'x') + "@d.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    EXPECT_EQ(h.sent.find("evil"), std::string::npos);
    EXPECT_EQ(h.sent.find("xxxx"), std::string::npos);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.server("250 ok\r\n");
    EXPECT_EQ(h.results[0], (Lines{"delivered 250 2.0.0", "bounced 0 5.1.3", "bounced 0 5.1.3"}));

    Harness s;
    Message bad = simple({"a@dest.test"});
    bad.mail_from = "x@y\r\nDATA";
    s.add(bad);
    s.server(kGreeting);
    s.server(kEhloPipelining);
    EXPECT_EQ(s.results[0], (Lines{"bounced 0 5.1.7"}));
    EXPECT_EQ(s.sent, "EHLO relay.test\r\nQUIT\r\n");
}

TEST(SmtpClient, ConnectionReuseWithRsetAndQuit) {
    Harness h;
    h.add(simple({"a@dest.test"}));
    h.add(simple({"b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no recipients\r\n");
    h.server("250 2.0.0 reset\r\n");
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.server("250 2.0.0 queued\r\n");
    h.server("221 2.0.0 bye\r\n");
    EXPECT_EQ(h.sent,
              "EHLO relay.test\r\n"
              "MAIL FROM:<sender@origin.test> SIZE=18\r\nRCPT TO:<a@dest.test>\r\nDATA\r\n"
              "RSET\r\n"
              "MAIL FROM:<sender@origin.test> SIZE=18\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n"
              "Subject: t\r\n\r\nhi\r\n.\r\n"
              "QUIT\r\n");
    EXPECT_EQ(h.results, (std::vector<Lines>{{"bounced 550 5.1.1"}, {"delivered 250 2.0.0"}}));
    EXPECT_EQ(h.events.back(), E::closed);
    EXPECT_TRUE(h.c->wants_close());
}

TEST(SmtpClient, BeginTransactionOnlyWhenReady) {
    Harness h;
    h.hold = true;
    const std::string_view r[] = {"a@dest.test"};
    Transaction t;
    t.mail_from = "s@o.test";
    t.rcpts = r;
    EXPECT_FALSE(h.c->begin_transaction(t));  // before the greeting
    h.server(kGreeting);
    h.server(kEhloPipelining);
    EXPECT_FALSE(h.c->begin_transaction(Transaction{}));  // no recipient
    EXPECT_TRUE(h.c->begin_transaction(t));
    EXPECT_FALSE(h.c->begin_transaction(t));  // one at a time
}

TEST(SmtpClient, EhloKeywords) {
    Harness h;
    h.server(kGreeting);
    h.server(
        "250-mx\r\n250-pipelining\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
        "250-SIZE\r\n250-SMTPUTF8\r\n250-8BITMIME\r\n250 CHUNKING\r\n");
    EXPECT_TRUE(h.c->esmtp());
    EXPECT_TRUE(h.c->offers_pipelining());
    EXPECT_TRUE(h.c->offers_starttls());
    EXPECT_TRUE(h.c->offers_enhanced_status());
    EXPECT_TRUE(h.c->offers_smtputf8());
    EXPECT_TRUE(h.c->offers_8bitmime());
    EXPECT_TRUE(h.c->offers_chunking());
    EXPECT_EQ(h.c->server_size_max(), 0u);  // SIZE without a number: no fixed limit
}

TEST(SmtpClient, TimeoutFollowsThePhase) {
    Harness h;
    h.hold = true;
    EXPECT_EQ(h.c->timeout_ms(), 300'000u);  // greeting
    h.server(kGreeting);
    EXPECT_EQ(h.c->phase(), ClientPhase::ehlo);
    h.server(kEhloPlain);
    EXPECT_EQ(h.c->timeout_ms(), 0u);  // idle
    h.add(simple({"a@dest.test"}));
    h.begin_next();
    h.pump();
    h.hold = false;
    EXPECT_EQ(h.c->timeout_ms(), 300'000u);  // MAIL
    h.server("250 ok\r\n");
    EXPECT_EQ(h.c->timeout_ms(), 300'000u);  // RCPT
    h.server("250 ok\r\n");
    EXPECT_EQ(h.c->timeout_ms(), 120'000u);  // DATA initiation
    h.server("354 go\r\n");
    EXPECT_EQ(h.c->timeout_ms(), 600'000u);  // final dot
    EXPECT_EQ(h.c->phase(), ClientPhase::data_end);

    // The data block timeout applies while text is being sent.
    Harness b;
    b.add(simple({"a@dest.test"}, {std::string(64 * 1024, 'x')}));
    b.server(kGreeting);
    b.server(kEhloPipelining);
    b.hold = true;
    const size_t before = b.sent.size();
    ASSERT_EQ(b.c->feed("250 ok\r\n250 ok\r\n354 go\r\n"), 24u);
    EXPECT_EQ(b.c->next_event(), E::body_wanted);
    EXPECT_EQ(b.c->timeout_ms(), 180'000u);
    EXPECT_EQ(b.sent.size(), before);
}

TEST(SmtpClient, TimeoutDefersPendingRecipients) {
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n250 ok\r\n");
    h.c->timeout();
    h.pump();
    EXPECT_EQ(h.results[0], (Lines{"deferred 0 4.4.2", "deferred 0 4.4.2"}));
    EXPECT_EQ(h.events.back(), E::protocol_error);
    EXPECT_TRUE(h.c->wants_close());
}

TEST(SmtpClient, QuitDuringTransactionDefersAndCloses) {
    Harness h;
    h.add(simple({"a@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.c->quit();
    h.pump();
    EXPECT_EQ(h.results[0], (Lines{"deferred 0 4.3.2"}));
    EXPECT_EQ(h.events.back(), E::closed);
}

TEST(SmtpClient, PeerCloseWhileIdleIsAnOrdinaryClose) {
    Harness h;
    h.hold = true;
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.c->peer_closed();
    h.pump();
    EXPECT_EQ(h.events.back(), E::closed);
    EXPECT_EQ(h.count(E::protocol_error), 0u);

    Harness s;  // an idle server saying 421 before it hangs up
    s.hold = true;
    s.server(kGreeting);
    s.server(kEhloPipelining);
    s.server("421 4.4.2 idle too long\r\n");
    EXPECT_EQ(s.events.back(), E::closed);
}

// --- hostile replies ---------------------------------------------------------------------

// A session in the middle of a pipelined transaction with two recipients; `bytes` arrive after
// MAIL was answered. Every hostile case must end in protocol_error with both deferred.
void expect_hostile(std::string_view bytes, std::string_view reason, bool close_after = false) {
    SCOPED_TRACE(std::string(bytes.substr(0, 60)));
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n");
    h.server(bytes);
    if (close_after) {
        h.c->peer_closed();
        h.pump();
    }
    ASSERT_FALSE(h.events.empty());
    EXPECT_EQ(h.events.back(), E::protocol_error);
    EXPECT_EQ(h.c->error(), reason);
    ASSERT_EQ(h.results.size(), 1u);
    EXPECT_EQ(h.results[0], (Lines{"deferred 0 4.5.0", "deferred 0 4.5.0"}))
        << "every recipient deferred";
    EXPECT_TRUE(h.c->wants_close());
    EXPECT_EQ(h.c->feed("250 more\r\n"), 10u);  // a dead session swallows the rest
}

TEST(SmtpClientHostile, ThousandsOfContinuationLines) {
    std::string flood;
    for (int i = 0; i < 5000; ++i)
        flood += "250-x\r\n";
    expect_hostile(flood, "too many reply lines");
}

TEST(SmtpClientHostile, ReplyTooLongInTotal) {
    std::string flood;
    for (int i = 0; i < 20; ++i)
        flood += "250-" + std::string(900, 'y') + "\r\n";
    expect_hostile(flood, "reply too long");
}

TEST(SmtpClientHostile, OverlongLineWithoutCrlf) {
    expect_hostile("250 " + std::string(100000, 'z'), "reply line too long");
}

TEST(SmtpClientHostile, NonNumericCodes) {
    expect_hostile("abc hello\r\n", "reply code is not numeric");
    expect_hostile("2x0 hello\r\n", "reply code is not numeric");
    expect_hostile("199 hello\r\n", "reply code is not numeric");
    expect_hostile("25\r\n", "reply code is not numeric");
    expect_hostile("\r\n", "reply code is not numeric");
}

TEST(SmtpClientHostile, CodeChangesBetweenLines) {
    expect_hostile("250-first\r\n550 second\r\n", "reply code changes between lines");
}

TEST(SmtpClientHostile, BadSeparator) {
    expect_hostile("250_ok\r\n", "bad reply separator");
}

TEST(SmtpClientHostile, MixedContinuationMarkers) {
    // "250 " ends a reply whatever came before it: here "250 a" answers the first RCPT,
    // "250-b"+"250 c" the second, "354" the DATA; the last reply answers nothing.
    expect_hostile("250 a\r\n250-b\r\n250 c\r\n354 d\r\n250-e\r\n250 f\r\n", "unsolicited reply");
}

TEST(SmtpClientHostile, CloseInTheMiddleOfAReply) {
    Harness h;
    h.add(simple({"a@dest.test", "b@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n250 ok\r\n250-partial");
    h.c->peer_closed();
    h.pump();
    EXPECT_EQ(h.c->error(), "connection closed in the middle of a reply");
    EXPECT_EQ(h.results[0], (Lines{"deferred 0 4.4.2", "deferred 0 4.4.2"}));
    EXPECT_EQ(h.events.back(), E::protocol_error);
}

TEST(SmtpClientHostile, CloseAfterTheFinalDotDefersAcceptedRecipients) {
    Harness h;
    h.add(simple({"a@dest.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.c->peer_closed();
    h.pump();
    EXPECT_EQ(h.results[0], (Lines{"deferred 0 4.4.2"}));  // at-least-once: retry
}

TEST(SmtpClientHostile, ReplyBeforeTheCommandWasSent) {
    ClientSettings settings;
    ClientSession c(settings);
    c.start();
    // The greeting and an EHLO answer in one read: EHLO was written but not yet sent.
    const std::string both = std::string(kGreeting) + "250 mx\r\n";
    EXPECT_EQ(c.feed(both), both.size());
    EXPECT_EQ(c.next_event(), E::greeting_ok);
    EXPECT_EQ(c.next_event(), E::protocol_error);
    EXPECT_EQ(c.error(), std::string_view("unsolicited reply"));
}

TEST(SmtpClientHostile, ReplyWhileTextIsBeingSent) {
    Harness h;
    h.add(simple({"a@dest.test"}, {std::string(100000, 'x')}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.hold = true;
    ASSERT_EQ(h.c->feed("250 ok\r\n250 ok\r\n354 go\r\n"), 24u);
    EXPECT_EQ(h.c->next_event(), E::body_wanted);
    h.drain();
    ASSERT_EQ(h.c->body_chunk(std::string(10, 'x')), 10u);
    h.drain();
    h.server("554 5.0.0 stop\r\n");
    EXPECT_EQ(h.c->error(), std::string_view("unsolicited reply"));
    EXPECT_EQ(h.results[0], (Lines{"deferred 0 4.5.0"}));
    EXPECT_EQ(h.c->body_chunk("more"), 4u);  // dropped: the session is over
}

TEST(SmtpClientHostile, UnexpectedCodesForTheCommand) {
    expect_hostile("354 go ahead\r\n", "unexpected 3xx reply");
    // 250 to DATA (after the RCPTs) is not a valid start of the text.
    expect_hostile("250 ok\r\n250 ok\r\n250 ok\r\n", "DATA answered without 354");
    // A 3xx other than 354 neither: never a bounce with a "3.x.x" status (found by the fuzzer).
    expect_hostile("250 ok\r\n250 ok\r\n353 go\r\n", "DATA answered without 354");
}

// --- the reply parser alone --------------------------------------------------------------

ReplyParser::Status parse_all(ReplyParser& p, std::string_view in) {
    size_t n = 0;
    const auto st = p.feed(in, n);
    EXPECT_TRUE(st != ReplyParser::Status::complete || n <= in.size());
    return st;
}

TEST(SmtpReply, MultiLineReplyAndEnhancedCode) {
    ReplyParser p;
    size_t n = 0;
    const std::string_view in = "250-mx.test greets\r\n250-PIPELINING\n250 2.0.0 ok\r\nextra";
    EXPECT_EQ(p.feed(in, n), ReplyParser::Status::complete);
    EXPECT_EQ(n, in.size() - 5);  // stops after the reply
    EXPECT_EQ(p.code(), 250);
    ASSERT_EQ(p.line_count(), 3u);
    EXPECT_EQ(p.text(1), "PIPELINING");
    EXPECT_EQ(p.enhanced(), "");  // only the first line's code counts
    EXPECT_EQ(parse_all(p, "550 5.1.1 unknown\r\n"), ReplyParser::Status::complete);
    EXPECT_EQ(p.enhanced(), "5.1.1");
    EXPECT_EQ(parse_all(p, "250\r\n"), ReplyParser::Status::complete);
    EXPECT_EQ(p.line_count(), 1u);
    EXPECT_EQ(p.text(0), "");
}

TEST(SmtpReply, EnhancedStatusSyntax) {
    EXPECT_EQ(parse_enhanced_status(550, "5.1.1 x"), "5.1.1");
    EXPECT_EQ(parse_enhanced_status(550, "5.7.123"), "5.7.123");
    EXPECT_EQ(parse_enhanced_status(450, "5.1.1 x"), "");  // class disagrees with the code
    EXPECT_EQ(parse_enhanced_status(550, "5.1.1x"), "");
    EXPECT_EQ(parse_enhanced_status(550, "5.1234.1"), "");
    EXPECT_EQ(parse_enhanced_status(550, "5..1"), "");
    EXPECT_EQ(parse_enhanced_status(550, "user unknown"), "");
}

TEST(SmtpReply, LineAtTheCapIsAcceptedOneMoreIsNot) {
    ReplyParser p;
    const std::string ok = "250 " + std::string(reply_line_max_bytes - 4, 'a') + "\r\n";
    EXPECT_EQ(parse_all(p, ok), ReplyParser::Status::complete);
    ReplyParser q;
    const std::string bad = "250 " + std::string(reply_line_max_bytes - 3, 'a') + "\r\n";
    EXPECT_EQ(parse_all(q, bad), ReplyParser::Status::error);
}

TEST(SmtpReply, ErrorIsSticky) {
    ReplyParser p;
    EXPECT_EQ(parse_all(p, "xyz\r\n"), ReplyParser::Status::error);
    EXPECT_EQ(parse_all(p, "250 ok\r\n"), ReplyParser::Status::error);
    p.reset();
    EXPECT_EQ(parse_all(p, "250 ok\r\n"), ReplyParser::Status::complete);
}

// --- byte soup ---------------------------------------------------------------------------

// Mostly reply-shaped lines (so the session gets deep into transactions), mutated now and
// then: a random byte, a dropped byte, a missing line end, a long run, a NUL.
std::string soup(std::mt19937& rng) {
    static const char* kCodes[] = {"250", "250", "250", "250", "250", "250", "354", "354", "450",
                                   "452", "550", "554", "221", "421", "503", "199", "2x0", "25"};
    static const char* kTexts[] = {"ok",         "2.0.0 ok", "5.1.1 no", "4.5.3 too many",
                                   "PIPELINING", "CHUNKING", "SIZE 10",  "",
                                   "x y z"};
    std::string s;
    const int lines = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < lines; ++i) {
        std::string line = kCodes[rng() % std::size(kCodes)];
        line += rng() % 5 == 0 ? '-' : ' ';
        line += kTexts[rng() % std::size(kTexts)];
        line += rng() % 10 == 0 ? "\n" : "\r\n";
        switch (rng() % 12) {
            case 0:
                line.insert(rng() % line.size(), 1, static_cast<char>(rng() % 256));
                break;
            case 1:
                line.erase(rng() % line.size(), 1);
                break;
            case 2:
                line.resize(rng() % line.size());
                break;
            case 3:
                line.insert(rng() % line.size(), std::string(rng() % 1500, 'A'));
                break;
            case 4:
                line.insert(rng() % line.size(), 1, '\0');
                break;
            default:
                break;
        }
        s += line;
    }
    return s;
}

TEST(SmtpClientFuzz, ByteSoupNeverCrashesAndAlwaysEnds) {
    std::mt19937 rng(20240229);
    size_t reached_body = 0, reached_done = 0;
    for (int iter = 0; iter < 10000; ++iter) {
        Harness h(1 + rng() % 3);
        for (int m = 0; m < 3; ++m) {
            Message msg = simple({"a@d.test", "b@d.test", "c@d.test"}, {"x\r\n.y\r\n", "z"});
            msg.last_flag = rng() % 2 == 0;
            h.add(msg);
        }
        // Mostly well-formed starts, so the soup reaches the later phases too.
        if (rng() % 4 != 0) h.server(kGreeting);
        if (rng() % 3 != 0) h.server(rng() % 2 ? kEhloPipelining : kEhloChunking);
        for (int w = 0; w < 10 && !h.c->wants_close(); ++w) {
            const std::string bytes = soup(rng);
            h.server(bytes);
            if (::testing::Test::HasFatalFailure()) return;
        }
        h.c->peer_closed();
        h.pump();
        ASSERT_TRUE(h.c->wants_close()) << "iteration " << iter;
        ASSERT_FALSE(h.events.empty());
        const E last = h.events.back();
        ASSERT_TRUE(last == E::closed || last == E::protocol_error) << "iteration " << iter;
        for (const Lines& r : h.results)
            ASSERT_EQ(r.size(), 3u);  // every recipient has an outcome
        EXPECT_LT(h.sent.size(), 1u << 20);
        reached_body += h.count(E::body_wanted) > 0;
        reached_done += !h.results.empty();
    }
    // The soup must reach the later phases often enough to test them.
    EXPECT_GT(reached_body, 80u);
    EXPECT_GT(reached_done, 3000u);
    std::printf("byte soup: %zu runs reached the text, %zu a transaction result\n", reached_body,
                reached_done);
}

TEST(SmtpReplyFuzz, RandomBytesStayWithinBounds) {
    std::mt19937 rng(7);
    for (int iter = 0; iter < 20000; ++iter) {
        ReplyParser p;
        std::string s = soup(rng);
        if (rng() % 10 == 0) s += std::string(rng() % 3000, '-');
        size_t pos = 0;
        while (pos < s.size()) {
            size_t n = 0;
            const size_t piece = 1 + rng() % (s.size() - pos);
            const auto st = p.feed(std::string_view(s).substr(pos, piece), n);
            ASSERT_LE(n, piece);
            pos += n;
            if (st == ReplyParser::Status::error) break;
            if (st == ReplyParser::Status::complete) {
                ASSERT_GE(p.code(), 200);
                ASSERT_LE(p.code(), 559);
                ASSERT_GE(p.line_count(), 1u);
                ASSERT_LE(p.line_count(), reply_lines_max);
                for (size_t i = 0; i < p.line_count(); ++i)
                    ASSERT_LE(p.text(i).size(), reply_line_max_bytes);
            } else {
                ASSERT_EQ(n, piece);  // need_more consumes everything
            }
        }
    }
}

// --- STARTTLS (RFC 3207) ---------------------------------------------------------------

constexpr std::string_view kEhloAfterTls =
    "250-mx.remote.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n";

// A harness whose session wants TLS; it stops at `starttls_ready` like a driver would. (Not
// returned by value: the session holds a reference to the harness's settings.)
void want_tls(Harness& h) {
    h.hold = true;
    h.c->start(true);
}

TEST(SmtpClientStartTls, SentAfterEhloThenEhloAgainInsideTls) {
    Harness h;
    want_tls(h);
    h.server(kGreeting);
    h.server(kEhloPipelining);  // offers STARTTLS
    EXPECT_EQ(h.sent, "EHLO relay.test\r\nSTARTTLS\r\n");
    EXPECT_EQ(h.c->phase(), ClientPhase::starttls);
    EXPECT_EQ(h.count(E::ready), 0u);  // no transaction in clear
    EXPECT_GT(h.c->timeout_ms(), 0u);

    h.server("220 2.0.0 go ahead\r\n");
    EXPECT_EQ(h.count(E::starttls_ready), 1u);
    EXPECT_TRUE(h.c->awaiting_handshake());
    EXPECT_FALSE(h.c->tls_active());
    EXPECT_GT(h.c->timeout_ms(), 0u);  // the handshake is timed too

    h.sent.clear();
    h.c->tls_started();
    // RFC 3207 §4.2: what the cleartext EHLO said is forgotten.
    EXPECT_FALSE(h.c->offers_pipelining());
    EXPECT_FALSE(h.c->offers_starttls());
    EXPECT_EQ(h.c->server_size_max(), 0u);
    EXPECT_TRUE(h.c->tls_active());
    h.pump();
    EXPECT_EQ(h.sent, "EHLO relay.test\r\n");
    EXPECT_EQ(h.c->phase(), ClientPhase::ehlo);

    h.hold = false;
    h.add(simple({"a@remote.test"}));
    h.server(kEhloAfterTls);
    EXPECT_TRUE(h.c->offers_pipelining());
    EXPECT_EQ(h.count(E::ready), 1u);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.server("250 queued\r\n");
    h.server("221 bye\r\n");
    ASSERT_EQ(h.results.size(), 1u);
    EXPECT_EQ(h.results[0], Lines({"delivered 250 2.0.0"}));
    EXPECT_EQ(h.count(E::closed), 1u);
}

// CVE-2011-0411 class: a man in the middle appends replies after the 220; they arrive in
// clear and must not answer the EHLO sent inside TLS. Every split point of the read.
TEST(SmtpClientStartTls, BytesAfterThe220AreDiscarded) {
    const std::string read = "220 go ahead\r\n250-evil\r\n250 PIPELINING\r\n250 ok\r\n";
    for (size_t cut = 0; cut <= read.size(); ++cut) {
        SCOPED_TRACE(cut);
        Harness h;
        want_tls(h);
        h.server(kGreeting);
        h.server(kEhloPipelining);
        h.server_split(read, cut);
        ASSERT_EQ(h.count(E::starttls_ready), 1u);
        EXPECT_EQ(h.count(E::ready), 0u);
        EXPECT_EQ(h.count(E::protocol_error), 0u);
        // Late cleartext (a second read before the handshake) is dropped as well.
        EXPECT_EQ(h.c->feed("250 more injected\r\n"), 19u);
        EXPECT_EQ(h.count(E::ready), 0u);
        h.c->tls_started();
        h.pump();
        EXPECT_FALSE(h.c->offers_pipelining());  // the injected EHLO answer was not used
        EXPECT_EQ(h.c->phase(), ClientPhase::ehlo);
        h.server("250-mx.remote.test\r\n250 8BITMIME\r\n");
        EXPECT_EQ(h.count(E::ready), 1u);
        EXPECT_FALSE(h.c->offers_pipelining());
        EXPECT_TRUE(h.c->offers_8bitmime());
    }
}

TEST(SmtpClientStartTls, RefusedStaysInClear) {
    Harness h;
    want_tls(h);
    h.hold = false;
    h.add(simple({"a@remote.test"}));
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("454 4.7.0 TLS not available due to temporary reason\r\n");
    EXPECT_EQ(h.count(E::starttls_ready), 0u);
    EXPECT_EQ(h.count(E::ready), 1u);
    EXPECT_FALSE(h.c->tls_active());
    EXPECT_TRUE(h.c->offers_pipelining());  // the cleartext EHLO still stands
    EXPECT_NE(h.sent.find("STARTTLS\r\nMAIL FROM:"), std::string::npos);
}

TEST(SmtpClientStartTls, NotSentWhenNotWantedOrNotOffered) {
    {
        Harness h;  // start() without TLS
        h.hold = true;
        h.server(kGreeting);
        h.server(kEhloPipelining);
        EXPECT_EQ(h.sent, "EHLO relay.test\r\n");
        EXPECT_EQ(h.count(E::ready), 1u);
    }
    {
        Harness h;
        want_tls(h);
        h.server(kGreeting);
        h.server(kEhloPlain);
        EXPECT_EQ(h.sent, "EHLO relay.test\r\n");
        EXPECT_EQ(h.count(E::ready), 1u);
        EXPECT_FALSE(h.c->tls_active());
    }
}

// STARTTLS is sent once per connection: a server offering it again inside TLS is not
// answered with a second STARTTLS (and a new start() forgets the TLS state).
TEST(SmtpClientStartTls, OncePerConnection) {
    Harness h;
    want_tls(h);
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("220 go\r\n");
    h.c->tls_started();
    h.pump();
    h.sent.clear();
    h.server(kEhloPipelining);
    EXPECT_EQ(h.sent, "");
    EXPECT_EQ(h.count(E::ready), 1u);
    EXPECT_TRUE(h.c->tls_active());
    h.c->start(true);
    EXPECT_FALSE(h.c->tls_active());
    EXPECT_FALSE(h.c->awaiting_handshake());
}

TEST(SmtpClientStartTls, TimeoutOrCloseDuringHandshakeIsAnError) {
    Harness h;
    want_tls(h);
    h.server(kGreeting);
    h.server(kEhloPipelining);
    h.server("220 go\r\n");
    h.c->timeout();
    h.pump();
    EXPECT_EQ(h.count(E::protocol_error), 1u);
    EXPECT_TRUE(h.c->wants_close());

    Harness g;
    want_tls(g);
    g.server(kGreeting);
    g.server(kEhloPipelining);
    g.c->peer_closed();  // before the 220
    g.pump();
    EXPECT_EQ(g.count(E::protocol_error), 1u);
}

}  // namespace
}  // namespace ringmail::smtp
