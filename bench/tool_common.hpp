// tool_common.hpp — small pieces shared by `ringmail-bench source` and `sink`: clocks, a JSON
// object writer for the reports, and writing a file atomically (the sink's --stats-file).
//
// Who uses it: bench/tool_source.cpp, bench/tool_sink.cpp. Reports are built once per interval
// or at the end, never on the per-message path.
#pragma once

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace ringmail::bench {

[[nodiscard]] inline uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

[[nodiscard]] inline uint64_t now_ms() {
    return now_ns() / 1000000u;
}

// One JSON object, keys in insertion order. Nested objects with begin()/end().
class Json {
  public:
    Json& begin(std::string_view key = {}) {
        sep();
        if (!key.empty()) put_key(key);
        s_ += '{';
        first_ = true;
        return *this;
    }
    Json& end() {
        s_ += '}';
        first_ = false;
        return *this;
    }
    Json& num(std::string_view key, uint64_t v) {
        field(key);
        s_ += std::to_string(v);
        return *this;
    }
    Json& real(std::string_view key, double v) {
        field(key);
        char b[48];
        snprintf(b, sizeof b, "%.3f", v);
        s_ += b;
        return *this;
    }
    Json& boolean(std::string_view key, bool v) {
        field(key);
        s_ += v ? "true" : "false";
        return *this;
    }
    Json& str(std::string_view key, std::string_view v) {
        field(key);
        s_ += '"';
        for (char c : v) {
            if (c == '"' || c == '\\') s_ += '\\';
            if (static_cast<unsigned char>(c) < 0x20) c = ' ';
            s_ += c;
        }
        s_ += '"';
        return *this;
    }
    [[nodiscard]] const std::string& text() const { return s_; }

  private:
    void sep() {
        if (!first_ && !s_.empty()) s_ += ',';
        first_ = false;
    }
    void put_key(std::string_view key) {
        s_ += '"';
        s_ += key;
        s_ += "\":";
    }
    void field(std::string_view key) {
        sep();
        put_key(key);
    }
    std::string s_;
    bool first_ = true;
};

// Writes path.tmp then renames it over path, so a reader never sees a half-written file.
[[nodiscard]] inline bool write_file_atomic(const std::string& path, const std::string& text) {
    std::string tmp = path + ".tmp";
    FILE* f = fopen(tmp.c_str(), "w");
    if (!f) return false;
    bool ok = fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = (fclose(f) == 0) && ok;
    return ok && rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace ringmail::bench
