// auth.cpp — base64, PLAIN, the LOGIN exchange and crypt(3) verification. See auth.hpp.
#include "tls/auth.hpp"

#include <crypt.h>
#include <string.h>  // explicit_bzero

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ringmail::tls {
namespace {

constexpr char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// 0..63 for alphabet characters, 64 for '=', 255 for anything else.
constexpr uint8_t base64_value(char c) noexcept {
    if (c >= 'A' && c <= 'Z') return static_cast<uint8_t>(c - 'A');
    if (c >= 'a' && c <= 'z') return static_cast<uint8_t>(c - 'a' + 26);
    if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0' + 52);
    if (c == '+') return 62;
    if (c == '/') return 63;
    if (c == '=') return 64;
    return 255;
}

bool ascii_iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 'a' + 'A');
        if (x != b[i]) return false;
    }
    return true;
}

// Constant time in the contents; the lengths (not secret: every hash of a method has the
// same length) decide only the loop bound.
bool equal_constant_time(std::string_view a, std::string_view b) noexcept {
    const size_t n = std::max(a.size(), b.size());
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    for (size_t i = 0; i < n; ++i) {
        const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
        diff |= static_cast<unsigned>(x ^ y);
    }
    return diff == 0;
}

bool valid_username(std::string_view user) noexcept {
    if (user.empty() || user.size() > auth_field_max_bytes) return false;
    return std::all_of(user.begin(), user.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u != 0x7f && c != ':';
    });
}

}  // namespace

// --- Base64 ------------------------------------------------------------------------------------

size_t base64_encode(std::string_view in, char* out, size_t cap) noexcept {
    const size_t need = base64_encoded_bytes(in.size());
    if (cap < need) return 0;
    const auto* p = reinterpret_cast<const unsigned char*>(in.data());
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
        out[o++] = base64_alphabet[(v >> 18) & 63];
        out[o++] = base64_alphabet[(v >> 12) & 63];
        out[o++] = base64_alphabet[(v >> 6) & 63];
        out[o++] = base64_alphabet[v & 63];
    }
    const size_t rest = in.size() - i;
    if (rest != 0) {
        uint32_t v = uint32_t{p[i]} << 16;
        if (rest == 2) v |= uint32_t{p[i + 1]} << 8;
        out[o++] = base64_alphabet[(v >> 18) & 63];
        out[o++] = base64_alphabet[(v >> 12) & 63];
        out[o++] = rest == 2 ? base64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

bool base64_decode(std::string_view in, char* out, size_t cap, size_t* out_len) noexcept {
    if (in.size() % 4 != 0) return false;
    size_t o = 0;
    for (size_t i = 0; i < in.size(); i += 4) {
        const bool last = i + 4 == in.size();
        uint8_t v[4];
        for (size_t k = 0; k < 4; ++k)
            v[k] = base64_value(in[i + k]);
        if (v[0] > 63 || v[1] > 63) return false;
        // '=' may only end the input: "xx==" or "xxx=".
        const size_t pad = v[3] == 64 ? (v[2] == 64 ? 2 : 1) : 0;
        if (v[2] == 255 || v[3] == 255 || (v[2] == 64 && v[3] != 64)) return false;
        if (pad != 0 && !last) return false;
        // RFC 4648 §3.5: the bits dropped by padding must be zero, or two encodings would
        // decode alike (a filter could be slipped past with a non-canonical form).
        if (pad == 2 && (v[1] & 0x0f) != 0) return false;
        if (pad == 1 && (v[2] & 0x03) != 0) return false;
        const size_t bytes = 3 - pad;
        if (cap - o < bytes) return false;
        const uint32_t w = (uint32_t{v[0]} << 18) | (uint32_t{v[1]} << 12) |
                           (uint32_t{pad == 2 ? 0u : v[2]} << 6) | (pad != 0 ? 0u : v[3]);
        out[o++] = static_cast<char>(w >> 16);
        if (bytes > 1) out[o++] = static_cast<char>(w >> 8);
        if (bytes > 2) out[o++] = static_cast<char>(w);
    }
    *out_len = o;
    return true;
}

// --- PLAIN ------------------------------------------------------------------------------------

PlainError parse_plain(std::string_view message, PlainCredentials* out) noexcept {
    const size_t first = message.find('\0');
    if (first == std::string_view::npos) return PlainError::malformed;
    const size_t second = message.find('\0', first + 1);
    if (second == std::string_view::npos) return PlainError::malformed;
    // A third NUL would let "user\0pass\0extra" smuggle a different password past a checker
    // that splits differently; RFC 4616 SAFE excludes NUL.
    if (message.find('\0', second + 1) != std::string_view::npos) return PlainError::malformed;
    const std::string_view authzid = message.substr(0, first);
    const std::string_view authcid = message.substr(first + 1, second - first - 1);
    const std::string_view password = message.substr(second + 1);
    if (authzid.size() > auth_field_max_bytes || authcid.size() > auth_field_max_bytes ||
        password.size() > auth_field_max_bytes) {
        return PlainError::too_long;
    }
    if (authcid.empty()) return PlainError::empty_authcid;
    if (password.empty()) return PlainError::empty_password;
    *out = {authzid, authcid, password};
    return PlainError::ok;
}

// --- AuthExchange -----------------------------------------------------------------------------

void AuthExchange::reset() noexcept {
    explicit_bzero(user_, sizeof user_);
    explicit_bzero(pass_, sizeof pass_);
    explicit_bzero(scratch_, sizeof scratch_);
    user_len_ = pass_len_ = scratch_len_ = 0;
    stage_ = Stage::idle;
    mechanism_ = AuthMechanism::none;
}

AuthStep AuthExchange::reject(std::string_view reply) noexcept {
    reset();
    return {AuthAction::rejected, reply};
}

AuthStep AuthExchange::start(std::string_view args) noexcept {
    reset();
    if (args.size() > auth_line_max_bytes) return reject(auth_reply_line_too_long);
    const size_t sp = args.find(' ');
    const std::string_view mech = args.substr(0, sp);
    const bool has_response = sp != std::string_view::npos;
    const std::string_view response = has_response ? args.substr(sp + 1) : std::string_view();
    if (mech.empty() || (has_response && (response.empty() || response.find(' ') != response.npos)))
        return reject(auth_reply_syntax);
    if (ascii_iequals(mech, "PLAIN")) {
        mechanism_ = AuthMechanism::plain;
        if (has_response) return on_plain(response);
        stage_ = Stage::plain_response;
        return {AuthAction::challenge, auth_challenge_plain};
    }
    if (ascii_iequals(mech, "LOGIN")) {
        mechanism_ = AuthMechanism::login;
        if (has_response) return on_login_username(response);  // RFC 4954 initial response
        stage_ = Stage::login_username;
        return {AuthAction::challenge, auth_challenge_username};
    }
    return reject(auth_reply_unknown_mechanism);
}

AuthStep AuthExchange::resume(std::string_view line) noexcept {
    if (line.size() > auth_line_max_bytes) return reject(auth_reply_line_too_long);
    if (line == "*") return reject(auth_reply_cancelled);
    switch (stage_) {
        case Stage::plain_response:
            return on_plain(line);
        case Stage::login_username:
            return on_login_username(line);
        case Stage::login_password:
            return on_login_password(line);
        case Stage::idle:
            break;
    }
    return reject(auth_reply_syntax);  // the driver passed a line with no exchange running
}

bool AuthExchange::decode(std::string_view b64, std::string_view* reply) noexcept {
    scratch_len_ = 0;
    if (b64 == "=") return true;  // RFC 4954 §4: "=" is a present but empty response
    // Longer than any acceptable credentials: refuse before decoding, as a failed attempt.
    if (b64.size() > base64_encoded_bytes(sizeof scratch_)) {
        *reply = auth_reply_failed;
        return false;
    }
    if (!base64_decode(b64, scratch_, sizeof scratch_, &scratch_len_)) {
        *reply = auth_reply_bad_base64;
        return false;
    }
    return true;
}

AuthStep AuthExchange::on_plain(std::string_view b64) noexcept {
    std::string_view reply;
    if (!decode(b64, &reply)) return reject(reply);
    PlainCredentials c;
    if (parse_plain({scratch_, scratch_len_}, &c) != PlainError::ok) {
        return reject(auth_reply_failed);
    }
    // No proxy authorisation: a client may only act as itself (RFC 4616 §2 leaves the policy
    // to the server).
    if (!c.authzid.empty() && c.authzid != c.authcid) return reject(auth_reply_failed);
    std::memcpy(user_, c.authcid.data(), c.authcid.size());
    user_len_ = c.authcid.size();
    std::memcpy(pass_, c.password.data(), c.password.size());
    pass_len_ = c.password.size();
    explicit_bzero(scratch_, sizeof scratch_);
    scratch_len_ = 0;
    stage_ = Stage::idle;
    return {AuthAction::verify, {}};
}

AuthStep AuthExchange::on_login_username(std::string_view b64) noexcept {
    std::string_view reply;
    if (!decode(b64, &reply)) return reject(reply);
    const std::string_view user(scratch_, scratch_len_);
    if (user.empty() || user.size() > auth_field_max_bytes || user.find('\0') != user.npos) {
        return reject(auth_reply_failed);
    }
    std::memcpy(user_, user.data(), user.size());
    user_len_ = user.size();
    stage_ = Stage::login_password;
    return {AuthAction::challenge, auth_challenge_password};
}

AuthStep AuthExchange::on_login_password(std::string_view b64) noexcept {
    std::string_view reply;
    if (!decode(b64, &reply)) return reject(reply);
    const std::string_view pass(scratch_, scratch_len_);
    if (pass.empty() || pass.size() > auth_field_max_bytes || pass.find('\0') != pass.npos) {
        return reject(auth_reply_failed);
    }
    std::memcpy(pass_, pass.data(), pass.size());
    pass_len_ = pass.size();
    explicit_bzero(scratch_, sizeof scratch_);
    scratch_len_ = 0;
    stage_ = Stage::idle;
    return {AuthAction::verify, {}};
}

// --- crypt(3) ---------------------------------------------------------------------------------

CryptScratch::CryptScratch() : data_(std::make_unique<crypt_data>()) {}
CryptScratch::~CryptScratch() {
    explicit_bzero(data_.get(), sizeof(crypt_data));
}

bool verify_password(std::string_view hash, std::string_view password,
                     CryptScratch& scratch) noexcept {
    char setting[CRYPT_OUTPUT_SIZE];
    char phrase[auth_field_max_bytes + 1];
    if (hash.empty() || hash.size() >= sizeof setting) return false;
    if (password.size() >= sizeof phrase || password.find('\0') != password.npos) return false;
    std::memcpy(setting, hash.data(), hash.size());
    setting[hash.size()] = '\0';
    std::memcpy(phrase, password.data(), password.size());
    phrase[password.size()] = '\0';
    crypt_data* data = scratch.get();
    // crypt_rn returns NULL on failure (never the "*0" token crypt_r gives), so a broken
    // hash can never compare equal to itself.
    const char* out = crypt_rn(phrase, setting, data, sizeof(crypt_data));
    const bool ok = out != nullptr && equal_constant_time(out, hash);
    explicit_bzero(phrase, sizeof phrase);
    explicit_bzero(data->output, sizeof data->output);
    return ok;
}

// --- AuthUsers --------------------------------------------------------------------------------

bool AuthUsers::load_file(const std::string& path, std::string* error) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        *error = path + ": cannot open";
        return false;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return load_text(text.str(), path, error);
}

bool AuthUsers::load_text(std::string_view text, std::string_view name, std::string* error) {
    users_.clear();
    decoy_hash_.clear();
    size_t line_no = 0;
    while (!text.empty()) {
        ++line_no;
        const size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == text.npos ? text.size() : nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty() || line.front() == '#') continue;
        const auto fail = [&](const char* why) {
            *error = std::string(name) + ":" + std::to_string(line_no) + ": " + why;
            users_.clear();
            return false;
        };
        const size_t colon = line.find(':');
        if (colon == line.npos) return fail("expected user:hash");
        const std::string_view user = line.substr(0, colon);
        const std::string hash(line.substr(colon + 1));
        if (!valid_username(user)) return fail("invalid user name");
        if (hash.empty() || crypt_checksalt(hash.c_str()) != CRYPT_SALT_OK) {
            return fail("not a crypt(3) hash of a supported, non-legacy method");
        }
        if (!users_.emplace(std::string(user), hash).second) return fail("duplicate user");
        if (decoy_hash_.empty()) decoy_hash_ = hash;
    }
    return true;
}

bool AuthUsers::verify(std::string_view user, std::string_view password,
                       CryptScratch& scratch) const noexcept {
    const auto it = users_.find(user);
    if (it == users_.end()) {
        if (!decoy_hash_.empty()) (void)verify_password(decoy_hash_, password, scratch);
        return false;
    }
    return verify_password(it->second, password, scratch);
}

}  // namespace ringmail::tls
