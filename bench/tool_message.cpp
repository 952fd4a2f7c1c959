// tool_message.cpp — see tool_message.hpp.
#include "bench/tool_message.hpp"

#include <charconv>
#include <cstdio>
#include <cstring>

#include "spool/record.hpp"  // crc32c

namespace ringmail::bench {
namespace {

constexpr size_t kLineChars = 78;  // + CRLF = 80 octets a filler line
constexpr size_t kLineBytes = kLineChars + 2;
constexpr size_t kOffsets = 64;  // bodies start at one of these filler lines, by seq

// The sum starts from the seq, so a damaged seq is caught like damaged text.
uint32_t seq_crc(uint64_t seq) {
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = static_cast<unsigned char>(seq >> (8 * i));
    return spool::crc32c(0, le, sizeof le);
}

}  // namespace

bool parse_size(std::string_view text, uint64_t* out) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || n == 0) return false;
    std::string_view unit(p, static_cast<size_t>(text.data() + text.size() - p));
    uint64_t mul = 1;
    if (unit == "k" || unit == "K") {
        mul = 1024;
    } else if (unit == "m" || unit == "M") {
        mul = 1024 * 1024;
    } else if (!unit.empty()) {
        return false;
    }
    *out = n * mul;
    return true;
}

bool SizeDist::parse(std::string_view text, std::string* error) {
    entries_.clear();
    total_ = 0;
    while (!text.empty()) {
        size_t comma = text.find(',');
        std::string_view item = text.substr(0, comma);
        text.remove_prefix(comma == std::string_view::npos ? text.size() : comma + 1);
        size_t colon = item.find(':');
        uint64_t bytes = 0, weight = 0;
        std::string_view w = colon == std::string_view::npos ? "" : item.substr(colon + 1);
        auto [p, ec] = std::from_chars(w.data(), w.data() + w.size(), weight);
        if (colon == std::string_view::npos || !parse_size(item.substr(0, colon), &bytes) ||
            ec != std::errc() || p != w.data() + w.size() || weight == 0) {
            *error = "bad --size-dist item '" + std::string(item) + "' (want SIZE:WEIGHT)";
            return false;
        }
        entries_.push_back({bytes, weight});
        total_ += weight;
    }
    if (entries_.empty()) {
        *error = "empty --size-dist";
        return false;
    }
    return true;
}

uint64_t SizeDist::pick(uint64_t seq) const {
    uint64_t r = splitmix64(seq ^ 0x5eed) % total_;
    for (const Entry& e : entries_) {
        if (r < e.weight) return e.bytes;
        r -= e.weight;
    }
    return entries_.back().bytes;
}

uint64_t SizeDist::max() const {
    uint64_t m = 0;
    for (const Entry& e : entries_)
        m = std::max(m, e.bytes);
    return m;
}

MessageFactory::MessageFactory(uint64_t max_bytes) {
    static const char kAlnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    size_t lines = max_bytes / kLineBytes + kOffsets + 2;
    filler_.resize(lines * kLineBytes);
    uint64_t x = 0x726d62656e6368ull;
    for (size_t l = 0; l < lines; l++) {
        char* p = filler_.data() + l * kLineBytes;
        for (size_t i = 0; i < kLineChars; i++) {
            x = splitmix64(x);
            p[i] = kAlnum[x % 62];
        }
        p[kLineChars] = '\r';
        p[kLineChars + 1] = '\n';
    }
}

size_t MessageFactory::append(std::string& out, uint64_t seq, uint64_t size_bytes,
                              std::string_view from, std::string_view to) const {
    const size_t start = out.size();
    char head[96];
    // The sum is written once the rest is known; the seq fixes the header's length.
    int hlen = snprintf(head, sizeof head, "%.*s seq=%llu sum=00000000\r\n",
                        static_cast<int>(kBenchHeader.size()), kBenchHeader.data(),
                        static_cast<unsigned long long>(seq));
    out.append(head, static_cast<size_t>(hlen));
    const size_t rest = out.size();
    out.append("From: <").append(from).append(">\r\nTo: <").append(to).append(">\r\n");
    char subj[64];
    int slen = snprintf(subj, sizeof subj, "Subject: ringmail-bench %llu\r\n\r\n",
                        static_cast<unsigned long long>(seq));
    out.append(subj, static_cast<size_t>(slen));

    size_t used = out.size() - start;
    size_t body = size_bytes > used + 2 ? size_bytes - used - 2 : kLineChars;
    size_t off = (seq % kOffsets) * kLineBytes;
    if (off + body > filler_.size()) body = filler_.size() - off;
    // Never cut between the CR and LF of a filler line: that would leave a bare CR.
    bool cut_cr = body > 0 && filler_[off + body - 1] == '\r';
    out.append(filler_, off, cut_cr ? body - 1 : body);
    if (cut_cr) out.push_back('Z');
    out.append("\r\n");

    uint32_t sum = spool::crc32c(seq_crc(seq), out.data() + rest, out.size() - rest);
    snprintf(head, sizeof head, "%08x", sum);
    memcpy(out.data() + rest - 10, head, 8);
    return out.size() - start;
}

void BodyVerifier::begin() {
    state_ = State::headers;
    overflow_ = header_bad_ = false;
    crc_ = want_ = 0;
    seq_ = 0;
    line_len_ = 0;
}

void BodyVerifier::feed(std::string_view content) {
    if (state_ == State::summing) {
        crc_ = spool::crc32c(crc_, content.data(), content.size());
        return;
    }
    for (size_t i = 0; i < content.size() && state_ == State::headers; i++) {
        char c = content[i];
        if (line_len_ < sizeof line_)
            line_[line_len_++] = c;
        else
            overflow_ = true;
        if (c != '\n') continue;
        end_of_line();
        if (state_ == State::summing)
            crc_ = spool::crc32c(crc_, content.data() + i + 1, content.size() - i - 1);
    }
}

void BodyVerifier::end_of_line() {
    std::string_view line(line_, line_len_);
    bool whole = !overflow_;
    line_len_ = 0;
    overflow_ = false;
    if (whole && line == "\r\n") {  // end of the header section without our header
        state_ = State::no_header;
        return;
    }
    if (!whole || line.substr(0, kBenchHeader.size()) != kBenchHeader) return;
    // "X-Ringmail-Bench: seq=<n> sum=<8 hex>\r\n"
    state_ = State::summing;
    std::string_view v = line.substr(kBenchHeader.size());
    const char* e = v.data() + v.size();
    unsigned long long seq = 0;
    unsigned sum = 0;
    const char* p = v.data();
    bool ok = v.substr(0, 5) == " seq=";
    if (ok) {
        auto r = std::from_chars(p + 5, e, seq);
        ok = r.ec == std::errc() && e - r.ptr == 15 && std::string_view(r.ptr, 5) == " sum=";
        if (ok) {
            auto s = std::from_chars(r.ptr + 5, e, sum, 16);
            ok = s.ec == std::errc() && s.ptr == r.ptr + 13 && std::string_view(s.ptr, 2) == "\r\n";
        }
    }
    header_bad_ = !ok;
    seq_ = seq;
    want_ = sum;
    crc_ = seq_crc(seq);
}

BodyVerifier::Result BodyVerifier::finish() {
    if (state_ != State::summing) return Result::missing;
    return !header_bad_ && crc_ == want_ ? Result::ok : Result::corrupt;
}

bool ReplyReader::parse(std::string_view line, Line* out) {
    if (line.size() < 2 || line[line.size() - 2] != '\r') return false;
    line.remove_suffix(2);
    if (line.size() < 3) return false;
    int code = 0;
    for (int i = 0; i < 3; i++) {
        char c = line[static_cast<size_t>(i)];
        if (c < '0' || c > '9') return false;
        code = code * 10 + (c - '0');
    }
    if (code < 200 || code > 599) return false;
    if (line.size() > 3 && line[3] != '-' && line[3] != ' ') return false;
    out->code = code;
    out->last = line.size() == 3 || line[3] == ' ';
    out->text = line.size() > 4 ? line.substr(4) : std::string_view{};
    return true;
}

}  // namespace ringmail::bench
