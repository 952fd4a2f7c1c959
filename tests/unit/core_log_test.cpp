// core_log_test.cpp — the JSON log lines: valid JSON whatever the bytes in a field, stable
// keys, cut fields dropped whole, and a reactor thread's lines written at flush().
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "core/base/log.hpp"

namespace ringmail::log {
namespace {

// Captures what this process writes to fd 2 while it lives.
class StderrCapture {
  public:
    StderrCapture() {
        EXPECT_EQ(pipe2(fds_, O_NONBLOCK), 0);
        saved_ = dup(2);
        dup2(fds_[1], 2);
    }
    ~StderrCapture() {
        dup2(saved_, 2);
        close(saved_);
        close(fds_[0]);
        close(fds_[1]);
    }
    std::string take() {
        std::string out;
        char buf[65536];
        ssize_t n;
        while ((n = read(fds_[0], buf, sizeof buf)) > 0)
            out.append(buf, static_cast<size_t>(n));
        return out;
    }

  private:
    int fds_[2] = {-1, -1};
    int saved_ = -1;
};

class JsonLog : public ::testing::Test {
  protected:
    void SetUp() override { set_format(Format::json); }
    void TearDown() override {
        set_format(Format::text);
        set_thread_buffered(false);
    }
};

// The part of a line after the time stamp, which changes.
std::string after_time(const std::string& line) {
    const auto at = line.find("\",\"level\"");
    return at == std::string::npos ? line : line.substr(at + 3);
}

TEST_F(JsonLog, EventHasStableKeysInOrder) {
    StderrCapture cap;
    Event(Level::info, "delivery")
        .str("queue_id", "00ab")
        .num("attempts", 3)
        .seconds("delay", 1.5)
        .emit();
    const std::string line = cap.take();
    ASSERT_EQ(line.rfind("{\"time\":\"", 0), 0u) << line;
    EXPECT_EQ(after_time(line),
              "level\":\"info\",\"event\":\"delivery\",\"queue_id\":\"00ab\",\"attempts\":3,"
              "\"delay\":1.500000}\n");
    // RFC 3339 with microseconds and Z: "2026-12-08T04:09:59.740833Z".
    EXPECT_EQ(line[9 + 10], 'T');
    EXPECT_EQ(line[9 + 26], 'Z');
}

TEST_F(JsonLog, StringsAreEscapedAndInvalidUtf8Replaced) {
    StderrCapture cap;
    const std::string nasty = std::string("a\"b\\c\r\n\x01") + "\xc3\xa9" + "\xff" + "\xe2\x82";
    Event(Level::info, "x").str("reply", nasty).emit();
    EXPECT_EQ(after_time(cap.take()),
              "level\":\"info\",\"event\":\"x\",\"reply\":\"a\\\"b\\\\c\\u000d\\u000a\\u0001"
              "\xc3\xa9\\ufffd\\ufffd\\ufffd\"}\n");
}

TEST_F(JsonLog, OverlongFieldIsDroppedWholeAndTheObjectStaysValid) {
    StderrCapture cap;
    Event(Level::info, "x").str("a", "1").str("big", std::string(20000, 'z')).emit();
    EXPECT_EQ(after_time(cap.take()), "level\":\"info\",\"event\":\"x\",\"a\":\"1\"}\n");
}

TEST_F(JsonLog, PrintfLinesBecomeLogEvents) {
    StderrCapture cap;
    write(Level::warn, "disk %s at %d%%", "full", 99);
    EXPECT_EQ(after_time(cap.take()),
              "level\":\"warn\",\"event\":\"log\",\"message\":\"disk full at 99%\"}\n");
}

TEST_F(JsonLog, BufferedThreadWritesAtFlushOnly) {
    StderrCapture cap;
    set_thread_buffered(true);
    Event(Level::info, "one").emit();
    Event(Level::info, "two").emit();
    EXPECT_EQ(cap.take(), "");
    flush();
    const std::string out = cap.take();
    EXPECT_NE(out.find("\"event\":\"one\""), std::string::npos);
    EXPECT_NE(out.find("\"event\":\"two\""), std::string::npos);
}

TEST_F(JsonLog, BelowTheLevelNothingIsWritten) {
    StderrCapture cap;
    set_level(Level::warn);
    Event(Level::info, "quiet").emit();
    set_level(Level::info);
    EXPECT_EQ(cap.take(), "");
}

}  // namespace
}  // namespace ringmail::log
