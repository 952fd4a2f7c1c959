// tls_session.hpp — TLS on wolfSSL without sockets: ciphertext in, plaintext out, and back.
//
// A TlsContext is built once per process and role at start (server: --tls-cert/--tls-key;
// client: opportunistic, optionally verifying). A TlsSession is one connection's TLS state. The
// socket driver (net/socket/socket_stream.cpp) owns the socket: it feeds received ciphertext
// with feed_ciphertext(), sends what ciphertext_output() shows and reports it with
// ciphertext_sent(). wolfSSL sees only two memory buffers through custom I/O callbacks that
// answer WANT_READ/WANT_WRITE instead of blocking, so one thread can run any number of
// handshakes interleaved.
//
// Guarantees:
//   - TLS 1.2 and 1.3 only; ECDHE with AEAD ciphers on the server; no compression (not built
//     into Debian's wolfSSL), no renegotiation (only the RFC 5746 signalling extension).
//   - The session's own buffers are fixed at construction; wolfSSL's internal record buffers
//     are bounded by the maximum record size (it refuses oversized records), so a peer cannot
//     make a session grow.
//   - Errors are values (TlsStatus::failed plus error()), never exceptions. Destroying a session
//     at any point — mid-handshake included — frees everything it allocated.
//   - Every TlsSession call must happen on one thread at a time (the owning reactor). A context
//     may be shared by sessions on all threads (wolfSSL locks its session cache).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

struct WOLFSSL_CTX;
struct WOLFSSL;
struct WOLFSSL_SESSION;

namespace ringmail::tls {

// Ciphertext waiting to be handed to wolfSSL. One recv buffer (limits::recv_buffer_bytes_default)
// fits whole; wolfSSL keeps partial records in its own bounded buffer.
inline constexpr size_t tls_input_buffer_bytes = 16384;
// Ciphertext waiting to be sent: one full record (2^14 plaintext + AEAD/CBC overhead, RFC 8446
// §5.2 allows 256 bytes of expansion) plus room for a handshake flight.
inline constexpr size_t tls_output_buffer_bytes = 16384 + 2048;

enum class TlsRole : uint8_t { server, client };

enum class TlsStatus : uint8_t {
    done,       // handshake complete / bytes moved
    want_more,  // needs more ciphertext in, or output drained; retry after feed / sent
    closed,     // the peer sent close_notify
    failed,     // fatal: see error(); the connection must be closed (after sending any output)
};

struct TlsServerSettings {
    std::string cert_file;  // PEM chain, leaf first
    std::string key_file;   // PEM private key
};

struct TlsClientSettings {
    // Opportunistic by default (Postfix smtp_tls_security_level=may): encrypt, verify nothing.
    bool verify_peer = false;
    std::string ca_file;  // PEM bundle; used when verify_peer
};

// One per process and role. Owns the WOLFSSL_CTX; keeps wolfSSL initialised while alive.
class TlsContext {
  public:
    // Null on failure with *error set (startup only, so the message may allocate).
    [[nodiscard]] static std::unique_ptr<TlsContext> server(const TlsServerSettings& settings,
                                                            std::string* error);
    [[nodiscard]] static std::unique_ptr<TlsContext> client(const TlsClientSettings& settings,
                                                            std::string* error);
    // Adopts a context configured by the caller (tests: a client limited to TLS 1.1). The
    // ringmail I/O callbacks are installed on it.
    [[nodiscard]] static std::unique_ptr<TlsContext> adopt(WOLFSSL_CTX* ctx, TlsRole role);

    ~TlsContext();
    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    [[nodiscard]] TlsRole role() const noexcept { return role_; }
    [[nodiscard]] WOLFSSL_CTX* native() const noexcept { return ctx_; }

  private:
    TlsContext(WOLFSSL_CTX* ctx, TlsRole role) noexcept;

    WOLFSSL_CTX* ctx_;
    TlsRole role_;
};

// Frees the calling thread's wolfSSL caches: Debian's wolfSSL keeps a fixed-point ECC table
// per thread (FP_ECC with thread-local storage) that only this frees. Every thread that ran
// handshakes calls it before it ends (the reactors, at the end of Engine::run).
void release_thread_caches() noexcept;

// A client-side session ticket / ID kept to resume the next connection to the same peer.
class TlsResumption {
  public:
    TlsResumption() = default;
    explicit TlsResumption(WOLFSSL_SESSION* s) noexcept : session_(s) {}
    ~TlsResumption();
    TlsResumption(TlsResumption&& o) noexcept : session_(o.session_) { o.session_ = nullptr; }
    TlsResumption& operator=(TlsResumption&& o) noexcept;
    TlsResumption(const TlsResumption&) = delete;
    TlsResumption& operator=(const TlsResumption&) = delete;

    [[nodiscard]] bool empty() const noexcept { return session_ == nullptr; }
    [[nodiscard]] WOLFSSL_SESSION* native() const noexcept { return session_; }

  private:
    WOLFSSL_SESSION* session_ = nullptr;
};

struct TlsIo {
    size_t bytes = 0;
    TlsStatus status = TlsStatus::want_more;
};

class TlsSession {
  public:
    // Check ok() after construction: creating the WOLFSSL object can fail (out of memory).
    // server_name (client role): SNI, and the name checked when the context verifies peers.
    explicit TlsSession(const TlsContext& ctx, std::string_view server_name = {},
                        const TlsResumption* resume = nullptr) noexcept;
    ~TlsSession();
    // Not movable: wolfSSL holds `this` as its I/O context.
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;

    [[nodiscard]] bool ok() const noexcept { return ssl_ != nullptr; }

    // Copies as much of `in` as fits into the input buffer; returns how much. The driver keeps
    // the rest and feeds it after the next handshake()/read_plaintext() made room.
    [[nodiscard]] size_t feed_ciphertext(std::string_view in) noexcept;
    [[nodiscard]] size_t input_room() const noexcept;

    [[nodiscard]] TlsStatus handshake() noexcept;
    [[nodiscard]] bool handshake_done() const noexcept { return handshake_done_; }

    // Plaintext received: bytes > 0 with done; 0 with want_more, closed or failed.
    [[nodiscard]] TlsIo read_plaintext(char* buf, size_t n) noexcept;
    // Encrypts a prefix of `data` that fits the output buffer; 0 + want_more when it is full.
    // After want_more, call again (once output was sent) starting with the same bytes.
    [[nodiscard]] TlsIo write_plaintext(std::string_view data) noexcept;
    // Queues a close_notify alert (RFC 8446 §6.1). Does not wait for the peer's.
    [[nodiscard]] TlsStatus close_notify() noexcept;

    [[nodiscard]] std::string_view ciphertext_output() const noexcept;
    void ciphertext_sent(size_t n) noexcept;

    // Valid after the handshake: "TLSv1.3", "TLS_AES_128_GCM_SHA256" (IANA name), 128.
    [[nodiscard]] std::string_view version() const noexcept;
    [[nodiscard]] std::string_view cipher() const noexcept;
    [[nodiscard]] int cipher_bits() const noexcept;
    // The key exchange group, e.g. "X25519", "SECP256R1"; empty if none (or not yet known).
    [[nodiscard]] std::string_view group() const noexcept;
    [[nodiscard]] bool resumed() const noexcept;
    // Client role: what to pass to the next session to the same peer (empty if none yet; with
    // TLS 1.3 the ticket arrives after the handshake, with the first data read).
    [[nodiscard]] TlsResumption resumption() const noexcept;

    // The reason of the last failure (wolfSSL's text), empty if none.
    [[nodiscard]] std::string_view error() const noexcept { return error_; }
    [[nodiscard]] int error_code() const noexcept { return error_code_; }
    [[nodiscard]] WOLFSSL* native() const noexcept { return ssl_; }

  private:
    static int on_recv(WOLFSSL* ssl, char* buf, int sz, void* ctx) noexcept;
    static int on_send(WOLFSSL* ssl, char* buf, int sz, void* ctx) noexcept;

    [[nodiscard]] TlsStatus classify(int ret) noexcept;
    [[nodiscard]] size_t chunk_fitting(size_t want, size_t room) noexcept;
    void set_error(int code) noexcept;

    WOLFSSL* ssl_ = nullptr;
    bool handshake_done_ = false;
    bool failed_ = false;
    int error_code_ = 0;
    size_t pending_write_ = 0;  // bytes of a write wolfSSL holds half-sent (retry needed)
    size_t in_begin_ = 0;
    size_t in_end_ = 0;
    size_t out_begin_ = 0;
    size_t out_end_ = 0;
    char error_[80] = {};
    char in_[tls_input_buffer_bytes];
    char out_[tls_output_buffer_bytes];
};

}  // namespace ringmail::tls
