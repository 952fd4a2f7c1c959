// tls_auth_test.cpp — pins tls/auth.hpp: strict base64 (RFC 4648), the PLAIN message
// (RFC 4616), the AUTH PLAIN / LOGIN exchange with its replies (RFC 4954), and crypt(3)
// verification of --auth-users with hashes made at test time (openssl passwd -6, and
// libxcrypt's crypt_gensalt for yescrypt).
#include "tls/auth.hpp"

#include <crypt.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace ringmail::tls {
namespace {

using namespace std::string_literals;

std::string b64(std::string_view in) {
    std::string out(base64_encoded_bytes(in.size()), '\0');
    EXPECT_EQ(base64_encode(in, out.data(), out.size()), out.size());
    return out;
}

bool decodes(std::string_view in, std::string* out) {
    char buf[1024];
    size_t n = 0;
    if (!base64_decode(in, buf, sizeof buf, &n)) return false;
    out->assign(buf, n);
    return true;
}

// --- Base64 ------------------------------------------------------------------------------------

TEST(AuthBase64, EncodesRfc4648TestVectors) {
    EXPECT_EQ(b64(""), "");
    EXPECT_EQ(b64("f"), "Zg==");
    EXPECT_EQ(b64("fo"), "Zm8=");
    EXPECT_EQ(b64("foo"), "Zm9v");
    EXPECT_EQ(b64("foob"), "Zm9vYg==");
    EXPECT_EQ(b64("fooba"), "Zm9vYmE=");
    EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
    EXPECT_EQ(b64("Username:"), "VXNlcm5hbWU6");
    EXPECT_EQ(b64("Password:"), "UGFzc3dvcmQ6");
    char small[3];
    EXPECT_EQ(base64_encode("foo", small, sizeof small), 0u) << "must refuse a short buffer";
}

TEST(AuthBase64, RoundTripsEveryByteAtEveryLength) {
    std::string all;
    for (int i = 0; i < 256; ++i)
        all.push_back(static_cast<char>(i));
    for (size_t len = 0; len <= all.size(); ++len) {
        const std::string in = all.substr(256 - len);
        std::string out;
        ASSERT_TRUE(decodes(b64(in), &out)) << len;
        ASSERT_EQ(out, in) << len;
    }
}

TEST(AuthBase64, RefusesNonCanonicalInput) {
    std::string out;
    EXPECT_FALSE(decodes("Zg", &out)) << "missing padding";
    EXPECT_FALSE(decodes("Zg=", &out));
    EXPECT_FALSE(decodes("Zm9v ", &out)) << "whitespace";
    EXPECT_FALSE(decodes("Zm 9v", &out));
    EXPECT_FALSE(decodes("Zm9v\r\n", &out));
    EXPECT_FALSE(decodes("Zg==Zg==", &out)) << "padding in the middle";
    EXPECT_FALSE(decodes("Z===", &out));
    EXPECT_FALSE(decodes("Zm=v", &out));
    EXPECT_FALSE(decodes("Zh==", &out)) << "non-zero padding bits (RFC 4648 §3.5)";
    EXPECT_FALSE(decodes("Zm9=", &out)) << "non-zero padding bits";
    EXPECT_FALSE(decodes("Zm9v-_==", &out)) << "base64url alphabet";
    EXPECT_FALSE(decodes("Zm9\x80", &out));
    EXPECT_TRUE(decodes("Zg==", &out));
    EXPECT_EQ(out, "f");
    EXPECT_TRUE(decodes("", &out));
    EXPECT_EQ(out, "");
}

TEST(AuthBase64, RefusesOutputBeyondCapacity) {
    char buf[5];
    size_t n = 0;
    EXPECT_FALSE(base64_decode("Zm9vYmFy", buf, sizeof buf, &n));
    EXPECT_TRUE(base64_decode("Zm9vYg==", buf, 4, &n));
    EXPECT_EQ(n, 4u);
}

// --- PLAIN -----------------------------------------------------------------------------------

TEST(AuthPlain, SplitsAuthzidAuthcidPassword) {
    PlainCredentials c;
    const std::string first = "\0alice\0s3cret"s;  // the views point into the message
    ASSERT_EQ(parse_plain(first, &c), PlainError::ok);
    EXPECT_EQ(c.authzid, "");
    EXPECT_EQ(c.authcid, "alice");
    EXPECT_EQ(c.password, "s3cret");
    const std::string second = "alice\0alice\0pw"s;
    ASSERT_EQ(parse_plain(second, &c), PlainError::ok);
    EXPECT_EQ(c.authzid, "alice");
}

TEST(AuthPlain, RefusesMalformedMessages) {
    PlainCredentials c;
    EXPECT_EQ(parse_plain("", &c), PlainError::malformed);
    EXPECT_EQ(parse_plain("alice", &c), PlainError::malformed);
    EXPECT_EQ(parse_plain("\0alice"s, &c), PlainError::malformed) << "one NUL";
    EXPECT_EQ(parse_plain("\0alice\0pw\0extra"s, &c), PlainError::malformed) << "three NULs";
    EXPECT_EQ(parse_plain("\0alice\0p\0w"s, &c), PlainError::malformed) << "NUL in password";
    EXPECT_EQ(parse_plain("\0\0pw"s, &c), PlainError::empty_authcid);
    EXPECT_EQ(parse_plain("\0alice\0"s, &c), PlainError::empty_password);
    const std::string long_field(256, 'a');
    EXPECT_EQ(parse_plain("\0"s + long_field + "\0pw"s, &c), PlainError::too_long);
    EXPECT_EQ(parse_plain("\0alice\0"s + long_field, &c), PlainError::too_long);
    EXPECT_EQ(parse_plain(long_field + "\0alice\0pw"s, &c), PlainError::too_long);
    EXPECT_EQ(parse_plain("\0alice\0"s + std::string(255, 'p'), &c), PlainError::ok)
        << "255 octets must be accepted (RFC 4616 §2)";
}

// --- The exchange ----------------------------------------------------------------------------

TEST(AuthExchange, PlainWithInitialResponseAsksForVerification) {
    AuthExchange x;
    const AuthStep s = x.start("PLAIN " + b64("\0alice\0s3cret"s));
    ASSERT_EQ(s.action, AuthAction::verify);
    EXPECT_EQ(x.mechanism(), AuthMechanism::plain);
    EXPECT_EQ(x.username(), "alice");
    EXPECT_EQ(x.password(), "s3cret");
    EXPECT_FALSE(x.waiting());
    x.reset();
    EXPECT_EQ(x.username(), "");
    EXPECT_EQ(x.password(), "");
}

TEST(AuthExchange, PlainWithoutInitialResponseSendsEmptyChallenge) {
    AuthExchange x;
    AuthStep s = x.start("plain");  // mechanism names are case-insensitive
    ASSERT_EQ(s.action, AuthAction::challenge);
    EXPECT_EQ(s.reply, "334 \r\n");
    EXPECT_TRUE(x.waiting());
    s = x.resume(b64("\0bob\0pw"s));
    ASSERT_EQ(s.action, AuthAction::verify);
    EXPECT_EQ(x.username(), "bob");
    EXPECT_EQ(x.password(), "pw");
}

TEST(AuthExchange, PlainBadBase64Is501) {
    AuthExchange x;
    AuthStep s = x.start("PLAIN AGFsaWNlAHB3!!!");
    EXPECT_EQ(s.action, AuthAction::rejected);
    EXPECT_EQ(s.reply, "501 5.5.2 Cannot decode response\r\n");
    ASSERT_EQ(x.start("PLAIN").action, AuthAction::challenge);
    s = x.resume("AGFsaWNlAHB");  // length not a multiple of 4
    EXPECT_EQ(s.action, AuthAction::rejected);
    EXPECT_EQ(s.reply, auth_reply_bad_base64);
    EXPECT_FALSE(x.waiting());
}

TEST(AuthExchange, PlainMalformedCredentialsFail) {
    AuthExchange x;
    for (const std::string& msg : {"alice"s, "\0alice"s, "\0alice\0"s, "\0\0pw"s,
                                   "\0alice\0pw\0more"s, "mallory\0alice\0pw"s}) {
        const AuthStep s = x.start("PLAIN " + b64(msg));
        EXPECT_EQ(s.action, AuthAction::rejected);
        EXPECT_EQ(s.reply, auth_reply_failed);
        EXPECT_EQ(x.username(), "") << "a failed attempt must leave nothing behind";
    }
    EXPECT_EQ(x.start("PLAIN =").reply, auth_reply_failed) << "\"=\" is an empty response";
}

TEST(AuthExchange, OverlongResponsesAreRefused) {
    AuthExchange x;
    const std::string huge = b64("\0alice\0"s + std::string(2000, 'p'));
    EXPECT_EQ(x.start("PLAIN " + huge).reply, auth_reply_failed);
    const std::string line(auth_line_max_bytes + 1, 'A');
    EXPECT_EQ(x.start("PLAIN " + line).reply, auth_reply_line_too_long);
    ASSERT_EQ(x.start("LOGIN").action, AuthAction::challenge);
    EXPECT_EQ(x.resume(line).reply, auth_reply_line_too_long);
    EXPECT_FALSE(x.waiting());
}

TEST(AuthExchange, LoginSequence) {
    AuthExchange x;
    AuthStep s = x.start("LOGIN");
    ASSERT_EQ(s.action, AuthAction::challenge);
    EXPECT_EQ(s.reply, "334 VXNlcm5hbWU6\r\n");
    s = x.resume(b64("carol"));
    ASSERT_EQ(s.action, AuthAction::challenge);
    EXPECT_EQ(s.reply, "334 UGFzc3dvcmQ6\r\n");
    s = x.resume(b64("hunter2"));
    ASSERT_EQ(s.action, AuthAction::verify);
    EXPECT_EQ(x.mechanism(), AuthMechanism::login);
    EXPECT_EQ(x.username(), "carol");
    EXPECT_EQ(x.password(), "hunter2");
}

TEST(AuthExchange, LoginWithInitialResponseSkipsTheUsernamePrompt) {
    AuthExchange x;
    AuthStep s = x.start("LOGIN " + b64("carol"));
    ASSERT_EQ(s.action, AuthAction::challenge);
    EXPECT_EQ(s.reply, auth_challenge_password);
    s = x.resume(b64("hunter2"));
    ASSERT_EQ(s.action, AuthAction::verify);
    EXPECT_EQ(x.username(), "carol");
}

TEST(AuthExchange, LoginRefusesEmptyOrNulFields) {
    AuthExchange x;
    ASSERT_EQ(x.start("LOGIN").action, AuthAction::challenge);
    EXPECT_EQ(x.resume("=").reply, auth_reply_failed);
    ASSERT_EQ(x.start("LOGIN").action, AuthAction::challenge);
    EXPECT_EQ(x.resume(b64("ca\0rol"s)).reply, auth_reply_failed);
    ASSERT_EQ(x.start("LOGIN " + b64("carol")).action, AuthAction::challenge);
    EXPECT_EQ(x.resume("=").reply, auth_reply_failed) << "empty password";
    ASSERT_EQ(x.start("LOGIN " + b64("carol")).action, AuthAction::challenge);
    EXPECT_EQ(x.resume(b64(std::string(256, 'p'))).reply, auth_reply_failed);
}

TEST(AuthExchange, StarCancelsAtEveryPrompt) {
    AuthExchange x;
    ASSERT_EQ(x.start("PLAIN").action, AuthAction::challenge);
    AuthStep s = x.resume("*");
    EXPECT_EQ(s.action, AuthAction::rejected);
    EXPECT_EQ(s.reply, "501 5.7.0 Authentication cancelled\r\n");
    EXPECT_FALSE(x.waiting());

    ASSERT_EQ(x.start("LOGIN").action, AuthAction::challenge);
    EXPECT_EQ(x.resume("*").reply, auth_reply_cancelled);
    ASSERT_EQ(x.start("LOGIN").action, AuthAction::challenge);
    ASSERT_EQ(x.resume(b64("carol")).action, AuthAction::challenge);
    EXPECT_EQ(x.resume("*").reply, auth_reply_cancelled);
    EXPECT_EQ(x.username(), "") << "the cancelled username must be wiped";
    EXPECT_EQ(x.mechanism(), AuthMechanism::none);
}

TEST(AuthExchange, UnknownMechanismAndSyntax) {
    AuthExchange x;
    EXPECT_EQ(x.start("CRAM-MD5").reply, "504 5.5.4 Unrecognized authentication type\r\n");
    EXPECT_EQ(x.start("PLAINX").reply, auth_reply_unknown_mechanism);
    EXPECT_EQ(x.start("").reply, auth_reply_syntax);
    EXPECT_EQ(x.start("PLAIN ").reply, auth_reply_syntax);
    EXPECT_EQ(x.start("PLAIN a b").reply, auth_reply_syntax);
    EXPECT_EQ(x.resume("dGVzdA==").reply, auth_reply_syntax) << "no exchange running";
}

TEST(AuthExchange, FailedMechanismThenAnotherStartsClean) {
    AuthExchange x;
    ASSERT_EQ(x.start("LOGIN").action, AuthAction::challenge);
    ASSERT_EQ(x.resume(b64("carol")).action, AuthAction::challenge);
    // The client abandons LOGIN by starting PLAIN (the driver calls start() on a new AUTH).
    const AuthStep s = x.start("PLAIN " + b64("\0dave\0pw2"s));
    ASSERT_EQ(s.action, AuthAction::verify);
    EXPECT_EQ(x.username(), "dave");
    EXPECT_EQ(x.password(), "pw2");
}

// --- crypt(3) --------------------------------------------------------------------------------

std::string run(const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) return out;
    char buf[512];
    while (fgets(buf, sizeof buf, p) != nullptr)
        out += buf;
    pclose(p);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
        out.pop_back();
    return out;
}

std::string make_hash(const char* prefix, unsigned long cost, const char* password) {
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn(prefix, cost, nullptr, 0, salt, sizeof salt) == nullptr) return {};
    crypt_data data{};
    const char* h = crypt_rn(password, salt, &data, sizeof data);
    return h != nullptr ? std::string(h) : std::string();
}

TEST(AuthCrypt, VerifiesSha512CryptFromOpenssl) {
    const std::string hash = run("openssl passwd -6 'correct horse'");
    ASSERT_EQ(hash.rfind("$6$", 0), 0u) << hash;
    CryptScratch scratch;
    EXPECT_TRUE(verify_password(hash, "correct horse", scratch));
    EXPECT_FALSE(verify_password(hash, "correct horsf", scratch));
    EXPECT_FALSE(verify_password(hash, "", scratch));
    EXPECT_FALSE(verify_password(hash, "correct horse\0x"s, scratch)) << "NUL in password";
    EXPECT_TRUE(verify_password(hash, "correct horse", scratch)) << "scratch is reusable";
}

TEST(AuthCrypt, VerifiesYescrypt) {
    const std::string hash = make_hash("$y$", 0, "tr0ub4dor");
    ASSERT_EQ(hash.rfind("$y$", 0), 0u) << hash;
    CryptScratch scratch;
    EXPECT_TRUE(verify_password(hash, "tr0ub4dor", scratch));
    EXPECT_FALSE(verify_password(hash, "tr0ub4dor ", scratch));
}

TEST(AuthCrypt, BrokenHashesNeverMatch) {
    CryptScratch scratch;
    EXPECT_FALSE(verify_password("", "", scratch));
    EXPECT_FALSE(verify_password("*", "", scratch));
    EXPECT_FALSE(verify_password("*0", "*0", scratch));
    EXPECT_FALSE(verify_password("$6$", "x", scratch));
    EXPECT_FALSE(verify_password("!locked", "locked", scratch));
}

class AuthUsersTest : public ::testing::Test {
  protected:
    void SetUp() override {
        sha_ = run("openssl passwd -6 alicepw");
        ASSERT_EQ(sha_.rfind("$6$", 0), 0u);
        yes_ = make_hash("$y$", 0, "bobpw");
        ASSERT_EQ(yes_.rfind("$y$", 0), 0u);
    }
    std::string sha_;
    std::string yes_;
    CryptScratch scratch_;
};

TEST_F(AuthUsersTest, LoadsAndVerifies) {
    AuthUsers users;
    std::string error;
    const std::string text =
        "# users of the submission port\n\nalice:" + sha_ + "\r\nbob@example.org:" + yes_;
    ASSERT_TRUE(users.load_text(text, "users", &error)) << error;
    EXPECT_EQ(users.size(), 2u);
    EXPECT_TRUE(users.verify("alice", "alicepw", scratch_));
    EXPECT_TRUE(users.verify("bob@example.org", "bobpw", scratch_));
    EXPECT_FALSE(users.verify("alice", "bobpw", scratch_)) << "wrong password";
    EXPECT_FALSE(users.verify("bob@example.org", "alicepw", scratch_));
    EXPECT_FALSE(users.verify("carol", "alicepw", scratch_)) << "unknown user";
    EXPECT_FALSE(users.verify("Alice", "alicepw", scratch_)) << "user names are exact";
}

TEST_F(AuthUsersTest, LoadsFromAFile) {
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("ringmail-users-" + std::to_string(getpid()));
    std::ofstream(path) << "alice:" << sha_ << "\n";
    AuthUsers users;
    std::string error;
    ASSERT_TRUE(users.load_file(path.string(), &error)) << error;
    EXPECT_TRUE(users.verify("alice", "alicepw", scratch_));
    std::filesystem::remove(path);
    EXPECT_FALSE(users.load_file(path.string(), &error));
    EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

TEST_F(AuthUsersTest, RefusesBadLinesWithTheirNumber) {
    AuthUsers users;
    std::string error;
    EXPECT_FALSE(users.load_text("alice:" + sha_ + "\nbob\n", "f", &error));
    EXPECT_EQ(error, "f:2: expected user:hash");
    EXPECT_EQ(users.size(), 0u) << "a failed load leaves no users";
    EXPECT_FALSE(users.load_text("alice:plaintext\n", "f", &error));
    EXPECT_EQ(error.rfind("f:1: not a crypt(3) hash", 0), 0u) << error;
    EXPECT_FALSE(users.load_text("alice:" + run("openssl passwd -1 pw") + "\n", "f", &error))
        << "md5crypt is legacy";
    EXPECT_FALSE(users.load_text("alice:" + sha_ + "\nalice:" + yes_ + "\n", "f", &error));
    EXPECT_EQ(error, "f:2: duplicate user");
    EXPECT_FALSE(users.load_text(":" + sha_ + "\n", "f", &error));
    EXPECT_EQ(error, "f:1: invalid user name");
    EXPECT_FALSE(users.load_text("al ice:" + sha_ + "\n", "f", &error));
}

}  // namespace
}  // namespace ringmail::tls
