// smtp_server_tls_test.cpp — the server session's STARTTLS (RFC 3207) and AUTH (RFC 4954)
// rules, driven byte by byte without any TLS: the tests play the driver, which reports the
// handshake with tls_started() and answers password checks with auth_result().
#include <gtest/gtest.h>

#include <string>

#include "smtp_test_sink.hpp"
#include "tls/auth.hpp"

namespace ringmail::smtp {
namespace {

using test::Harness;
using Lines = std::vector<std::string>;

constexpr std::string_view kVersion = "TLSv1.3";
constexpr std::string_view kCipher = "TLS_AES_128_GCM_SHA256";

void enable_tls_and_auth(ServerSettings& s) {
    s.starttls_available = true;
    s.auth_available = true;
}

// A harness whose client came in on a plain (or submission) listener of a server with a
// certificate and users.
std::unique_ptr<Harness> make(bool submission = false) {
    auto h = std::make_unique<Harness>(false, enable_tls_and_auth);
    if (submission) {
        ClientInfo client{"192.0.2.7", *IpAddress::parse("192.0.2.7"), false, true};
        h->session->start(client);
    }
    h->clear_output();
    return h;
}

std::string b64(std::string_view s) {
    std::string out(tls::base64_encoded_bytes(s.size()), '\0');
    EXPECT_EQ(tls::base64_encode(s, out.data(), out.size()), out.size());
    return out;
}

std::string plain(std::string_view user, std::string_view password) {
    std::string m;
    m.push_back('\0');
    m.append(user);
    m.push_back('\0');
    m.append(password);
    return b64(m);
}

// STARTTLS accepted and the handshake reported; output cleared.
void starttls(Harness& h) {
    h.write("EHLO client.example\r\nSTARTTLS\r\n");
    ASSERT_EQ(h.last(), "220 2.0.0 Ready to start TLS");
    ASSERT_TRUE(h.session->wants_starttls());
    h.session->tls_started(kVersion, kCipher);
    h.clear_output();
}

// TLS, EHLO, AUTH PLAIN with a successful check; output cleared.
void authenticate(Harness& h) {
    starttls(h);
    h.write("EHLO client.example\r\nAUTH PLAIN " + plain("alice", "pw") + "\r\n");
    ASSERT_TRUE(h.session->wants_auth_check());
    h.session->auth_check_started();
    h.session->auth_result(AuthOutcome::ok);
    h.drain();
    ASSERT_EQ(h.last(), "235 2.7.0 Authentication successful");
    h.clear_output();
}

bool has_line(const Lines& lines, std::string_view want) {
    for (const auto& l : lines)
        if (l == want) return true;
    return false;
}

TEST(SmtpServerTls, StarttlsIsAdvertisedBeforeTlsAndAuthOnlyAfter) {
    auto h = make();
    h->write("EHLO client.example\r\n");
    EXPECT_TRUE(has_line(h->lines(), "250-STARTTLS"));
    EXPECT_FALSE(has_line(h->lines(), "250-AUTH PLAIN LOGIN"));
    h->clear_output();
    starttls(*h);
    h->write("EHLO client.example\r\n");
    EXPECT_EQ(h->lines(), (Lines{"250-mx.test", "250-PIPELINING", "250-SIZE 26214400",
                                 "250-8BITMIME", "250-SMTPUTF8", "250-AUTH PLAIN LOGIN",
                                 "250-ENHANCEDSTATUSCODES", "250 CHUNKING"}));
}

TEST(SmtpServerTls, WithoutACertificateThereIsNoStarttls) {
    Harness h;
    h.write("EHLO client.example\r\n");
    EXPECT_FALSE(has_line(h.lines(), "250-STARTTLS"));
    h.clear_output();
    h.write("STARTTLS\r\nNOOP\r\n");
    EXPECT_EQ(h.lines(), (Lines{"502 5.5.1 Error: command not implemented", "250 2.0.0 Ok"}));
    EXPECT_FALSE(h.session->wants_starttls());
}

// RFC 3207 §4.2, CVE-2011-0411: commands pipelined after STARTTLS arrived in clear and must
// never run inside the TLS session.
TEST(SmtpServerTls, BytesAfterStarttlsInTheSameFeedAreDiscarded) {
    auto h = make();
    h->write("EHLO client.example\r\n");
    h->clear_output();
    const std::string_view in = "STARTTLS\r\nRSET\r\nMAIL FROM:<a@b.example>\r\n";
    EXPECT_EQ(h->session->feed(in), in.size());
    h->drain();
    EXPECT_EQ(h->lines(), (Lines{"220 2.0.0 Ready to start TLS"}));
    EXPECT_TRUE(h->session->wants_starttls());
    // More clear text before the handshake: swallowed too.
    EXPECT_EQ(h->session->feed("NOOP\r\n"), 6u);
    h->drain();
    EXPECT_EQ(h->lines().size(), 1u);
    h->session->tls_started(kVersion, kCipher);
    EXPECT_FALSE(h->session->wants_starttls());
    EXPECT_TRUE(h->session->tls_active());
    h->drain();
    EXPECT_EQ(h->lines().size(), 1u) << "nothing pipelined was answered after the handshake";
}

TEST(SmtpServerTls, AfterTlsTheClientMustSayEhloAgain) {
    auto h = make();
    starttls(*h);
    h->write("MAIL FROM:<a@b.example>\r\n");
    EXPECT_EQ(h->last(), "503 5.5.1 Error: send HELO/EHLO first");
}

TEST(SmtpServerTls, AHalfLineBeforeStarttlsIsForgotten) {
    auto h = make();
    h->write("EHLO client.example\r\n");
    h->clear_output();
    h->write("STARTTLS\r\nMAIL FR");  // the partial line would complete after the handshake
    h->session->tls_started(kVersion, kCipher);
    h->write("OM:<a@b.example>\r\n");
    EXPECT_EQ(h->last(), "500 5.5.2 Error: command not recognized");
}

TEST(SmtpServerTls, SecondStarttlsIs503) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nSTARTTLS\r\n");
    EXPECT_EQ(h->last(), "503 5.5.1 Error: TLS already active");
    EXPECT_FALSE(h->session->wants_starttls());
}

TEST(SmtpServerTls, StarttlsInsideATransactionIs503) {
    auto h = make();
    h->write("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\n");
    EXPECT_EQ(h->last(), "503 5.5.1 Error: MAIL transaction in progress");
    EXPECT_FALSE(h->session->wants_starttls());
}

TEST(SmtpServerTls, ImplicitTlsGreetsThenOffersAuth) {
    Harness h(false, enable_tls_and_auth);
    h.session->tls_started(kVersion, kCipher);  // the driver's handshake came before start()
    h.write("EHLO client.example\r\nSTARTTLS\r\n");
    const Lines l = h.lines();
    EXPECT_EQ(l.front(), "220 mx.test ESMTP ringmail");
    EXPECT_TRUE(has_line(l, "250-AUTH PLAIN LOGIN"));
    EXPECT_FALSE(has_line(l, "250-STARTTLS"));
    EXPECT_EQ(h.last(), "503 5.5.1 Error: TLS already active");
}

TEST(SmtpServerTls, AuthBeforeTlsIs538) {
    auto h = make();
    h->write("EHLO client.example\r\nAUTH PLAIN " + plain("alice", "pw") + "\r\n");
    EXPECT_EQ(h->last(), "538 5.7.11 Encryption required for requested authentication mechanism");
    EXPECT_FALSE(h->session->wants_auth_check());
    h->write("AUTH LOGIN\r\n");
    EXPECT_EQ(h->last(), "538 5.7.11 Encryption required for requested authentication mechanism");
}

TEST(SmtpServerTls, AuthWithoutUsersIsNotEnabled) {
    Harness h(false, [](ServerSettings& s) { s.starttls_available = true; });
    h.write("EHLO client.example\r\nSTARTTLS\r\n");
    h.session->tls_started(kVersion, kCipher);
    h.clear_output();
    h.write("EHLO client.example\r\n");
    EXPECT_FALSE(has_line(h.lines(), "250-AUTH PLAIN LOGIN"));
    h.write("AUTH PLAIN " + plain("alice", "pw") + "\r\n");
    EXPECT_EQ(h.last(), "503 5.5.1 Error: authentication not enabled");
}

TEST(SmtpServerTls, AuthPlainHandsCredentialsToTheDriverAndWipesThem) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nAUTH PLAIN " + plain("alice", "secret") + "\r\n");
    ASSERT_TRUE(h->session->wants_auth_check());
    EXPECT_EQ(h->session->auth_username(), "alice");
    EXPECT_EQ(h->session->auth_password(), "secret");
    h->session->auth_check_started();
    EXPECT_FALSE(h->session->wants_auth_check());
    EXPECT_EQ(h->session->auth_password(), "");
    h->session->auth_result(AuthOutcome::ok);
    h->drain();
    EXPECT_EQ(h->last(), "235 2.7.0 Authentication successful");
    EXPECT_TRUE(h->session->authenticated());
}

TEST(SmtpServerTls, AuthLoginAsksForUsernameThenPassword) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\n");
    h->clear_output();
    h->write("AUTH LOGIN\r\n");
    EXPECT_EQ(h->last(), "334 VXNlcm5hbWU6");
    h->write(b64("alice") + "\r\n");
    EXPECT_EQ(h->last(), "334 UGFzc3dvcmQ6");
    h->write(b64("pw") + "\r\n");
    ASSERT_TRUE(h->session->wants_auth_check());
    EXPECT_EQ(h->session->auth_username(), "alice");
    EXPECT_EQ(h->session->auth_password(), "pw");
}

TEST(SmtpServerTls, InputWaitsForTheCheck) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\n");
    h->clear_output();
    const std::string in = "AUTH PLAIN " + plain("alice", "pw") + "\r\nNOOP\r\n";
    const size_t n = h->session->feed(in);
    EXPECT_EQ(n, in.size() - 6);
    EXPECT_EQ(h->session->feed(std::string_view(in).substr(n)), 0u);
    h->session->auth_check_started();
    h->session->auth_result(AuthOutcome::ok);
    EXPECT_EQ(h->session->feed(std::string_view(in).substr(n)), 6u);
    h->drain();
    EXPECT_EQ(h->lines(), (Lines{"235 2.7.0 Authentication successful", "250 2.0.0 Ok"}));
}

TEST(SmtpServerTls, FailedCheckIs535AndTheNextAuthStartsClean) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nAUTH LOGIN\r\n" + b64("alice") + "\r\n" + b64("bad") + "\r\n");
    ASSERT_TRUE(h->session->wants_auth_check());
    h->session->auth_check_started();
    h->session->auth_result(AuthOutcome::failed);
    h->drain();
    EXPECT_EQ(h->last(), "535 5.7.8 Authentication credentials invalid");
    EXPECT_FALSE(h->session->authenticated());
    // No LOGIN state survives: a PLAIN exchange begins from scratch.
    h->write("AUTH PLAIN " + plain("bob", "pw2") + "\r\n");
    ASSERT_TRUE(h->session->wants_auth_check());
    EXPECT_EQ(h->session->auth_username(), "bob");
    EXPECT_EQ(h->session->auth_password(), "pw2");
}

TEST(SmtpServerTls, CancelledExchangeLeavesNoState) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nAUTH LOGIN\r\n" + b64("alice") + "\r\n*\r\nNOOP\r\n");
    const Lines l = h->lines();
    ASSERT_GE(l.size(), 2u);
    EXPECT_EQ(l[l.size() - 2], "501 5.7.0 Authentication cancelled");
    EXPECT_EQ(l.back(), "250 2.0.0 Ok");
    EXPECT_FALSE(h->session->wants_auth_check());
    h->write("AUTH LOGIN\r\n");
    EXPECT_EQ(h->last(), "334 VXNlcm5hbWU6");
}

TEST(SmtpServerTls, MalformedResponseIsRefusedAndCommandsResume) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nAUTH PLAIN\r\n");
    EXPECT_EQ(h->last(), "334 ");
    h->write("not base64!\r\nNOOP\r\n");
    const Lines l = h->lines();
    EXPECT_EQ(l[l.size() - 2], "501 5.5.2 Cannot decode response");
    EXPECT_EQ(l.back(), "250 2.0.0 Ok");
}

TEST(SmtpServerTls, AuthTwiceOrInsideATransactionIs503) {
    auto h = make();
    authenticate(*h);
    h->write("AUTH PLAIN " + plain("alice", "pw") + "\r\n");
    EXPECT_EQ(h->last(), "503 5.5.1 Error: already authenticated");
    auto t = make();
    starttls(*t);
    t->write("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nAUTH PLAIN " +
             plain("alice", "pw") + "\r\n");
    EXPECT_EQ(t->last(), "503 5.5.1 Error: MAIL transaction in progress");
}

TEST(SmtpServerTls, AuthAfterHeloIs503) {
    auto h = make();
    starttls(*h);
    h->write("HELO client.example\r\nAUTH PLAIN " + plain("alice", "pw") + "\r\n");
    EXPECT_EQ(h->last(), "503 5.5.1 Error: send EHLO first");
}

TEST(SmtpServerTls, TemporaryAndTooManyOutcomes) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nAUTH PLAIN " + plain("alice", "pw") + "\r\n");
    h->session->auth_check_started();
    h->session->auth_result(AuthOutcome::temporary);
    h->drain();
    EXPECT_EQ(h->last(), "454 4.7.0 Temporary authentication failure");
    EXPECT_FALSE(h->session->wants_close());
    h->write("AUTH PLAIN " + plain("alice", "pw") + "\r\n");
    h->session->auth_check_started();
    h->session->auth_result(AuthOutcome::too_many);
    h->drain();
    EXPECT_EQ(h->last(), "421 4.7.0 mx.test Error: too many failed authentications");
    EXPECT_TRUE(h->session->wants_close());
}

TEST(SmtpServerTls, ResultAfterATimeoutIsIgnored) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nAUTH PLAIN " + plain("alice", "pw") + "\r\n");
    h->session->auth_check_started();
    h->session->timeout();
    h->drain();
    EXPECT_EQ(h->last(), "421 4.4.2 mx.test Error: timeout exceeded");
    h->clear_output();
    h->session->auth_result(AuthOutcome::ok);
    h->drain();
    EXPECT_TRUE(h->out.empty());
    EXPECT_FALSE(h->session->authenticated());
}

// RFC 4954 §4: AUTH lines are not held to 512 octets; every other line still is.
TEST(SmtpServerTls, LongAuthLinesAreAcceptedOthersAreNot) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\n");
    h->clear_output();
    const std::string user(255, 'u');
    const std::string password(255, 'p');
    const std::string line = "AUTH PLAIN " + plain(user, password) + "\r\n";
    ASSERT_GT(line.size(), limits::command_line_max_bytes);
    h->write_split(line, {3, 300, 600});
    ASSERT_TRUE(h->session->wants_auth_check());
    EXPECT_EQ(h->session->auth_username(), user);
    EXPECT_EQ(h->session->auth_password(), password);
    h->session->auth_check_started();
    h->session->auth_result(AuthOutcome::failed);
    h->clear_output();
    h->write("NOOP " + std::string(600, 'x') + "\r\n");
    EXPECT_EQ(h->last(), "500 5.5.2 Error: line too long");
    h->write("AUTH PLAIN " + std::string(3000, 'A') + "\r\nNOOP\r\n");
    Lines l = h->lines();
    EXPECT_EQ(l[l.size() - 2], "500 5.5.2 Error: line too long");
    EXPECT_EQ(l.back(), "250 2.0.0 Ok");
    h->write("AUTH PLAIN\r\n" + std::string(3000, 'A') + "\r\nNOOP\r\n");  // the answer
    l = h->lines();
    EXPECT_EQ(l[l.size() - 2], "500 5.5.6 Authentication exchange line is too long");
    EXPECT_EQ(l.back(), "250 2.0.0 Ok");
    EXPECT_FALSE(h->session->wants_auth_check());
}

// RFC 6409 §4.3: the submission port takes mail from authenticated users only.
TEST(SmtpServerTls, SubmissionNeedsTlsThenAuthBeforeMail) {
    auto h = make(/*submission=*/true);
    h->write("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n");
    EXPECT_EQ(h->last(), "530 5.7.0 Must issue a STARTTLS command first");
    h->clear_output();
    starttls(*h);
    h->write("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n");
    EXPECT_EQ(h->last(), "530 5.7.0 Authentication required");
    h->write("AUTH PLAIN " + plain("alice", "pw") + "\r\n");
    h->session->auth_check_started();
    h->session->auth_result(AuthOutcome::ok);
    h->write("MAIL FROM:<a@b.example>\r\n");
    EXPECT_EQ(h->last(), "250 2.1.0 Ok");
}

TEST(SmtpServerTls, AuthenticatedClientsRelayAndTheTraceSaysEsmtpsa) {
    auto h = make();
    starttls(*h);
    h->write("EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@elsewhere.example>\r\n");
    EXPECT_EQ(h->last(), "554 5.7.1 <u@elsewhere.example>: Relay access denied");
    h->write("RSET\r\n");
    h->clear_output();
    h->write("AUTH PLAIN " + plain("alice", "pw") + "\r\n");
    h->session->auth_check_started();
    h->session->auth_result(AuthOutcome::ok);
    h->write("MAIL FROM:<a@b.example>\r\nRCPT TO:<u@elsewhere.example>\r\nDATA\r\n");
    h->write("Subject: t\r\n\r\nhi\r\n.\r\n");
    ASSERT_EQ(h->sink.messages.size(), 1u);
    const auto& m = h->sink.messages[0];
    EXPECT_TRUE(m.ended);
    EXPECT_EQ(m.protocol, "ESMTPSA");
    EXPECT_NE(m.received.find("with ESMTPSA id"), std::string::npos) << m.received;
    EXPECT_NE(m.received.find("\r\n\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n"),
              std::string::npos)
        << m.received;
}

TEST(SmtpServerTls, TlsWithoutAuthIsEsmtps) {
    auto h = make();
    starttls(*h);
    h->write(
        "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@relay.test>\r\n"
        "DATA\r\n");
    h->write("hi\r\n.\r\n");
    ASSERT_EQ(h->sink.messages.size(), 1u);
    EXPECT_EQ(h->sink.messages[0].protocol, "ESMTPS");
    EXPECT_NE(h->sink.messages[0].received.find("with ESMTPS id"), std::string::npos);
}

TEST(SmtpServerTls, ANewConnectionForgetsTlsAndAuth) {
    auto h = make();
    authenticate(*h);
    ClientInfo client{"192.0.2.8", *IpAddress::parse("192.0.2.8"), false};
    h->session->start(client);
    h->clear_output();
    h->write("EHLO client.example\r\n");
    EXPECT_TRUE(has_line(h->lines(), "250-STARTTLS"));
    EXPECT_FALSE(h->session->tls_active());
    EXPECT_FALSE(h->session->authenticated());
}

}  // namespace
}  // namespace ringmail::smtp
