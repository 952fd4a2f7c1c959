// status.cpp — see status.hpp.
#include "spool/status.hpp"

#include <algorithm>
#include <cstring>

namespace ringmail::spool {
namespace {

template <typename T>
char* put(char* p, T v) {
    std::memcpy(p, &v, sizeof v);  // little endian: the only byte order ringmail runs on
    return p + sizeof v;
}

template <typename T>
T get(const char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

char* put_text(char* p, std::string_view t) {
    t = t.substr(0, status_text_max_bytes);
    p = put<uint16_t>(p, static_cast<uint16_t>(t.size()));
    if (!t.empty()) std::memcpy(p, t.data(), t.size());  // an empty view may hold no pointer
    return p + t.size();
}

bool get_text(std::string_view& in, std::string_view* out) {
    if (in.size() < 2) return false;
    uint16_t n = get<uint16_t>(in.data());
    if (n > status_text_max_bytes || in.size() - 2 < n) return false;
    *out = in.substr(2, n);
    in.remove_prefix(2 + size_t{n});
    return true;
}

}  // namespace

size_t encode_status(const Status& s, uint64_t salt, std::span<char> out) {
    char payload[status_fixed_bytes + 2 * status_text_max_bytes];
    char* p = payload;
    p = put<uint64_t>(p, s.message_id);
    p = put<uint16_t>(p, s.rcpt);
    p = put<uint8_t>(p, static_cast<uint8_t>(s.state));
    p = put<uint8_t>(p, 0);
    p = put<uint16_t>(p, s.attempts);
    p = put<uint16_t>(p, 0);
    p = put<int64_t>(p, s.at_unix_us);
    p = put<int64_t>(p, s.next_attempt_unix_us);
    p = put_text(p, s.remote);
    p = put_text(p, s.reply);
    return encode_record(RecordType::status,
                         std::string_view(payload, static_cast<size_t>(p - payload)), salt, out);
}

std::optional<Status> decode_status(std::string_view in) {
    constexpr size_t fixed = status_fixed_bytes - 4;  // without the two text lengths
    if (in.size() < fixed) return std::nullopt;
    Status s;
    const char* p = in.data();
    s.message_id = get<uint64_t>(p);
    s.rcpt = get<uint16_t>(p + 8);
    uint8_t state = get<uint8_t>(p + 10);
    if (state < 1 || state > 4 || p[11] != 0 || get<uint16_t>(p + 14) != 0) return std::nullopt;
    s.state = static_cast<StatusState>(state);
    s.attempts = get<uint16_t>(p + 12);
    s.at_unix_us = get<int64_t>(p + 16);
    s.next_attempt_unix_us = get<int64_t>(p + 24);
    in.remove_prefix(fixed);
    if (!get_text(in, &s.remote) || !get_text(in, &s.reply) || !in.empty()) return std::nullopt;
    return s;
}

}  // namespace ringmail::spool
