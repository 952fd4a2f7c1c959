// tool_message.hpp — what ringmail-bench puts on the wire and how it checks it on arrival.
//
// Who uses it: the load generator builds message text with MessageFactory and reads replies with
// ReplyReader; the sink checks each received body with BodyVerifier. Guarantees:
//  - every generated message starts with `X-Ringmail-Bench: seq=<n> sum=<crc32c hex>` whose sum
//    covers the seq (as 8 little-endian bytes) and then every byte after that header line up to
//    the end of the content (the CRLF before the terminating dot), so any change to those bytes —
//    by the relay, the network path or the sink itself — is detected; a relay may add headers
//    above it (Received) without harm;
//  - generated text never needs dot-stuffing (no line starts with '.'), uses CRLF line endings
//    only, has lines well under 998 octets, and is exactly the requested size when that size
//    exceeds the headers;
//  - nothing here allocates per message once the caller's buffer has grown to the largest size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringmail::bench {

[[nodiscard]] inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

[[nodiscard]] inline uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
    for (unsigned char c : s)
        h = (h ^ c) * 0x100000001b3ull;
    return h;
}

// A uniform number in [0, 1) from a hash: the scripted decisions of the sink.
[[nodiscard]] inline double unit_interval(uint64_t h) {
    return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

// "1024", "1k", "10K", "1m" → bytes. False on anything else (or zero).
[[nodiscard]] bool parse_size(std::string_view text, uint64_t* out);

// A message size distribution: "1k:70,10k:25,100k:5" (weights need not sum to 100).
class SizeDist {
  public:
    [[nodiscard]] bool parse(std::string_view text, std::string* error);
    void set_fixed(uint64_t bytes) { entries_ = {{bytes, 1}}, total_ = 1; }
    // Deterministic in seq, so a rerun sends the same sizes.
    [[nodiscard]] uint64_t pick(uint64_t seq) const;
    [[nodiscard]] uint64_t max() const;

  private:
    struct Entry {
        uint64_t bytes;
        uint64_t weight;
    };
    std::vector<Entry> entries_;
    uint64_t total_ = 0;
};

inline constexpr std::string_view kBenchHeader = "X-Ringmail-Bench:";

class MessageFactory {
  public:
    // max_bytes: the largest message that will be asked for.
    explicit MessageFactory(uint64_t max_bytes);

    // Appends the content of message `seq` (CRLF line endings, ends with CRLF, no terminator)
    // to out. from/to go into the From:/To: headers. Returns the bytes appended.
    size_t append(std::string& out, uint64_t seq, uint64_t size_bytes, std::string_view from,
                  std::string_view to) const;

  private:
    std::string filler_;  // lines of 78 alphanumerics + CRLF, shared by every message
};

// Checks one message's content as it streams in (after dot-unstuffing).
class BodyVerifier {
  public:
    enum class Result : uint8_t { ok, corrupt, missing };

    void begin();
    void feed(std::string_view content);
    [[nodiscard]] Result finish();
    [[nodiscard]] uint64_t seq() const { return seq_; }  // valid unless finish() says missing

  private:
    enum class State : uint8_t { headers, summing, no_header };
    void end_of_line();

    State state_ = State::headers;
    bool overflow_ = false;
    bool header_bad_ = false;
    uint32_t crc_ = 0;
    uint32_t want_ = 0;
    uint64_t seq_ = 0;
    size_t line_len_ = 0;
    char line_[128];
};

// Splits a stream of server replies into lines (RFC 5321 §4.2: "NNN-text" continues, "NNN text"
// or "NNN" ends a reply). A line longer than 1024 octets or without a 3-digit code is malformed.
class ReplyReader {
  public:
    struct Line {
        int code;
        bool last;  // the final line of its reply
        std::string_view text;
    };
    // Calls on_line for each complete line; false when the stream is malformed.
    template <typename F>
    [[nodiscard]] bool feed(std::string_view in, F&& on_line);
    void reset() { len_ = 0; }

  private:
    [[nodiscard]] static bool parse(std::string_view line, Line* out);
    static constexpr size_t kLineMax = 1024;
    size_t len_ = 0;
    char buf_[kLineMax];
};

template <typename F>
bool ReplyReader::feed(std::string_view in, F&& on_line) {
    while (!in.empty()) {
        size_t lf = in.find('\n');
        std::string_view piece = in.substr(0, lf == std::string_view::npos ? in.size() : lf + 1);
        in.remove_prefix(piece.size());
        std::string_view line;
        if (len_ == 0 && lf != std::string_view::npos) {
            line = piece;  // whole line in this buffer: parse in place
        } else {
            if (len_ + piece.size() > kLineMax) return false;
            for (char c : piece)
                buf_[len_++] = c;
            if (lf == std::string_view::npos) return true;
            line = std::string_view(buf_, len_);
        }
        Line l;
        if (!parse(line, &l)) return false;
        len_ = 0;
        on_line(l);
    }
    return true;
}

}  // namespace ringmail::bench
