// smtp_server_data_test.cpp — the server session's message side: DATA scanning (terminator at
// every split, dot-unstuffing, bare CR/LF refusal), size and storage limits, commits, the
// Received header, BDAT chunks, and whole transactions fed at every split point.
#include <gtest/gtest.h>

#include <string>

#include "smtp_test_sink.hpp"

namespace ringmail::smtp {
namespace {

using test::Harness;
using Lines = std::vector<std::string>;

constexpr std::string_view kEnvelope =
    "EHLO client.example\r\nMAIL FROM:<s@b.example>\r\nRCPT TO:<u@relay.test>\r\nDATA\r\n";
constexpr std::string_view k354 = "354 End data with <CR><LF>.<CR><LF>";
constexpr std::string_view kQueued = "250 2.0.0 Ok: queued as 0000000000001234";
constexpr std::string_view kBare =
    "550 5.6.11 Message contains bare CR or LF; refused (SMTP smuggling defence)";

// Replies after the envelope's (greeting, EHLO lines, MAIL, RCPT).
constexpr size_t kEnvelopeLines = 1 + 7 + 2;

Harness& in_data(Harness& h) {
    h.write(kEnvelope);
    EXPECT_EQ(h.last(), k354);
    h.clear_output();
    return h;
}

// What a client sees and what the spool gets, for comparing feeds split differently.
struct Outcome {
    std::string replies;
    Lines events;
    std::vector<std::string> texts;  // Received + body of each message
    bool operator==(const Outcome&) const = default;
};

Outcome outcome(const Harness& h) {
    Outcome o{h.out, h.sink.events, {}};
    for (const auto& m : h.sink.messages)
        o.texts.push_back(m.received + "|" + m.body);
    return o;
}

// --- DATA ------------------------------------------------------------------------------------

TEST(SmtpServerData, BodyIsPassedWithLineEndingsAndWithoutTheTerminator) {
    Harness h;
    in_data(h);
    h.write("Subject: hi\r\n\r\nbody\r\n.\r\n");
    EXPECT_EQ(h.lines(), (Lines{std::string(kQueued)}));
    ASSERT_EQ(h.sink.messages.size(), 1u);
    EXPECT_EQ(h.sink.messages[0].body, "Subject: hi\r\n\r\nbody\r\n");
    EXPECT_EQ(h.sink.events, (Lines{"begin", "end"}));
}

TEST(SmtpServerData, EmptyMessage) {
    Harness h;
    in_data(h);
    h.write(".\r\n");
    EXPECT_EQ(h.last(), kQueued);
    EXPECT_EQ(h.sink.messages.at(0).body, "");
}

TEST(SmtpServerData, DotUnstuffing) {
    Harness h;
    in_data(h);
    h.write("..a\r\n.b\r\n...\r\nx.y\r\n. \r\n.\r\n");
    EXPECT_EQ(h.sink.messages.at(0).body, ".a\r\nb\r\n..\r\nx.y\r\n \r\n");
}

TEST(SmtpServerData, TerminatorSplitEveryWay) {
    const std::string body = "a\r\n..b\r\n.\r\n";
    for (size_t i = 0; i <= body.size(); ++i) {
        for (size_t j = i; j <= body.size(); ++j) {
            Harness h;
            in_data(h);
            h.write_split(body, {i, j});
            EXPECT_EQ(h.lines(), (Lines{std::string(kQueued)})) << i << "," << j;
            EXPECT_EQ(h.sink.messages.at(0).body, "a\r\n.b\r\n") << i << "," << j;
        }
    }
}

TEST(SmtpServerData, DataBytesAfterTheTerminatorAreCommands) {
    Harness h;
    in_data(h);
    h.write("x\r\n.\r\nNOOP\r\nMAIL FROM:<>\r\n");
    EXPECT_EQ(h.lines(), (Lines{std::string(kQueued), "250 2.0.0 Ok", "250 2.1.0 Ok"}));
}

TEST(SmtpServerData, WaitingForTheCommitConsumesNothing) {
    Harness h;
    in_data(h);
    EXPECT_EQ(h.session->feed("x\r\n.\r\nNOOP\r\n"), 6u);
    EXPECT_TRUE(h.session->waiting_commit());
    EXPECT_FALSE(h.session->in_data());
    EXPECT_EQ(h.session->feed("NOOP\r\n"), 0u);
    h.session->commit_done(CommitResult::ok);
    EXPECT_EQ(h.session->feed("NOOP\r\n"), 6u);
    h.drain();
    EXPECT_EQ(h.lines(), (Lines{std::string(kQueued), "250 2.0.0 Ok"}));
}

TEST(SmtpServerData, CommitFailuresAreNever250) {
    for (const auto& [result, reply] :
         {std::pair{CommitResult::failed, "451 4.3.0 Error: queue file write error"},
          std::pair{CommitResult::no_space, "452 4.3.1 Insufficient system storage"}}) {
        Harness h;
        h.commit_result = result;
        in_data(h);
        h.write("x\r\n.\r\n");
        EXPECT_EQ(h.lines(), (Lines{reply}));
        h.write("RCPT TO:<u@relay.test>\r\n");  // the transaction is over either way
        EXPECT_EQ(h.last(), "503 5.5.1 Error: need MAIL command");
    }
}

TEST(SmtpServerData, NoQueueIdMeans452ToDataWithout354) {
    Harness h;
    h.sink.give_id = false;
    h.write(kEnvelope);
    EXPECT_EQ(h.last(), "452 4.3.1 Insufficient system storage");
    h.write("NOOP\r\n");  // still in command mode
    EXPECT_EQ(h.last(), "250 2.0.0 Ok");
    EXPECT_EQ(h.sink.events, (Lines{"begin"}));
}

TEST(SmtpServerData, TextBefore354IsAPipeliningViolation) {
    Harness h;
    h.write(std::string(kEnvelope) + "Subject: early\r\n\r\nx\r\n.\r\n");
    EXPECT_EQ(h.last(), "554 5.5.0 Error: message text sent before 354 (pipelining violation)");
    EXPECT_TRUE(h.session->wants_close());
    EXPECT_TRUE(h.sink.events.empty());
}

TEST(SmtpServerData, PipelinedEnvelopeInOneWrite) {
    Harness h;
    h.write(
        "EHLO c\r\nMAIL FROM:<s@b.example>\r\nRCPT TO:<u@relay.test>\r\n"
        "RCPT TO:<v@relay.test>\r\nDATA\r\n");
    EXPECT_EQ(h.lines_from(8),
              (Lines{"250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", std::string(k354)}));
    h.write("x\r\n.\r\n");
    EXPECT_EQ(h.last(), kQueued);
    EXPECT_EQ(h.sink.messages.at(0).rcpts.size(), 2u);
}

// Each case: message text (through the real terminator) holding a bare CR or LF.
const char* const kBareCases[] = {
    "a\nb\r\n.\r\n",    // LF in the middle
    "\nx\r\n.\r\n",     // LF first
    "abc\n.\r\n.\r\n",  // LF ending a line
    "a\rb\r\n.\r\n",    // CR in the middle
    "abc\r\r\n.\r\n",   // CR before a CRLF
    "hello\r\n\n.\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<u@relay.test>\r\nDATA\r\n"
    "smuggled\r\n.\r\n",          // the 2023 smuggling payload
    "hello\r\n.\nQUIT\r\n.\r\n",  // "\r\n.\n"
    "hello\r.\rQUIT\r\n.\r\n",    // "\r.\r"
    "hello\r\n.\rQUIT\r\n.\r\n",  // "\r\n.\r"
    "hello\n\r\n.\r\n",           // LF just before the terminator
};

TEST(SmtpServerData, BareCrOrLfRefusesTheMessage) {
    for (const char* text : kBareCases) {
        Harness h;
        in_data(h);
        h.write(text);
        EXPECT_EQ(h.lines(), (Lines{std::string(kBare)})) << text;
        EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"})) << text;
        EXPECT_FALSE(h.session->wants_close());
        h.write("RCPT TO:<u@relay.test>\r\n");  // the transaction is gone
        EXPECT_EQ(h.last(), "503 5.5.1 Error: need MAIL command");
    }
}

TEST(SmtpServerData, BareCrOrLfRefusedAtEverySplit) {
    for (const char* text : kBareCases) {
        const std::string_view t = text;
        for (size_t i = 0; i <= t.size(); ++i) {
            Harness h;
            in_data(h);
            h.write_split(t, {i});
            EXPECT_EQ(h.lines(), (Lines{std::string(kBare)})) << text << " @" << i;
            EXPECT_EQ(h.sink.count("end"), 0u);
            EXPECT_EQ(h.sink.count("abort"), 1u);
        }
    }
}

TEST(SmtpServerData, BareLfAbortsAtOnce) {
    Harness h;
    in_data(h);
    h.write("line\r\nbad\nmore text");
    EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
    EXPECT_EQ(h.sink.messages.at(0).body.find("more"), std::string::npos);
    EXPECT_TRUE(h.lines().empty());
    EXPECT_TRUE(h.session->in_data());
}

TEST(SmtpServerData, OversizedMessageAbortsAtOnceAndIs552AtTheEnd) {
    Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 100; });
    in_data(h);
    const std::string line(58, 'x');
    h.write(line + "\r\n" + line + "\r\n");
    EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
    h.write(line + "\r\n.\r\n");
    EXPECT_EQ(h.lines(), (Lines{"552 5.3.4 Message size exceeds fixed maximum message size"}));
}

// The first refusal in the order of the bytes wins, however they arrive (found by the fuzzer:
// too big before a bare LF was 550 in one read and 552 byte by byte).
TEST(SmtpServerData, RefusalDoesNotDependOnHowTheTextIsCut) {
    const std::string text = std::string(150, 'x') + "\nmore\r\n.\r\n";
    for (size_t cut : {size_t{1}, size_t{7}, text.size()}) {
        SCOPED_TRACE(cut);
        Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 100; });
        in_data(h);
        for (size_t at = 0; at < text.size(); at += cut)
            h.write(text.substr(at, cut));
        EXPECT_EQ(h.lines(), (Lines{"552 5.3.4 Message size exceeds fixed maximum message size"}));
    }
    for (size_t cut : {size_t{1}, size_t{7}, size_t{1000}}) {
        SCOPED_TRACE(cut);
        const std::string bare_cr =
            std::string(50, 'x') + "\rx" + std::string(100, 'y') + "\r\n.\r\n";
        Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 100; });
        in_data(h);
        for (size_t at = 0; at < bare_cr.size(); at += cut)
            h.write(bare_cr.substr(at, cut));
        EXPECT_EQ(h.lines(), (Lines{std::string(kBare)}));
    }
}

TEST(SmtpServerData, MessageOfExactlyTheMaximumSizeIsAccepted) {
    Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 100; });
    in_data(h);
    h.write(std::string(98, 'x') + "\r\n.\r\n");
    EXPECT_EQ(h.last(), kQueued);
}

TEST(SmtpServerData, SinkOutOfStorageIs452AtTheEnd) {
    for (const size_t ok_calls : {size_t{0}, size_t{1}}) {  // Received refused, body refused
        Harness h;
        h.sink.body_calls_ok = ok_calls;
        in_data(h);
        h.write("x\r\n.");
        EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
        h.write("\r\n");
        EXPECT_EQ(h.lines(), (Lines{"452 4.3.1 Insufficient system storage"}));
    }
}

// --- Received header and envelope ------------------------------------------------------------

TEST(SmtpServerData, ReceivedHeaderForOneRecipient) {
    Harness h;
    in_data(h);
    h.write(".\r\n");
    EXPECT_EQ(h.sink.messages.at(0).received,
              "Received: from client.example ([192.0.2.7])\r\n"
              "\tby mx.test (ringmail) with ESMTP id 0000000000001234\r\n"
              "\tfor <u@relay.test>; Tue, 14 Nov 2023 22:13:20 +0000\r\n");
}

TEST(SmtpServerData, ReceivedHeaderForManyRecipientsAndHelo) {
    Harness h;
    h.sink.unix_time_s = 951782400;
    h.write(
        "HELO old.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@relay.test>\r\n"
        "RCPT TO:<b@relay.test>\r\nDATA\r\n");
    h.write(".\r\n");
    EXPECT_EQ(h.sink.messages.at(0).received,
              "Received: from old.example ([192.0.2.7])\r\n"
              "\tby mx.test (ringmail) with SMTP id 0000000000001234; "
              "Tue, 29 Feb 2000 00:00:00 +0000\r\n");
    EXPECT_EQ(h.sink.messages.at(0).protocol, "SMTP");
}

TEST(SmtpServerData, EpochDate) {
    Harness h;
    h.sink.unix_time_s = 0;
    in_data(h);
    h.write(".\r\n");
    EXPECT_NE(h.sink.messages.at(0).received.find("; Thu, 01 Jan 1970 00:00:00 +0000\r\n"),
              std::string::npos);
}

TEST(SmtpServerData, HostileHeloCannotInjectHeaderLines) {
    Harness h;
    h.write("EHLO a\rX-Injected: 1\r\n");
    EXPECT_EQ(h.last(), "501 5.5.2 Error: bare CR, LF or NUL in command line");
    h.write("EHLO evil\x0b\x1b[31m\x7f\xc3\xa9X-Injected: yes " + std::string(300, 'h') + "\r\n");
    h.write("MAIL FROM:<s@b.example>\r\nRCPT TO:<u@relay.test>\r\nDATA\r\n");
    h.write(".\r\n");
    const std::string& r = h.sink.messages.at(0).received;
    size_t crlf = 0;
    for (size_t i = 0; i < r.size(); ++i) {
        const auto c = static_cast<unsigned char>(r[i]);
        EXPECT_TRUE(c == '\t' || c == '\r' || c == '\n' || (c >= 0x20 && c < 0x7f)) << i;
        if (c == '\n') {
            EXPECT_EQ(r[i - 1], '\r');
            ++crlf;
            if (i + 1 < r.size()) {
                EXPECT_EQ(r[i + 1], '\t');  // continuation lines only
            }
        }
    }
    EXPECT_EQ(crlf, 3u);
    EXPECT_EQ(r.rfind("Received: from evil??[31m???X-Injected: yes hhh", 0), 0u);
    EXPECT_LT(r.size(), 400u);                                   // the HELO text is truncated
    EXPECT_EQ(h.sink.messages.at(0).helo.substr(0, 4), "evil");  // envelope keeps it raw
}

TEST(SmtpServerData, EnvelopeGivenToTheSink) {
    Harness h;
    h.write(
        "EHLO client.example\r\nMAIL FROM:<s@b.example> BODY=8BITMIME SIZE=10\r\n"
        "RCPT TO:<u@relay.test> NOTIFY=NEVER\r\nRCPT TO:<postmaster>\r\nDATA\r\n");
    h.write("x\r\n.\r\n");
    ASSERT_EQ(h.sink.messages.size(), 1u);
    const auto& m = h.sink.messages[0];
    EXPECT_EQ(m.helo, "client.example");
    EXPECT_EQ(m.protocol, "ESMTP");
    EXPECT_EQ(m.mail_from, "s@b.example");
    EXPECT_EQ(m.mail_params, "BODY=8BITMIME SIZE=10");
    using P = std::pair<std::string, std::string>;
    EXPECT_EQ(m.rcpts, (std::vector<P>{{"u@relay.test", "NOTIFY=NEVER"}, {"postmaster", ""}}));
}

TEST(SmtpServerData, ManyMessagesOnOneConnection) {
    Harness h;
    h.write("EHLO c\r\n");
    for (int i = 0; i < 50; ++i) {
        h.write("MAIL FROM:<s" + std::to_string(i) +
                "@b.example>\r\nRCPT TO:<u@relay.test>\r\n"
                "DATA\r\n");
        h.write("n " + std::to_string(i) + "\r\n.\r\n");
    }
    ASSERT_EQ(h.sink.messages.size(), 50u);
    EXPECT_EQ(h.sink.messages[49].mail_from, "s49@b.example");
    EXPECT_EQ(h.sink.messages[49].body, "n 49\r\n");
    EXPECT_EQ(h.sink.count("end"), 50u);
}

// --- BDAT ------------------------------------------------------------------------------------

constexpr std::string_view kBdatEnvelope =
    "EHLO c\r\nMAIL FROM:<s@b.example>\r\nRCPT TO:<u@relay.test>\r\n";

Harness& bdat_ready(Harness& h) {
    h.write(kBdatEnvelope);
    h.clear_output();
    return h;
}

TEST(SmtpServerBdat, ChunksThenLast) {
    Harness h;
    bdat_ready(h);
    h.write("BDAT 5\r\nhello");
    EXPECT_EQ(h.lines(), (Lines{"250 2.0.0 5 octets received"}));
    h.write("BDAT 8 LAST\r\n world\r\n");
    EXPECT_EQ(h.lines(), (Lines{"250 2.0.0 5 octets received", std::string(kQueued)}));
    EXPECT_EQ(h.sink.messages.at(0).body, "hello world\r\n");
    EXPECT_EQ(h.sink.events, (Lines{"begin", "end"}));
}

TEST(SmtpServerBdat, ZeroLastIsAValidMessage) {
    Harness h;
    bdat_ready(h);
    h.write("BDAT 0 LAST\r\n");
    EXPECT_EQ(h.lines(), (Lines{std::string(kQueued)}));
    EXPECT_EQ(h.sink.events, (Lines{"begin", "end"}));
    EXPECT_EQ(h.sink.messages.at(0).body, "");
}

TEST(SmtpServerBdat, PipelinedCommandsAndChunksInOneWrite) {
    Harness h;
    h.write(std::string(kBdatEnvelope) + "BDAT 3\r\n.\r\nBDAT 0\r\nBDAT 4 last\r\nab\r\nNOOP\r\n");
    EXPECT_EQ(h.lines_from(10), (Lines{"250 2.0.0 3 octets received", "250 2.0.0 0 octets received",
                                       std::string(kQueued), "250 2.0.0 Ok"}));
    EXPECT_EQ(h.sink.messages.at(0).body, ".\r\nab\r\n");  // binary: no dot-unstuffing
}

TEST(SmtpServerBdat, ChunkBytesAreNeverCommands) {
    Harness h;
    h.write("EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n");
    EXPECT_EQ(h.lines_from(8),
              (Lines{"503 5.5.1 Error: BDAT needs MAIL and RCPT first", "250 2.0.0 Ok"}));
    EXPECT_FALSE(h.session->wants_close());
}

TEST(SmtpServerBdat, RsetDuringBdatAbortsTheMessage) {
    Harness h;
    bdat_ready(h);
    h.write("BDAT 3\r\nabcRSET\r\nBDAT 2 LAST\r\nxy");
    EXPECT_EQ(h.lines(), (Lines{"250 2.0.0 3 octets received", "250 2.0.0 Ok",
                                "503 5.5.1 Error: BDAT needs MAIL and RCPT first"}));
    EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
}

TEST(SmtpServerBdat, DataAfterBdatIs503) {
    Harness h;
    bdat_ready(h);
    h.write("BDAT 3\r\nabcDATA\r\nRCPT TO:<v@relay.test>\r\nBDAT 0 LAST\r\n");
    EXPECT_EQ(h.lines(), (Lines{"250 2.0.0 3 octets received", "503 5.5.1 Error: DATA after BDAT",
                                "503 5.5.1 Error: RCPT after BDAT", std::string(kQueued)}));
}

TEST(SmtpServerBdat, NoQueueIdIs452AtThatChunkAndDropsTheTransaction) {
    Harness h;
    h.sink.give_id = false;
    bdat_ready(h);
    h.write("BDAT 4\r\nQUITBDAT 3 LAST\r\nabcRCPT TO:<u@relay.test>\r\n");
    EXPECT_EQ(h.lines(), (Lines{"452 4.3.1 Insufficient system storage",
                                "452 4.3.1 Insufficient system storage",
                                "503 5.5.1 Error: need MAIL command"}));
    EXPECT_FALSE(h.session->wants_close());
    h.sink.give_id = true;
    h.write(std::string(kBdatEnvelope.substr(8)) + "BDAT 1 LAST\r\nz");
    EXPECT_EQ(h.last(), kQueued);
}

TEST(SmtpServerBdat, BareLfInAChunkIsRefused) {
    Harness h;
    bdat_ready(h);
    h.write("BDAT 4\r\na\nbcBDAT 2 LAST\r\nxy");
    EXPECT_EQ(h.lines(), (Lines{std::string(kBare), std::string(kBare)}));
    EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
    h.write("MAIL FROM:<>\r\n");  // the failed transaction is over
    EXPECT_EQ(h.last(), "250 2.1.0 Ok");
}

TEST(SmtpServerBdat, CrLfSplitAcrossChunksIsFineButATrailingCrIsNot) {
    {
        Harness h;
        bdat_ready(h);
        h.write("BDAT 2\r\na\rBDAT 1 LAST\r\n\n");
        EXPECT_EQ(h.last(), kQueued);
        EXPECT_EQ(h.sink.messages.at(0).body, "a\r\n");
    }
    {
        Harness h;
        bdat_ready(h);
        h.write("BDAT 2 LAST\r\na\r");
        EXPECT_EQ(h.lines(), (Lines{std::string(kBare)}));
        EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
    }
}

// As in DATA, the first refusal in byte order wins however the chunk arrives (the fuzzer: a
// chunk too big before its bare LF was 550 in one read, 552 byte by byte).
TEST(SmtpServerBdat, RefusalDoesNotDependOnHowTheChunkIsCut) {
    // Each chunk fits the limit; the message passes it at octet 11, its bare LF is octet 16.
    const std::string chunk =
        "BDAT 8\r\n" + std::string(8, 'x') + "BDAT 10 LAST\r\n" + std::string(7, 'x') + "\nab";
    for (size_t cut : {size_t{1}, size_t{5}, chunk.size()}) {
        SCOPED_TRACE(cut);
        Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 10; });
        bdat_ready(h);
        for (size_t at = 0; at < chunk.size(); at += cut)
            h.write(chunk.substr(at, cut));
        EXPECT_EQ(h.lines(), (Lines{"250 2.0.0 8 octets received",
                                    "552 5.3.4 Message size exceeds fixed maximum message size"}));
    }
}

TEST(SmtpServerBdat, SizeLimitApplies) {
    Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 10; });
    bdat_ready(h);
    h.write("BDAT 6\r\n123456BDAT 6 LAST\r\n789012");
    EXPECT_EQ(h.lines(), (Lines{"250 2.0.0 6 octets received",
                                "552 5.3.4 Message size exceeds fixed maximum message size"}));
    EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
}

// A size that does not fit in 64 bits is no size: saturating it made the session wait for 2^64
// octets without a reply.
TEST(SmtpServerBdat, SizePast64BitsIsASyntaxErrorAndCloses) {
    for (const char* size : {"18446744073709551616", "99999999999999999999999999"}) {
        SCOPED_TRACE(size);
        Harness h;
        bdat_ready(h);
        h.write(std::string("BDAT ") + size + " LAST\r\nNOOP\r\n");
        EXPECT_EQ(h.lines(), (Lines{"501 5.5.4 Syntax: BDAT chunk-size [LAST]"}));
        EXPECT_TRUE(h.session->wants_close());
    }
}

// A chunk that alone is over the size limit cannot be read through to resynchronise (it may
// announce exabytes): 552 at once, and the connection closes.
TEST(SmtpServerBdat, ChunkOverTheSizeLimitIsRefusedAtOnceAndCloses) {
    for (const char* size : {"11", "18446744073709551615"}) {
        SCOPED_TRACE(size);
        Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 10; });
        bdat_ready(h);
        h.write(std::string("BDAT ") + size + "\r\n");
        EXPECT_EQ(h.lines(), (Lines{"552 5.3.4 Message size exceeds fixed maximum message size"}));
        EXPECT_TRUE(h.session->wants_close());
        EXPECT_TRUE(h.sink.messages.empty());
    }
    Harness h(false, [](ServerSettings& s) { s.message_size_max_bytes = 10; });
    bdat_ready(h);
    h.write("BDAT 10 LAST\r\n0123456789");  // exactly the limit is fine
    EXPECT_EQ(h.sink.messages.size(), 1u);
}

TEST(SmtpServerBdat, BadSyntaxCloses) {
    Harness h;
    bdat_ready(h);
    h.write("BDAT x\r\n");
    EXPECT_EQ(h.lines(), (Lines{"501 5.5.4 Syntax: BDAT chunk-size [LAST]"}));
    EXPECT_TRUE(h.session->wants_close());
}

TEST(SmtpServerBdat, QuitAndTimeoutBetweenChunksAbort) {
    Harness h;
    bdat_ready(h);
    h.write("BDAT 3\r\nabcQUIT\r\n");
    EXPECT_EQ(h.sink.events, (Lines{"begin", "abort"}));
    EXPECT_EQ(h.last(), "221 2.0.0 Bye");
    Harness t;
    bdat_ready(t);
    t.write("BDAT 10\r\nabc");
    EXPECT_TRUE(t.session->in_data());
    t.session->timeout();
    EXPECT_EQ(t.sink.events, (Lines{"begin", "abort"}));
}

// --- whole transactions at every split point -------------------------------------------------

// The client writes group 1, waits for 354, then writes group 2 (RFC 2920: DATA ends a group).
constexpr std::string_view kGroup1 =
    "EHLO client.example\r\nMAIL FROM:<s@b.example> BODY=8BITMIME\r\n"
    "RCPT TO:<u@relay.test>\r\nRCPT TO:<v@relay.test> NOTIFY=NEVER\r\nDATA\r\n";
constexpr std::string_view kGroup2 =
    "Subject: hi\r\n\r\n..dot\r\n.x\r\nline\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n"
    "BDAT 10\r\n0123456789BDAT 7 LAST\r\nabc\r\n\r\nFOO\r\nQUIT\r\n";

TEST(SmtpServerSplit, ReferenceTransaction) {
    Harness h;
    h.write(kGroup1);
    h.write(kGroup2);
    const Lines l = h.lines();
    ASSERT_EQ(l.size(), 1u + 7 + 3 + 1 + 1 + 2 + 2 + 1 + 1);
    EXPECT_EQ(h.sink.events, (Lines{"begin", "end", "begin", "end"}));
    EXPECT_EQ(h.sink.messages.at(0).body, "Subject: hi\r\n\r\n.dot\r\nx\r\nline\r\n");
    EXPECT_EQ(h.sink.messages.at(1).body, "0123456789abc\r\n\r\n");
    EXPECT_EQ(l.back(), "221 2.0.0 Bye");
}

TEST(SmtpServerSplit, EverySplitPointGivesTheSameResult) {
    Harness ref;
    ref.write(kGroup1);
    ref.write(kGroup2);
    const Outcome want = outcome(ref);
    for (size_t i = 0; i <= kGroup1.size(); ++i) {
        Harness h;
        h.write_split(kGroup1, {i});
        h.write(kGroup2);
        ASSERT_EQ(outcome(h), want) << "group 1 split at " << i;
    }
    for (size_t i = 0; i <= kGroup2.size(); ++i) {
        Harness h;
        h.write(kGroup1);
        h.write_split(kGroup2, {i});
        ASSERT_EQ(outcome(h), want) << "group 2 split at " << i;
    }
}

TEST(SmtpServerSplit, ByteByByteGivesTheSameResult) {
    Harness ref;
    ref.write(kGroup1);
    ref.write(kGroup2);
    Harness h;
    h.write_bytewise(kGroup1);
    h.write_bytewise(kGroup2);
    EXPECT_EQ(outcome(h), outcome(ref));
}

}  // namespace
}  // namespace ringmail::smtp
