// core_socket_stream_test.cpp — pins net/socket/socket_stream.hpp over socketpairs and a real
// ring: bytes arrive whole and in order through the provided buffers, a backlog the owner does
// not consume pauses reading without losing bytes, a send the kernel takes in parts is
// resubmitted until all of it left, a peer that vanishes during a send or while a recv is armed
// ends the stream once and releases it once, a held operation delays the release, and a TLS
// stream pair handshakes, carries data both ways and ends with close_notify.
#include "net/socket/socket_stream.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace ringmail {
namespace {

// One end of a socketpair driven by a SocketStream, recording what the stream told it.
struct Owner {
    SocketStream stream{StreamEvents<Owner>::table, this};
    std::string out;  // what to send; fixed while a send is in flight
    size_t out_off = 0;
    std::string in;       // what was consumed
    bool consume = true;  // take input in stream_ready
    bool close_on_end = true;
    bool finish_when_sent = false;  // finish() once `out` is all handed over
    std::vector<StreamEnd> ends;
    int released = 0;
    int ready_after_release = 0;
    int starved = 0;
    bool established = false;

    std::string_view stream_output() { return std::string_view(out).substr(out_off); }
    void stream_output_sent(size_t n) {
        ASSERT_LE(n, out.size() - out_off);
        out_off += n;
    }
    void take() {
        for (;;) {
            const std::string_view v = stream.input();
            if (v.empty()) break;
            in.append(v);
            stream.consume(v.size());
        }
    }
    void stream_ready() {
        if (released > 0) ready_after_release++;
        if (consume) take();
        if (finish_when_sent && out_off == out.size())
            stream.finish();
        else
            stream.flush();
    }
    void stream_ended(StreamEnd why) {
        ends.push_back(why);
        if (close_on_end) stream.close();
    }
    void stream_released() { released++; }
    void stream_starved() { starved++; }
    void stream_tls_established() { established = true; }
};

class SocketStreamTest : public ::testing::Test {
  protected:
    void SetUp() override {
        std::string error;
        ASSERT_TRUE(reactor_.init(256, 4096, 64, &error)) << error;
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_), 0);
    }
    void TearDown() override {
        for (int fd : fds_)
            if (fd >= 0) close(fd);
    }

    // Runs the ring until done() or the deadline; a short timeout keeps run_once from
    // waiting for ever when nothing else is in flight.
    bool run_until(const std::function<bool()>& done, int ms = 5000) {
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (!done()) {
            if (std::chrono::steady_clock::now() > end) return false;
            __kernel_timespec ts{0, 5'000'000};
            io_uring_sqe* s = reactor_.sqe();
            io_uring_prep_timeout(s, &ts, 0, 0);
            io_uring_sqe_set_data64(s, kTagIgnore);
            reactor_.run_once([](uint64_t, int) {});
        }
        return true;
    }

    // Reads from the plain peer end until n bytes or the deadline, running the ring meanwhile.
    std::string peer_read(size_t n, int ms = 5000) {
        std::string got;
        fcntl(fds_[1], F_SETFL, O_NONBLOCK);
        run_until(
            [&] {
                char b[65536];
                ssize_t r;
                while ((r = read(fds_[1], b, sizeof b)) > 0)
                    got.append(b, static_cast<size_t>(r));
                return got.size() >= n;
            },
            ms);
        return got;
    }

    Reactor reactor_;
    int fds_[2] = {-1, -1};
};

// A write that fails (EPIPE) rather than killing the test when the stream closed its end.
ssize_t send_nosig(int fd, const void* p, size_t n) {
    return send(fd, p, n, MSG_NOSIGNAL);
}

std::string pattern(size_t n) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i++)
        s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
    return s;
}

TEST_F(SocketStreamTest, ReceivedBytesArriveWholeAndInOrder) {
    Owner o;
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;  // the stream closes it
    o.stream.start_reading();
    const std::string data = pattern(200'000);  // many provided buffers of 4 KiB
    size_t off = 0;
    fcntl(fds_[1], F_SETFL, O_NONBLOCK);
    ASSERT_TRUE(run_until([&] {
        if (off < data.size()) {
            ssize_t w = send_nosig(fds_[1], data.data() + off, data.size() - off);
            if (w > 0) off += static_cast<size_t>(w);
        }
        return o.in.size() == data.size();
    }));
    EXPECT_EQ(o.in, data);
    EXPECT_TRUE(o.ends.empty());
    o.stream.close();
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
}

TEST_F(SocketStreamTest, AnUnconsumedBacklogPausesReadingAndLosesNothing) {
    Owner o;
    o.consume = false;
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    o.stream.start_reading();
    const std::string data = pattern(400'000);  // ~100 provided buffers' worth
    fcntl(fds_[1], F_SETFL, O_NONBLOCK);
    size_t off = 0;
    // The owner takes nothing while the peer keeps sending, one buffer's worth at a time: the
    // stream stops reading a little past the pause mark instead of filling the backlog to its
    // bound (which would end the stream as an overrun).
    run_until(
        [&] {
            ssize_t w =
                send_nosig(fds_[1], data.data() + off, std::min<size_t>(4096, data.size() - off));
            if (w > 0) off += static_cast<size_t>(w);
            return false;
        },
        500);
    EXPECT_GE(o.stream.backlog(), SocketStream::backlog_pause_buffers);
    EXPECT_LE(o.stream.backlog(), SocketStream::backlog_pause_buffers + 2);
    EXPECT_TRUE(o.ends.empty());
    // Now it reads: everything written arrives, in order.
    o.consume = true;
    o.take();
    o.stream.flush();
    ASSERT_TRUE(run_until([&] {
        if (off < data.size()) {
            ssize_t w = send_nosig(fds_[1], data.data() + off, data.size() - off);
            if (w > 0) off += static_cast<size_t>(w);
        }
        return o.in.size() == data.size();
    }));
    EXPECT_EQ(o.in, data);
    o.stream.close();
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
}

TEST_F(SocketStreamTest, PartialSendsAreResubmittedUntilAllLeft) {
    int small = 4096;
    ASSERT_EQ(setsockopt(fds_[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    Owner o;
    o.out = pattern(1 << 20);
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    o.stream.flush();
    const std::string got = peer_read(o.out.size());
    EXPECT_EQ(got.size(), o.out.size());
    EXPECT_TRUE(got == o.out);
    EXPECT_EQ(o.out_off, o.out.size());
    o.stream.close();
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
}

TEST_F(SocketStreamTest, PeerGoneDuringASendEndsOnceAndReleasesOnce) {
    int small = 4096;
    ASSERT_EQ(setsockopt(fds_[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    Owner o;
    o.out = pattern(4 << 20);  // far more than the socket buffers: a send stays in flight
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    o.stream.start_reading();
    o.stream.flush();
    run_until([] { return false; }, 50);
    ASSERT_TRUE(o.stream.sending());
    close(fds_[1]);
    fds_[1] = -1;
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
    ASSERT_GE(o.ends.size(), 1u);
    EXPECT_EQ(o.ends.size(), 1u);  // the owner closed at the first; nothing more reached it
    run_until([] { return false; }, 50);
    EXPECT_EQ(o.released, 1);
    EXPECT_EQ(o.ready_after_release, 0);
    EXPECT_LT(o.out_off, o.out.size());
}

TEST_F(SocketStreamTest, CloseWhileTheRecvIsArmedReleasesOnceAndClosesTheSocket) {
    Owner o;
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    o.stream.start_reading();
    run_until([] { return false; }, 20);
    o.stream.close();
    EXPECT_EQ(o.released, 0);  // never from within close(): the recv is still in the ring
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
    EXPECT_EQ(o.stream.state(), SocketStream::State::idle);
    // The socket is closed: the peer reads end of file.
    char b;
    EXPECT_EQ(read(fds_[1], &b, 1), 0);
    EXPECT_TRUE(o.ends.empty());
    EXPECT_EQ(o.ready_after_release, 0);
}

TEST_F(SocketStreamTest, PeerHalfCloseIsEndOfFile) {
    Owner o;
    o.close_on_end = false;
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    o.stream.start_reading();
    ASSERT_EQ(send_nosig(fds_[1], "bye", 3), 3);
    ASSERT_EQ(shutdown(fds_[1], SHUT_WR), 0);
    ASSERT_TRUE(run_until([&] { return !o.ends.empty(); }));
    EXPECT_EQ(o.in, "bye");
    EXPECT_EQ(o.ends[0], StreamEnd::eof);
    // Our side may still send after the peer's FIN.
    o.out = "last words";
    o.stream.finish();
    EXPECT_EQ(peer_read(10), "last words");
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
}

TEST_F(SocketStreamTest, AHeldOperationDelaysTheRelease) {
    Owner o;
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    o.stream.start_reading();
    o.stream.hold();  // as a commit in flight that refers to the owner
    o.stream.close();
    run_until([] { return false; }, 50);
    EXPECT_EQ(o.released, 0);
    o.stream.unhold();
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
}

TEST_F(SocketStreamTest, FinishSendsTheLastOutputThenCloses) {
    Owner o;
    o.out = "221 2.0.0 Bye\r\n";
    o.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    o.stream.finish();
    EXPECT_EQ(peer_read(o.out.size()), o.out);
    ASSERT_TRUE(run_until([&] { return o.released == 1; }));
    char b;
    EXPECT_EQ(read(fds_[1], &b, 1), 0);
}

class SocketStreamTlsTest : public SocketStreamTest {
  protected:
    static void SetUpTestSuite() {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "ringmail-stream-XXXXXX").string();
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
        const std::string cmd =
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
            "-nodes -days 2 -subj /CN=ringmail.test -keyout " +
            dir_ + "/key.pem -out " + dir_ + "/cert.pem 2>/dev/null";
        ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
        std::string error;
        server_ =
            tls::TlsContext::server({dir_ + "/cert.pem", dir_ + "/key.pem"}, &error).release();
        ASSERT_NE(server_, nullptr) << error;
        client_ = tls::TlsContext::client({}, &error).release();
        ASSERT_NE(client_, nullptr) << error;
    }
    static void TearDownTestSuite() {
        delete client_;
        delete server_;
        std::filesystem::remove_all(dir_);
    }
    static inline std::string dir_;
    static inline tls::TlsContext* server_ = nullptr;
    static inline tls::TlsContext* client_ = nullptr;
};

TEST_F(SocketStreamTlsTest, HandshakeDataBothWaysAndCloseNotify) {
    Owner server, client;
    server.close_on_end = client.close_on_end = false;
    server.stream.open(reactor_, fds_[0]);
    client.stream.open(reactor_, fds_[1]);
    fds_[0] = fds_[1] = -1;
    server.stream.start_reading();
    client.stream.start_reading();
    ASSERT_TRUE(server.stream.start_tls(*server_));
    ASSERT_TRUE(client.stream.start_tls(*client_, "ringmail.test"));
    client.stream.flush();  // the ClientHello
    ASSERT_TRUE(run_until([&] { return server.established && client.established; }));
    // More than one record each way, and more than the stream's plaintext buffer.
    client.out = pattern(100'000);
    server.out = pattern(50'000);
    client.stream.flush();
    server.stream.flush();
    ASSERT_TRUE(run_until([&] {
        return server.in.size() == client.out.size() && client.in.size() == server.out.size();
    }));
    EXPECT_TRUE(server.in == client.out);
    EXPECT_TRUE(client.in == server.out);
    // The client ends: its close_notify reaches the server as tls_closed.
    client.stream.finish();
    ASSERT_TRUE(run_until([&] { return !server.ends.empty(); }));
    EXPECT_EQ(server.ends[0], StreamEnd::tls_closed);
    server.stream.close();
    ASSERT_TRUE(run_until([&] { return server.released == 1 && client.released == 1; }));
    EXPECT_EQ(server.stream.tls(), nullptr);  // freed with the connection
}

TEST_F(SocketStreamTlsTest, ClearPrefixGoesBeforeTheHandshakeAndEarlyClearBytesAreDropped) {
    Owner server;
    server.close_on_end = false;
    server.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    server.stream.start_reading();
    // Pipelined after STARTTLS, in clear: must never be taken as TLS or as plaintext.
    ASSERT_EQ(send_nosig(fds_[1], "STARTTLS\r\nMAIL FROM:<x@y>\r\n", 27), 27);
    server.consume = false;
    ASSERT_TRUE(run_until([&] { return server.stream.backlog() > 0; }));
    server.out = "220 2.0.0 Ready to start TLS\r\n";
    ASSERT_TRUE(server.stream.start_tls(*server_, {}, nullptr, server.out.size()));
    EXPECT_EQ(server.stream.backlog(), 0u);
    server.stream.flush();
    EXPECT_EQ(peer_read(server.out.size()), server.out);
    EXPECT_EQ(server.out_off, server.out.size());
    EXPECT_TRUE(server.ends.empty());
    server.stream.close();
    ASSERT_TRUE(run_until([&] { return server.released == 1; }));
}

TEST_F(SocketStreamTlsTest, GarbageInsteadOfAHandshakeFailsTheStream) {
    Owner server;
    server.close_on_end = false;
    server.stream.open(reactor_, fds_[0]);
    fds_[0] = -1;
    server.stream.start_reading();
    ASSERT_TRUE(server.stream.start_tls(*server_));
    ASSERT_EQ(send_nosig(fds_[1], "EHLO not-tls.example\r\n", 22), 22);
    ASSERT_TRUE(run_until([&] { return !server.ends.empty(); }));
    EXPECT_EQ(server.ends[0], StreamEnd::tls_failed);
    EXPECT_FALSE(server.established);
    server.stream.finish();  // the alert, then the close
    ASSERT_TRUE(run_until([&] { return server.released == 1; }));
}

}  // namespace
}  // namespace ringmail
