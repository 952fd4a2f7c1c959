// smtp_server_test.cpp — the server session's command side: greeting, EHLO, sequencing, MAIL
// and RCPT syntax and limits, relay policy at RCPT, junk limit, line limits, pipelining
// back-pressure, and the driver events (timeout, shutdown, refuse, pregreet, peer close).
#include <gtest/gtest.h>

#include <string>

#include "smtp_test_sink.hpp"

namespace ringmail::smtp {
namespace {

using test::Harness;
using Lines = std::vector<std::string>;

constexpr size_t kEhloLines = 7;

// Greeting + EHLO done; output cleared.
Harness& ehlo(Harness& h) {
    h.write("EHLO client.example\r\n");
    h.clear_output();
    return h;
}

TEST(SmtpServer, GreetingAndEhloAdvertiseOnlyWhatIsImplemented) {
    Harness h;
    h.write("EHLO client.example\r\n");
    EXPECT_EQ(h.lines(), (Lines{"220 mx.test ESMTP ringmail", "250-mx.test", "250-PIPELINING",
                                "250-SIZE 26214400", "250-8BITMIME", "250-SMTPUTF8",
                                "250-ENHANCEDSTATUSCODES", "250 CHUNKING"}));
}

TEST(SmtpServer, HeloIsPlainAndEhloNeedsAnArgument) {
    Harness h;
    h.write("HELO client.example\r\nEHLO\r\nhelo\r\n");
    EXPECT_EQ(h.lines_from(1), (Lines{"250 mx.test", "501 5.5.4 Syntax: EHLO hostname",
                                      "501 5.5.4 Syntax: HELO hostname"}));
}

TEST(SmtpServer, CommandsAreCaseInsensitive) {
    Harness h;
    h.write("ehlo x\r\n");
    h.clear_output();
    h.write("mail from:<a@b.example>\r\nrCpT tO:<u@relay.test>\r\nnoop\r\nrset\r\n");
    EXPECT_EQ(h.lines(), (Lines{"250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok", "250 2.0.0 Ok"}));
}

TEST(SmtpServer, SimpleCommands) {
    Harness h;
    h.write("NOOP hello\r\nVRFY root\r\nHELP\r\nRSET\r\nXYZZY\r\n");
    EXPECT_EQ(h.lines_from(1),
              (Lines{"250 2.0.0 Ok",
                     "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
                     "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY",
                     "250 2.0.0 Ok", "500 5.5.2 Error: command not recognized"}));
    EXPECT_FALSE(h.session->wants_close());
}

TEST(SmtpServer, QuitRepliesAndCloses) {
    Harness h;
    h.write("QUIT\r\nNOOP\r\n");
    EXPECT_EQ(h.lines_from(1), (Lines{"221 2.0.0 Bye"}));
    EXPECT_TRUE(h.session->wants_close());
}

TEST(SmtpServer, SequencingErrors) {
    Harness h;
    h.write("MAIL FROM:<a@b.example>\r\n");
    EXPECT_EQ(h.last(), "503 5.5.1 Error: send HELO/EHLO first");
    ehlo(h);
    h.write("RCPT TO:<u@relay.test>\r\nDATA\r\n");
    EXPECT_EQ(h.lines(),
              (Lines{"503 5.5.1 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"}));
    h.clear_output();
    h.write("MAIL FROM:<a@b.example>\r\nDATA\r\nMAIL FROM:<c@d.example>\r\n");
    EXPECT_EQ(h.lines(), (Lines{"250 2.1.0 Ok", "503 5.5.1 Error: need RCPT command",
                                "503 5.5.1 Error: nested MAIL command"}));
    EXPECT_EQ(h.sink.count("begin"), 0u);
}

TEST(SmtpServer, EhloResetsTheTransaction) {
    Harness h;
    ehlo(h);
    h.write("MAIL FROM:<a@b.example>\r\nEHLO again\r\nRCPT TO:<u@relay.test>\r\n");
    EXPECT_EQ(h.last(), "503 5.5.1 Error: need MAIL command");
}

TEST(SmtpServer, MailFromForms) {
    for (const char* cmd : {"MAIL FROM:<a@b.example>", "MAIL FROM: <a@b.example>",
                            "MAIL FROM:a@b.example", "MAIL FROM:<>", "mail from:<> SIZE=100",
                            "MAIL FROM:<a@b.example> BODY=8BITMIME SIZE=26214400",
                            "MAIL FROM:<a@b.example> BODY=7bit SMTPUTF8"}) {
        Harness h;
        ehlo(h);
        h.write(std::string(cmd) + "\r\n");
        EXPECT_EQ(h.last(), "250 2.1.0 Ok") << cmd;
    }
}

TEST(SmtpServer, MailFromSyntaxAndParameterErrors) {
    const std::pair<const char*, const char*> cases[] = {
        {"MAIL <a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"},
        {"MAIL TO:<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"},
        {"MAIL FROM:<a@b.example> FOO=1", "555 5.5.4 Unsupported option: FOO=1"},
        {"MAIL FROM:<a@b.example> SIZE=abc", "501 5.5.4 Bad parameter value: SIZE=abc"},
        {"MAIL FROM:<a@b.example> BODY=BINARYMIME",
         "501 5.5.4 Bad parameter value: BODY=BINARYMIME"},
        {"MAIL FROM:<a@b.example> SIZE=26214401",
         "552 5.3.4 Message size exceeds fixed maximum message size"},
        {"MAIL FROM:<a@b.example> SIZE=999999999999999999999999",
         "552 5.3.4 Message size exceeds fixed maximum message size"},
        {"MAIL FROM:<user>", "501 5.1.3 Bad address syntax"},
        {"MAIL FROM:<a@b.example", "501 5.1.3 Bad address syntax"},
        {"MAIL FROM:<j\xc3\xb6rg@b.example>",
         "553 5.6.7 Error: non-ASCII address requires SMTPUTF8"},
    };
    for (const auto& [cmd, reply] : cases) {
        Harness h;
        ehlo(h);
        h.write(std::string(cmd) + "\r\n");
        EXPECT_EQ(h.last(), reply) << cmd;
        h.write("MAIL FROM:<ok@b.example>\r\n");
        EXPECT_EQ(h.last(), "250 2.1.0 Ok") << "after " << cmd;
    }
}

TEST(SmtpServer, RcptParameters) {
    Harness h;
    ehlo(h);
    h.write(
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<u@relay.test> FOO=BAR\r\n"
        "RCPT TO:<u@relay.test> NOTIFY=FAILURE ORCPT=rfc822;u@relay.test\r\n"
        "RCPT TO:u@relay.test\r\nRCPT <u@relay.test>\r\n");
    EXPECT_EQ(h.lines(),
              (Lines{"250 2.1.0 Ok", "555 5.5.4 Unsupported option: FOO=BAR", "250 2.1.5 Ok",
                     "250 2.1.5 Ok", "501 5.5.4 Syntax: RCPT TO:<address>"}));
}

TEST(SmtpServer, PathLimitsAndMalformedPathsAre501) {
    const std::string l64(64, 'l');
    const std::string d251 = std::string(50, 'd') + "." + std::string(50, 'd') + "." +
                             std::string(50, 'd') + "." + std::string(50, 'd') + "." +
                             std::string(42, 'd') + ".test";  // 251 octets
    const std::pair<std::string, std::string> cases[] = {
        {l64 + "@relay.test", "250 2.1.5 Ok"},
        {l64 + "l@relay.test", "501 5.1.3 Bad address syntax"},
        {"ab@" + d251, "250 2.1.5 Ok"},                   // 256-octet path
        {"abc@" + d251, "501 5.1.3 Bad address syntax"},  // 257
        {"user", "501 5.1.3 Bad address syntax"},
        {"@relay.test", "501 5.1.3 Bad address syntax"},
        {"user@", "501 5.1.3 Bad address syntax"},
        {"user@re$lay.test", "501 5.1.3 Bad address syntax"},
        {"\"user@relay.test", "501 5.1.3 Bad address syntax"},
    };
    for (const auto& [path, reply] : cases) {
        Harness h(true);
        ehlo(h);
        h.write("MAIL FROM:<a@b.example>\r\nRCPT TO:<" + path + ">\r\n");
        EXPECT_EQ(h.last(), reply) << path;
    }
}

TEST(SmtpServer, SourceRouteIsDroppedAndQuotedLocalPartKept) {
    Harness h(true);
    ehlo(h);
    h.write(
        "MAIL FROM:<@hop.example:a@b.example>\r\n"
        "RCPT TO:<@x.example,@y.example:u@relay.test>\r\n"
        "RCPT TO:<\"john doe\"@relay.test>\r\nDATA\r\n");
    h.write(".\r\n");
    ASSERT_EQ(h.sink.messages.size(), 1u);
    const auto& m = h.sink.messages[0];
    EXPECT_EQ(m.mail_from, "a@b.example");
    ASSERT_EQ(m.rcpts.size(), 2u);
    EXPECT_EQ(m.rcpts[0].first, "u@relay.test");
    EXPECT_EQ(m.rcpts[1].first, "\"john doe\"@relay.test");
}

TEST(SmtpServer, DomainLiteralsParseForTrustedClients) {
    Harness h(true);
    ehlo(h);
    h.write(
        "MAIL FROM:<a@[192.0.2.1]>\r\nRCPT TO:<u@[IPv6:2001:db8::1]>\r\n"
        "RCPT TO:<u@[300.1.1.1]>\r\n");
    EXPECT_EQ(h.lines(), (Lines{"250 2.1.0 Ok", "250 2.1.5 Ok", "501 5.1.3 Bad address syntax"}));
}

TEST(SmtpServer, Utf8AddressesNeedSmtputf8) {
    Harness h;
    ehlo(h);
    h.write(
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<j\xc3\xb6rg@relay.test>\r\nRSET\r\n"
        "MAIL FROM:<j\xc3\xb6rg@b.example> SMTPUTF8\r\nRCPT TO:<j\xc3\xb6rg@relay.test>\r\n");
    EXPECT_EQ(h.lines(),
              (Lines{"250 2.1.0 Ok", "553 5.6.7 Error: non-ASCII address requires SMTPUTF8",
                     "250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok"}));
}

TEST(SmtpServer, PostmasterWithoutDomainIsAcceptedFromAnyone) {
    Harness h;
    ehlo(h);
    h.write(
        "MAIL FROM:<a@b.example>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<Postmaster>\r\n"
        "RCPT TO:<root>\r\n");
    EXPECT_EQ(h.lines(), (Lines{"250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
                                "501 5.1.3 Bad address syntax"}));
}

TEST(SmtpServer, CrLfAndNulInACommandLineAre501) {
    Harness h;
    ehlo(h);
    h.write(std::string("NOOP a\0b\r\n", 10));
    h.write("NOOP a\rb\r\nNOOP bare\nNOOP\r\n");
    EXPECT_EQ(h.lines(),
              (Lines{"501 5.5.2 Error: bare CR, LF or NUL in command line",
                     "501 5.5.2 Error: bare CR, LF or NUL in command line",
                     "501 5.5.2 Error: bare CR, LF or NUL in command line", "250 2.0.0 Ok"}));
}

// --- relay policy at RCPT --------------------------------------------------------------------

TEST(SmtpServer, OpenRelayScannerTricksAreRefused) {
    const std::pair<const char*, const char*> cases[] = {
        {"victim%remote@relay.test", "554 5.7.1 <victim%remote@relay.test>: Relay access denied"},
        {"remote!victim@relay.test", "554 5.7.1 <remote!victim@relay.test>: Relay access denied"},
        {"\"victim@remote\"@relay.test",
         "554 5.7.1 <\"victim@remote\"@relay.test>: Relay access denied"},
        {"@relay.test:victim@remote.example",
         "554 5.7.1 <victim@remote.example>: Relay access denied"},
        {"victim@remote.example@relay.test", "501 5.1.3 Bad address syntax"},
        {"victim@[127.0.0.1]", "554 5.7.1 <victim@[127.0.0.1]>: Relay access denied"},
        {"victim@relay.test.", "554 5.7.1 <victim@relay.test.>: Relay access denied"},
        {"victim@relay.test.evil.example",
         "554 5.7.1 <victim@relay.test.evil.example>: Relay access denied"},
        {"victim@evilrelay.test", "554 5.7.1 <victim@evilrelay.test>: Relay access denied"},
        {"victim@remote.example", "554 5.7.1 <victim@remote.example>: Relay access denied"},
        {"victim@sub.test", "554 5.7.1 <victim@sub.test>: Relay access denied"},
        {"VICTIM@RELAY.TEST", "250 2.1.5 Ok"},
        {"victim@a.sub.test", "250 2.1.5 Ok"},
    };
    for (const auto& [path, reply] : cases) {
        Harness h;
        ehlo(h);
        h.write(std::string("MAIL FROM:<a@b.example>\r\nRCPT TO:<") + path + ">\r\n");
        EXPECT_EQ(h.last(), reply) << path;
    }
}

TEST(SmtpServer, TrustedClientsMayRelayAnywhere) {
    Harness h(true);
    ehlo(h);
    h.write("MAIL FROM:<a@b.example>\r\nRCPT TO:<victim@remote.example>\r\n");
    EXPECT_EQ(h.last(), "250 2.1.5 Ok");
}

// --- limits ----------------------------------------------------------------------------------

TEST(SmtpServer, TooManyRecipientsIs452AndNotJunk) {
    Harness h(false, [](ServerSettings& s) {
        s.recipients_max = 3;
        s.junk_commands_max = 2;
    });
    ehlo(h);
    std::string cmds = "MAIL FROM:<a@b.example>\r\n";
    for (int i = 0; i < 8; ++i)
        cmds += "RCPT TO:<u" + std::to_string(i) + "@relay.test>\r\n";
    h.write(cmds);
    const Lines l = h.lines();
    ASSERT_EQ(l.size(), 9u);
    EXPECT_EQ(l[3], "250 2.1.5 Ok");
    for (size_t i = 4; i < 9; ++i)
        EXPECT_EQ(l[i], "452 4.5.3 Too many recipients");
    EXPECT_FALSE(h.session->wants_close());
    h.write("DATA\r\n");
    h.write("x\r\n.\r\n");
    ASSERT_EQ(h.sink.messages.size(), 1u);
    EXPECT_EQ(h.sink.messages[0].rcpts.size(), 3u);
}

TEST(SmtpServer, CommandLineOf512OctetsIsAcceptedAnd513Refused) {
    Harness h;
    ehlo(h);
    h.write("NOOP " + std::string(505, 'x') + "\r\n");  // 512 with CRLF
    h.write("NOOP " + std::string(506, 'x') + "\r\n");  // 513
    EXPECT_EQ(h.lines(), (Lines{"250 2.0.0 Ok", "500 5.5.2 Error: line too long"}));
}

TEST(SmtpServer, OverlongLineIsDiscardedWholeNeverSplit) {
    Harness h;
    ehlo(h);
    // The tail past 512 octets looks like a command: it must not run.
    h.write("NOOP " + std::string(600, 'x') + "QUIT\r\nNOOP\r\n");
    EXPECT_EQ(h.lines(), (Lines{"500 5.5.2 Error: line too long", "250 2.0.0 Ok"}));
    EXPECT_FALSE(h.session->wants_close());
}

TEST(SmtpServer, OverlongLineIsDiscardedAcrossFeeds) {
    Harness h;
    ehlo(h);
    h.write("NOOP " + std::string(300, 'x'));
    h.write(std::string(300, 'y'));
    EXPECT_TRUE(h.lines().empty());
    h.write(std::string(2000, 'z'));
    h.write("QUIT\r");
    h.write("\nNOOP\r\n");
    EXPECT_EQ(h.lines(), (Lines{"500 5.5.2 Error: line too long", "250 2.0.0 Ok"}));
    EXPECT_FALSE(h.session->wants_close());
}

// A line that never ends is not a command: past command_line_abandon_bytes without a line end
// the session answers 500 and closes, instead of reading until the command timeout.
TEST(SmtpServer, UnterminatedLineIsAbandonedWith500AndClose) {
    for (size_t piece : {size_t{1} << 20, size_t{1000}, size_t{1}}) {
        SCOPED_TRACE(piece);
        Harness h;
        ehlo(h);
        const std::string junk(limits::command_line_abandon_bytes, 'x');
        for (size_t at = 0; at < junk.size() && !h.session->wants_close(); at += piece)
            h.write(junk.substr(at, piece));
        EXPECT_EQ(h.lines(), (Lines{"500 5.5.2 Error: line too long"}));
        EXPECT_TRUE(h.session->wants_close());
    }
    Harness h;
    ehlo(h);
    h.write("NOOP " + std::string(limits::command_line_abandon_bytes - 8, 'x'));
    EXPECT_TRUE(h.lines().empty());  // just under the bound: still waiting for the line end
    h.write("\r\nNOOP\r\n");
    EXPECT_EQ(h.lines(), (Lines{"500 5.5.2 Error: line too long", "250 2.0.0 Ok"}));
    EXPECT_FALSE(h.session->wants_close());
}

TEST(SmtpServer, JunkLimitEndsTheSessionWith421) {
    Harness h(false, [](ServerSettings& s) { s.junk_commands_max = 3; });
    ehlo(h);
    h.write("FOO\r\nMAIL x\r\nBAR\r\n");
    EXPECT_FALSE(h.session->wants_close());
    h.write("BAZ\r\nNOOP\r\n");
    EXPECT_EQ(
        h.lines(),
        (Lines{"500 5.5.2 Error: command not recognized", "501 5.5.4 Syntax: MAIL FROM:<address>",
               "500 5.5.2 Error: command not recognized", "500 5.5.2 Error: command not recognized",
               "421 4.7.0 mx.test Error: too many errors"}));
    EXPECT_TRUE(h.session->wants_close());
}

TEST(SmtpServer, ThousandsOfPipelinedNoopsNeverOverflowTheOutput) {
    Harness h;
    ehlo(h);
    constexpr size_t kCount = 5000;
    std::string in;
    for (size_t i = 0; i < kCount; ++i)
        in += "NOOP\r\n";
    size_t pos = 0;
    size_t early_returns = 0;
    std::string out;
    while (pos < in.size()) {
        const size_t n = h.session->feed(std::string_view(in).substr(pos));
        pos += n;
        early_returns += pos < in.size();
        const std::string_view o = h.session->output();
        ASSERT_LE(o.size(), limits::session_output_bytes);
        out.append(o);
        h.session->output_sent(o.size());
        ASSERT_TRUE(n > 0 || !o.empty()) << "stuck";
    }
    EXPECT_GT(early_returns, 0u);
    size_t replies = 0;
    for (size_t at = 0; (at = out.find("250 2.0.0 Ok\r\n", at)) != std::string::npos; ++at)
        ++replies;
    EXPECT_EQ(replies, kCount);
    EXPECT_EQ(out.size(), kCount * 14);
}

TEST(SmtpServer, FeedStopsWhenOutputIsNotDrained) {
    Harness h;
    ehlo(h);
    std::string in;
    for (int i = 0; i < 1000; ++i)
        in += "NOOP\r\n";
    const size_t n = h.session->feed(in);
    EXPECT_LT(n, in.size());
    EXPECT_EQ(h.session->feed(std::string_view(in).substr(n)), 0u);  // still full
    EXPECT_LE(h.session->output().size(), limits::session_output_bytes);
}

// --- driver events ---------------------------------------------------------------------------

TEST(SmtpServer, TimeoutReplies421AndCloses) {
    Harness h;
    h.session->timeout();
    h.drain();
    EXPECT_EQ(h.last(), "421 4.4.2 mx.test Error: timeout exceeded");
    EXPECT_TRUE(h.session->wants_close());
}

TEST(SmtpServer, TimeoutInDataAbortsTheMessage) {
    Harness h;
    ehlo(h);
    h.write("MAIL FROM:<a@b.example>\r\nRCPT TO:<u@relay.test>\r\nDATA\r\n");
    h.write("partial body\r\n");
    EXPECT_TRUE(h.session->in_data());
    h.session->timeout();
    h.drain();
    EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
    EXPECT_EQ(h.last(), "421 4.4.2 mx.test Error: timeout exceeded");
}

TEST(SmtpServer, ShutdownReplies421) {
    Harness h;
    ehlo(h);
    h.session->shutdown();
    h.drain();
    EXPECT_EQ(h.lines(), (Lines{"421 4.3.2 mx.test Service shutting down"}));
    EXPECT_TRUE(h.session->wants_close());
}

TEST(SmtpServer, ShutdownWhileCommittingWaitsForTheCommit) {
    Harness h;
    ehlo(h);
    h.write("MAIL FROM:<a@b.example>\r\nRCPT TO:<u@relay.test>\r\nDATA\r\n");
    const size_t n = h.session->feed("body\r\n.\r\n");
    EXPECT_EQ(n, 9u);
    EXPECT_TRUE(h.session->waiting_commit());
    h.session->shutdown();
    EXPECT_FALSE(h.session->wants_close());
    h.session->commit_done(CommitResult::ok);
    h.drain();
    EXPECT_EQ(h.sink.events, (Lines{"begin", "end"}));
    const Lines l = h.lines();
    ASSERT_GE(l.size(), 2u);
    EXPECT_EQ(l[l.size() - 2], "250 2.0.0 Ok: queued as 0000000000001234");
    EXPECT_EQ(l.back(), "421 4.3.2 mx.test Service shutting down");
    EXPECT_TRUE(h.session->wants_close());
}

TEST(SmtpServer, PeerClosedAbortsOnlyAMessageInProgress) {
    {
        Harness h;
        ehlo(h);
        h.write("MAIL FROM:<a@b.example>\r\nRCPT TO:<u@relay.test>\r\nDATA\r\n");
        h.write("partial");
        h.session->peer_closed();
        EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
        EXPECT_TRUE(h.session->wants_close());
    }
    {
        Harness h;
        ehlo(h);
        h.write("MAIL FROM:<a@b.example>\r\nRCPT TO:<u@relay.test>\r\nDATA\r\n");
        (void)h.session->feed("x\r\n.\r\n");
        ASSERT_TRUE(h.session->waiting_commit());
        h.session->peer_closed();
        h.session->commit_done(CommitResult::ok);
        EXPECT_EQ(h.sink.events, (Lines{"begin", "end"}));
        EXPECT_FALSE(h.session->waiting_commit());
    }
}

TEST(SmtpServer, RefuseWritesTheLineAndCloses) {
    Harness h;
    h.session->refuse("421 4.7.0 mx.test Error: too many connections");
    h.out.clear();
    h.drain();
    EXPECT_EQ(h.out, "421 4.7.0 mx.test Error: too many connections\r\n");
    EXPECT_TRUE(h.session->wants_close());
}

TEST(SmtpServer, PregreetViolationReplacesTheHeldGreeting) {
    test::RecordingSink sink;
    RelayPolicy policy;
    ServerSettings settings;
    settings.hostname = "mx.test";
    settings.relay = &policy;
    ServerSession s(settings, sink);
    s.start(ClientInfo{"192.0.2.9", *IpAddress::parse("192.0.2.9"), false});
    ASSERT_EQ(s.output(), "220 mx.test ESMTP ringmail\r\n");
    s.pregreet_violation();
    EXPECT_EQ(s.output(), "554 5.5.1 Error: talking before the greeting\r\n");
    EXPECT_TRUE(s.wants_close());
    EXPECT_EQ(s.feed("EHLO x\r\n"), 0u);
}

TEST(SmtpServer, SessionIsReusableAfterStart) {
    Harness h;
    h.write("QUIT\r\n");
    ASSERT_TRUE(h.session->wants_close());
    h.session->start(ClientInfo{"192.0.2.9", *IpAddress::parse("192.0.2.9"), false});
    EXPECT_FALSE(h.session->wants_close());
    EXPECT_EQ(h.session->output(), "220 mx.test ESMTP ringmail\r\n");
}

TEST(SmtpServer, FormatQueueId) {
    char id[16];
    format_queue_id(0x0123456789abcdefull, id);
    EXPECT_EQ(std::string_view(id, 16), "0123456789abcdef");
    format_queue_id(1, id);
    EXPECT_EQ(std::string_view(id, 16), "0000000000000001");
}

}  // namespace
}  // namespace ringmail::smtp
