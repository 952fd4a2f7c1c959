// tls_session.cpp — wolfSSL contexts and sessions driven through memory buffers.
//
// See tls_session.hpp. wolfSSL is asked for nothing that blocks: the I/O callbacks below
// answer WOLFSSL_CBIO_ERR_WANT_READ when the input buffer is empty and WANT_WRITE when the
// output buffer is full, which surfaces as TlsStatus::want_more.
#include "tls/tls_session.hpp"

// options.h must come first: it carries the feature macros Debian's wolfSSL was built with.
// clang-format off
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
// clang-format on

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace ringmail::tls {
namespace {

[[noreturn]] void die(const char* what) noexcept {
    std::fprintf(stderr, "ringmail: tls invariant broken: %s\n", what);
    std::abort();
}

void require(bool ok, const char* what) noexcept {
    if (!ok) die(what);
}

// Forward secrecy and AEAD only (RFC 9325 §4.2). TLS 1.3 suites are all AEAD.
constexpr const char* server_ciphers =
    "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Outbound TLS is opportunistic (RFC 7435): an old MX that only has CBC suites is still better
// encrypted than in clear, so the client also offers ECDHE CBC and RSA-kex GCM, after the AEAD
// ones.
constexpr const char* client_ciphers =
    "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:"
    "AES128-GCM-SHA256:AES256-GCM-SHA384";

// Server-side session cache lifetime; tickets carry the same lifetime (the ticket hint).
// wolfSSL's default ticket key callback issues a ticket only if its key outlives the hint; its
// keys live one hour from first use (WOLFSSL_TICKET_KEY_LIFETIME) and rotate between two, so
// the hint must stay under half of that. With a one-hour hint, wolfSSL 5.5.4 fails every
// handshake (error 1, "ticket rejected") once the key is a second old.
constexpr unsigned session_timeout_s = 300;  // wolfSSL's own SESSION_TICKET_HINT_DEFAULT
constexpr unsigned wolfssl_ticket_key_lifetime_s = 3600;
static_assert(session_timeout_s < wolfssl_ticket_key_lifetime_s / 2);

std::string wolf_error_text(const char* what, int code) {
    char buf[80];
    wolfSSL_ERR_error_string_n(static_cast<unsigned long>(code < 0 ? -code : code), buf,
                               sizeof buf);
    return std::string(what) + ": " + buf;
}

// Why a PEM file did not load: the file itself (missing, unreadable) before wolfSSL's code,
// which for a plain failure is 0 and would read "ok".
std::string file_error_text(const char* what, const std::string& file, int code) {
    const std::string head = std::string(what) + " " + file;
    if (access(file.c_str(), R_OK) != 0) return head + ": " + strerror(errno);
    if (code == WOLFSSL_FAILURE) return head + ": not PEM that wolfSSL can read";
    return wolf_error_text(head.c_str(), code);
}

// wolfSSL_Init and wolfSSL_Cleanup count references, but the first init (seeding the global
// RNG, setting up the session cache) is not safe against a concurrent one: two reactors that
// built their client contexts at the same moment crashed in wolfSSL_RAND_seed. All our calls
// go through this lock.
std::mutex& library_mutex() {
    static std::mutex m;
    return m;
}

void library_acquire() {
    std::lock_guard<std::mutex> lock(library_mutex());
    wolfSSL_Init();
}

void library_release() {
    std::lock_guard<std::mutex> lock(library_mutex());
    wolfSSL_Cleanup();
}

[[nodiscard]] bool common_setup(WOLFSSL_CTX* ctx, const char* ciphers, std::string* error) {
    if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
        *error = "cannot set the minimum TLS version to 1.2";
        return false;
    }
    if (wolfSSL_CTX_set_cipher_list(ctx, ciphers) != WOLFSSL_SUCCESS) {
        *error = "cannot set the cipher list";
        return false;
    }
    // Key exchange groups, preferred first: X25519 is what most peers (OpenSSL) offer first and
    // the cheapest here; a client sends its key share for the first. P-256 and P-384 for the
    // rest.
    int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1};
    if (wolfSSL_CTX_set_groups(ctx, groups, 3) != WOLFSSL_SUCCESS) {
        *error = "cannot set the key exchange groups";
        return false;
    }
    return true;
}

}  // namespace

// --- TlsContext -------------------------------------------------------------------------------

TlsContext::TlsContext(WOLFSSL_CTX* ctx, TlsRole role) noexcept : ctx_(ctx), role_(role) {
    require(ctx_ != nullptr, "TlsContext without a WOLFSSL_CTX");
}

TlsContext::~TlsContext() {
    wolfSSL_CTX_free(ctx_);
    library_release();  // reference counted: pairs with the acquire of the factory
}

std::unique_ptr<TlsContext> TlsContext::adopt(WOLFSSL_CTX* ctx, TlsRole role) {
    // The caller built ctx, hence already ran wolfSSL_Init; take one more reference for ~.
    library_acquire();
    return std::unique_ptr<TlsContext>(new TlsContext(ctx, role));
}

std::unique_ptr<TlsContext> TlsContext::server(const TlsServerSettings& settings,
                                               std::string* error) {
    library_acquire();
    WOLFSSL_CTX* ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
    if (ctx == nullptr) {
        library_release();
        *error = "cannot create the server TLS context";
        return nullptr;
    }
    auto owned = std::unique_ptr<TlsContext>(new TlsContext(ctx, TlsRole::server));
    if (!common_setup(ctx, server_ciphers, error)) return nullptr;
    int rc = wolfSSL_CTX_use_certificate_chain_file(ctx, settings.cert_file.c_str());
    if (rc != WOLFSSL_SUCCESS) {
        *error = file_error_text("cannot load the certificate", settings.cert_file, rc);
        return nullptr;
    }
    rc = wolfSSL_CTX_use_PrivateKey_file(ctx, settings.key_file.c_str(), WOLFSSL_FILETYPE_PEM);
    if (rc != WOLFSSL_SUCCESS) {
        *error = file_error_text("cannot load the private key", settings.key_file, rc);
        return nullptr;
    }
    if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
        *error = "the private key does not match the certificate";
        return nullptr;
    }
    // SMTP servers do not ask clients for certificates.
    wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, nullptr);
    // Resumption: the (process-wide, locked) session-ID cache for TLS 1.2 and stateless
    // tickets (wolfSSL's default ticket key callback) for TLS 1.2 and 1.3.
    wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_SERVER);
    wolfSSL_CTX_set_timeout(ctx, session_timeout_s);
    return owned;
}

std::unique_ptr<TlsContext> TlsContext::client(const TlsClientSettings& settings,
                                               std::string* error) {
    library_acquire();
    WOLFSSL_CTX* ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
    if (ctx == nullptr) {
        library_release();
        *error = "cannot create the client TLS context";
        return nullptr;
    }
    auto owned = std::unique_ptr<TlsContext>(new TlsContext(ctx, TlsRole::client));
    if (!common_setup(ctx, client_ciphers, error)) return nullptr;
    if (!settings.verify_peer) {
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, nullptr);
        return owned;
    }
    const int rc = wolfSSL_CTX_load_verify_locations(ctx, settings.ca_file.c_str(), nullptr);
    if (rc != WOLFSSL_SUCCESS) {
        *error = wolf_error_text(("cannot load the CA file " + settings.ca_file).c_str(), rc);
        return nullptr;
    }
    wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, nullptr);
    return owned;
}

void release_thread_caches() noexcept {
#if defined(HAVE_ECC) && defined(FP_ECC)
    wc_ecc_fp_free();
#endif
}

// --- TlsResumption ----------------------------------------------------------------------------

TlsResumption::~TlsResumption() {
    if (session_ != nullptr) wolfSSL_SESSION_free(session_);
}

TlsResumption& TlsResumption::operator=(TlsResumption&& o) noexcept {
    if (this != &o) {
        if (session_ != nullptr) wolfSSL_SESSION_free(session_);
        session_ = o.session_;
        o.session_ = nullptr;
    }
    return *this;
}

// --- TlsSession -------------------------------------------------------------------------------

TlsSession::TlsSession(const TlsContext& ctx, std::string_view server_name,
                       const TlsResumption* resume) noexcept {
    ssl_ = wolfSSL_new(ctx.native());
    if (ssl_ == nullptr) return;
    wolfSSL_SSLSetIORecv(ssl_, &TlsSession::on_recv);
    wolfSSL_SSLSetIOSend(ssl_, &TlsSession::on_send);
    wolfSSL_SetIOReadCtx(ssl_, this);
    wolfSSL_SetIOWriteCtx(ssl_, this);
    if (ctx.role() != TlsRole::client) return;
    wolfSSL_UseSessionTicket(ssl_);
    if (!server_name.empty() && server_name.size() < 256) {
        char name[256];
        std::memcpy(name, server_name.data(), server_name.size());
        name[server_name.size()] = '\0';
        if (wolfSSL_UseSNI(ssl_, WOLFSSL_SNI_HOST_NAME, name,
                           static_cast<unsigned short>(server_name.size())) != WOLFSSL_SUCCESS ||
            wolfSSL_check_domain_name(ssl_, name) != WOLFSSL_SUCCESS) {
            failed_ = true;
            std::snprintf(error_, sizeof error_, "cannot set the server name");
        }
    }
    // A stale or foreign session is not an error: the handshake simply runs in full.
    if (resume != nullptr && !resume->empty()) (void)wolfSSL_set_session(ssl_, resume->native());
}

TlsSession::~TlsSession() {
    if (ssl_ != nullptr) wolfSSL_free(ssl_);
}

int TlsSession::on_recv(WOLFSSL*, char* buf, int sz, void* ctx) noexcept {
    auto* self = static_cast<TlsSession*>(ctx);
    const size_t avail = self->in_end_ - self->in_begin_;
    if (avail == 0) return WOLFSSL_CBIO_ERR_WANT_READ;
    const size_t n = std::min(avail, static_cast<size_t>(sz));
    std::memcpy(buf, self->in_ + self->in_begin_, n);
    self->in_begin_ += n;
    if (self->in_begin_ == self->in_end_) self->in_begin_ = self->in_end_ = 0;
    return static_cast<int>(n);
}

int TlsSession::on_send(WOLFSSL*, char* buf, int sz, void* ctx) noexcept {
    auto* self = static_cast<TlsSession*>(ctx);
    if (sizeof(self->out_) - self->out_end_ < static_cast<size_t>(sz) && self->out_begin_ != 0) {
        const size_t pending = self->out_end_ - self->out_begin_;
        std::memmove(self->out_, self->out_ + self->out_begin_, pending);
        self->out_begin_ = 0;
        self->out_end_ = pending;
    }
    const size_t room = sizeof(self->out_) - self->out_end_;
    if (room == 0) return WOLFSSL_CBIO_ERR_WANT_WRITE;
    const size_t n = std::min(room, static_cast<size_t>(sz));
    std::memcpy(self->out_ + self->out_end_, buf, n);
    self->out_end_ += n;
    return static_cast<int>(n);
}

size_t TlsSession::input_room() const noexcept {
    return sizeof(in_) - (in_end_ - in_begin_);
}

size_t TlsSession::feed_ciphertext(std::string_view in) noexcept {
    if (in_begin_ != 0) {
        const size_t pending = in_end_ - in_begin_;
        std::memmove(in_, in_ + in_begin_, pending);
        in_begin_ = 0;
        in_end_ = pending;
    }
    const size_t n = std::min(in.size(), sizeof(in_) - in_end_);
    std::memcpy(in_ + in_end_, in.data(), n);
    in_end_ += n;
    return n;
}

void TlsSession::set_error(int code) noexcept {
    failed_ = true;
    error_code_ = code;
    wolfSSL_ERR_error_string_n(static_cast<unsigned long>(code < 0 ? -code : code), error_,
                               sizeof error_);
}

TlsStatus TlsSession::classify(int ret) noexcept {
    const int err = wolfSSL_get_error(ssl_, ret);
    if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE) {
        return TlsStatus::want_more;
    }
    if (err == WOLFSSL_ERROR_ZERO_RETURN) return TlsStatus::closed;
    set_error(err);
    return TlsStatus::failed;
}

TlsStatus TlsSession::handshake() noexcept {
    if (ssl_ == nullptr || failed_) return TlsStatus::failed;
    if (handshake_done_) return TlsStatus::done;
    const int ret = wolfSSL_negotiate(ssl_);
    if (ret != WOLFSSL_SUCCESS) return classify(ret);
    handshake_done_ = true;
    return TlsStatus::done;
}

TlsIo TlsSession::read_plaintext(char* buf, size_t n) noexcept {
    if (ssl_ == nullptr || failed_) return {0, TlsStatus::failed};
    if (!handshake_done_) {
        const TlsStatus s = handshake();
        if (s != TlsStatus::done) return {0, s};
    }
    const int ret = wolfSSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(n, INT_MAX)));
    if (ret > 0) return {static_cast<size_t>(ret), TlsStatus::done};
    return {0, classify(ret)};
}

// The largest prefix of `want` bytes whose record fits `room`; 0 if none does.
size_t TlsSession::chunk_fitting(size_t want, size_t room) noexcept {
    const int max_frag = wolfSSL_GetMaxOutputSize(ssl_);
    require(max_frag > 0, "wolfSSL_GetMaxOutputSize after the handshake");
    const int overhead = wolfSSL_GetOutputSize(ssl_, max_frag) - max_frag;
    require(overhead >= 0, "negative TLS record overhead");
    if (room <= static_cast<size_t>(overhead)) return 0;
    size_t chunk = std::min({want, static_cast<size_t>(max_frag), room - overhead});
    // CBC padding can make a short record's overhead exceed the full record's by a block.
    while (chunk > 0 && static_cast<size_t>(wolfSSL_GetOutputSize(ssl_, chunk)) > room)
        --chunk;
    return chunk;
}

TlsIo TlsSession::write_plaintext(std::string_view data) noexcept {
    if (ssl_ == nullptr || failed_) return {0, TlsStatus::failed};
    if (!handshake_done_) {
        const TlsStatus s = handshake();
        if (s != TlsStatus::done) return {0, s};
    }
    if (data.empty()) return {0, TlsStatus::done};
    if (out_begin_ != 0) {
        const size_t pending = out_end_ - out_begin_;
        std::memmove(out_, out_ + out_begin_, pending);
        out_begin_ = 0;
        out_end_ = pending;
    }
    // Encrypt only what fits the output buffer as whole records, so wolfSSL normally never
    // holds a half-sent record of ours. It still can when it first flushes bytes of its own
    // (say a KeyUpdate answer queued while the buffer was full): then the write reports
    // WANT_WRITE and, like OpenSSL, must be retried with the same bytes — the driver retries
    // from the same offset, and pending_write_ makes us pass the same length.
    size_t chunk = pending_write_;
    if (chunk == 0) chunk = chunk_fitting(data.size(), sizeof(out_) - out_end_);
    if (chunk == 0) return {0, TlsStatus::want_more};
    require(data.size() >= chunk, "write_plaintext retried with fewer bytes than before");
    const int ret = wolfSSL_write(ssl_, data.data(), static_cast<int>(chunk));
    if (ret > 0) {
        pending_write_ = 0;
        return {static_cast<size_t>(ret), TlsStatus::done};
    }
    const TlsStatus s = classify(ret);
    if (s == TlsStatus::want_more) pending_write_ = chunk;
    return {0, s};
}

TlsStatus TlsSession::close_notify() noexcept {
    if (ssl_ == nullptr || failed_) return TlsStatus::failed;
    if (!handshake_done_) return TlsStatus::done;  // nothing to protect; just close
    const int ret = wolfSSL_shutdown(ssl_);
    // WOLFSSL_SHUTDOWN_NOT_DONE: ours is queued, the peer's has not arrived — we do not wait.
    if (ret == WOLFSSL_SUCCESS || ret == WOLFSSL_SHUTDOWN_NOT_DONE) return TlsStatus::done;
    return classify(ret);
}

std::string_view TlsSession::ciphertext_output() const noexcept {
    return {out_ + out_begin_, out_end_ - out_begin_};
}

void TlsSession::ciphertext_sent(size_t n) noexcept {
    require(n <= out_end_ - out_begin_, "ciphertext_sent beyond the output");
    out_begin_ += n;
    if (out_begin_ == out_end_) out_begin_ = out_end_ = 0;
}

std::string_view TlsSession::version() const noexcept {
    if (ssl_ == nullptr) return {};
    const char* v = wolfSSL_get_version(ssl_);
    return v != nullptr ? std::string_view(v) : std::string_view();
}

std::string_view TlsSession::cipher() const noexcept {
    if (ssl_ == nullptr) return {};
    // IANA names (RFC 8446 §B.4, the TLS registry): the same string whatever library the
    // peer or a log reader knows, unlike wolfSSL's own "TLS13-AES128-GCM-SHA256".
    const int suite = wolfSSL_get_current_cipher_suite(ssl_);
    if (suite < 0) return {};
    const char* c = wolfSSL_get_cipher_name_iana_from_suite(static_cast<unsigned char>(suite >> 8),
                                                            static_cast<unsigned char>(suite));
    return c != nullptr ? std::string_view(c) : std::string_view();
}

std::string_view TlsSession::group() const noexcept {
    if (ssl_ == nullptr) return {};
    const char* g = wolfSSL_get_curve_name(ssl_);
    return g != nullptr ? std::string_view(g) : std::string_view();
}

int TlsSession::cipher_bits() const noexcept {
    if (ssl_ == nullptr) return 0;
    return wolfSSL_CIPHER_get_bits(wolfSSL_get_current_cipher(ssl_), nullptr);
}

bool TlsSession::resumed() const noexcept {
    return ssl_ != nullptr && wolfSSL_session_reused(ssl_) == 1;
}

TlsResumption TlsSession::resumption() const noexcept {
    if (ssl_ == nullptr || !handshake_done_) return TlsResumption();
    return TlsResumption(wolfSSL_get1_session(ssl_));
}

}  // namespace ringmail::tls
