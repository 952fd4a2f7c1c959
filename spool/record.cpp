// record.cpp — the spool record codec, the staging chunk pool and the message builder.
//
// The builder is called by the SMTP session driver (begin at the first RCPT's DATA, append for
// every body chunk, seal when the batch is written); the decoders by recovery and the spool
// reader tool. Guarantees: what seal() produced decodes to the same fields; every decoder checks
// every length against the bytes it was given before reading, so arbitrary input (a corrupt or
// hostile segment) can never make it read out of bounds.
#include "spool/record.hpp"

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace ringmail::spool {

// The on-disk format is little endian; we store integers with memcpy.
static_assert(std::endian::native == std::endian::little, "spool format assumes little endian");

namespace {

constexpr size_t chunk_alignment = 4096;  // lets a later O_DIRECT writer use chunks as they are
constexpr size_t str16_max_bytes = std::numeric_limits<uint16_t>::max();
constexpr size_t message_trailer_bytes = 8 + 4;  // u64 body_bytes | u32 "RMND"
constexpr size_t segment_header_payload_bytes = 4 + 4 + 8 + 8 + 8;
constexpr uint32_t segment_format_version = 1;

[[noreturn]] void invariant_failed(const char* what) {
    std::fprintf(stderr, "ringmail: spool invariant broken: %s\n", what);
    std::abort();
}

void check(bool ok, const char* what) {
    if (!ok) invariant_failed(what);
}

template <typename T>
void store(char* out, T v) {
    std::memcpy(out, &v, sizeof v);
}

template <typename T>
T load(const char* in) {
    T v;
    std::memcpy(&v, in, sizeof v);
    return v;
}

// Header bytes 0..11; the crc (bytes 12..15) is filled by the caller.
void fill_header(char* hdr, RecordType type, uint32_t payload_bytes) {
    store<uint32_t>(hdr, record_magic);
    hdr[4] = static_cast<char>(type);
    hdr[5] = 0;  // flags
    store<uint16_t>(hdr + 6, 0);
    store<uint32_t>(hdr + 8, payload_bytes);
}

// crc = CRC32C(payload || header[0..12) || salt LE), given the CRC of the payload alone.
uint32_t finish_crc(uint32_t payload_crc, const char* hdr, uint64_t salt) {
    char salt_le[8];
    store<uint64_t>(salt_le, salt);
    uint32_t c = crc32c(payload_crc, hdr, 12);
    return crc32c(c, salt_le, sizeof salt_le);
}

// A bounds-checked cursor over untrusted bytes: every read first checks what is left.
class Reader {
  public:
    explicit Reader(std::string_view bytes) : bytes_(bytes) {}
    [[nodiscard]] size_t remaining() const { return bytes_.size() - pos_; }
    [[nodiscard]] std::string_view rest() const { return bytes_.substr(pos_); }

    template <typename T>
    [[nodiscard]] bool read(T* v) {
        if (remaining() < sizeof(T)) return false;
        *v = load<T>(bytes_.data() + pos_);
        pos_ += sizeof(T);
        return true;
    }
    [[nodiscard]] bool str16(std::string_view* s) {
        uint16_t n = 0;
        if (!read(&n) || remaining() < n) return false;
        *s = bytes_.substr(pos_, n);
        pos_ += n;
        return true;
    }

  private:
    std::string_view bytes_;
    size_t pos_ = 0;
};

// Payload bytes taken by the envelope, or 0 when a field cannot be stored (over 65535 bytes).
uint64_t envelope_bytes(const EnvelopeFields& env) {
    const std::string_view fields[] = {env.helo, env.client_addr, env.protocol, env.mail_from,
                                       env.mail_params};
    uint64_t n = 8 + 8 + 4;  // id, arrival, rcpt_count
    for (std::string_view f : fields) {
        if (f.size() > str16_max_bytes) return 0;
        n += 2 + f.size();
    }
    if (env.rcpts.size() > std::numeric_limits<uint32_t>::max()) return 0;
    for (const RcptField& r : env.rcpts) {
        if (r.address.size() > str16_max_bytes || r.params.size() > str16_max_bytes) return 0;
        n += 2 + r.address.size() + 2 + r.params.size();
    }
    return n;
}

}  // namespace

// --- ChunkPool ---------------------------------------------------------------------------------

ChunkPool::ChunkPool(size_t chunk_bytes, uint64_t max_bytes)
    : chunk_bytes_(chunk_bytes), max_bytes_(max_bytes) {
    // A chunk must hold a whole record header (the builder writes it in place) and the free
    // list's next pointer.
    check(chunk_bytes >= record_header_bytes && chunk_bytes >= sizeof(char*),
          "chunk size too small");
}

ChunkPool::~ChunkPool() {
    // A chunk still out would be used by its builder after we free it.
    check(chunks_in_use_ == 0, "ChunkPool destroyed with chunks in use");
    for (char* c : owned_)
        std::free(c);
}

char* ChunkPool::get() {
    if (free_head_ != nullptr) {
        char* c = free_head_;
        free_head_ = load<char*>(c);
        ++chunks_in_use_;
        return c;
    }
    if ((owned_.size() + 1) * chunk_bytes_ > max_bytes_) return nullptr;
    const size_t alloc_bytes =
        (chunk_bytes_ + chunk_alignment - 1) / chunk_alignment * chunk_alignment;
    auto* c = static_cast<char*>(std::aligned_alloc(chunk_alignment, alloc_bytes));
    if (c == nullptr) return nullptr;
    owned_.push_back(c);
    ++chunks_in_use_;
    return c;
}

void ChunkPool::put(char* chunk) {
    check(chunk != nullptr && chunks_in_use_ > 0, "ChunkPool::put of a chunk not taken");
    store<char*>(chunk, free_head_);
    free_head_ = chunk;
    --chunks_in_use_;
}

uint64_t ChunkPool::bytes_in_use() const {
    return chunks_in_use_ * chunk_bytes_;
}

// --- MessageBuilder ----------------------------------------------------------------------------

MessageBuilder::~MessageBuilder() {
    reset();
}

void MessageBuilder::reset() {
    for (char* c : chunks_)
        pool_->put(c);
    chunks_.clear();  // keeps capacity
    used_bytes_ = 0;
    body_bytes_ = 0;
    id_ = 0;
    crc_ = 0;
    state_ = State::idle;
}

bool MessageBuilder::reserve(uint64_t n) {
    const size_t cb = pool_->chunk_bytes();
    const size_t had = chunks_.size();
    while (chunks_.size() * cb < used_bytes_ + n) {
        char* c = pool_->get();
        if (c == nullptr) {
            while (chunks_.size() > had) {
                pool_->put(chunks_.back());
                chunks_.pop_back();
            }
            return false;
        }
        chunks_.push_back(c);
    }
    return true;
}

void MessageBuilder::write(const void* data, size_t n) {
    const size_t cb = pool_->chunk_bytes();
    check(used_bytes_ + n <= chunks_.size() * cb, "builder write without reserve");
    crc_ = crc32c(crc_, data, n);
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
        const size_t off = used_bytes_ % cb;
        const size_t k = std::min(n, cb - off);
        std::memcpy(chunks_[used_bytes_ / cb] + off, p, k);
        p += k;
        n -= k;
        used_bytes_ += k;
    }
}

void MessageBuilder::write_str16(std::string_view s) {
    const auto n = static_cast<uint16_t>(s.size());
    write(&n, sizeof n);
    write(s.data(), s.size());
}

bool MessageBuilder::begin(ChunkPool& pool, uint64_t id, int64_t arrival_unix_us,
                           const EnvelopeFields& env) {
    check(state_ == State::idle, "MessageBuilder::begin without reset");
    const uint64_t env_bytes = envelope_bytes(env);
    // Refuse rather than truncate: a truncated length would shift every later field.
    if (env_bytes == 0 || env_bytes + message_trailer_bytes > std::numeric_limits<uint32_t>::max())
        return false;
    pool_ = &pool;
    // Room for the trailer is held from the start, so that seal() never needs memory: the
    // committer seals a whole batch at once and cannot refuse one message of it.
    if (!reserve(record_header_bytes + env_bytes + message_trailer_bytes)) return false;
    used_bytes_ = record_header_bytes;  // the header is written at seal, once its crc is known
    id_ = id;
    state_ = State::open;

    write(&id, sizeof id);
    write(&arrival_unix_us, sizeof arrival_unix_us);
    for (std::string_view f :
         {env.helo, env.client_addr, env.protocol, env.mail_from, env.mail_params}) {
        write_str16(f);
    }
    const auto rcpt_count = static_cast<uint32_t>(env.rcpts.size());
    write(&rcpt_count, sizeof rcpt_count);
    for (const RcptField& r : env.rcpts) {
        write_str16(r.address);
        write_str16(r.params);
    }
    check(used_bytes_ == record_header_bytes + env_bytes, "envelope size mismatch");
    return true;
}

bool MessageBuilder::append(std::string_view text) {
    if (state_ != State::open) return false;
    const uint64_t payload_after = used_bytes_ - record_header_bytes + text.size();
    if (payload_after + message_trailer_bytes > std::numeric_limits<uint32_t>::max()) return false;
    if (!reserve(text.size() + message_trailer_bytes)) return false;
    write(text.data(), text.size());
    body_bytes_ += text.size();
    return true;
}

bool MessageBuilder::seal(uint64_t salt) {
    if (state_ != State::open) return false;  // sealing twice would change the crc
    check(reserve(message_trailer_bytes), "trailer room not held");
    write(&body_bytes_, sizeof body_bytes_);
    write(&message_end_magic, sizeof message_end_magic);

    char hdr[record_header_bytes];
    fill_header(hdr, RecordType::message, static_cast<uint32_t>(used_bytes_ - record_header_bytes));
    store<uint32_t>(hdr + 12, finish_crc(crc_, hdr, salt));
    std::memcpy(chunks_.front(), hdr, sizeof hdr);
    state_ = State::sealed;
    return true;
}

uint64_t MessageBuilder::id() const {
    return id_;
}
uint64_t MessageBuilder::body_bytes() const {
    return body_bytes_;
}
uint64_t MessageBuilder::record_bytes() const {
    return used_bytes_;
}

void MessageBuilder::iovecs(std::vector<iovec>& out) const {
    check(state_ == State::sealed, "iovecs of an unsealed message");
    const size_t cb = pool_->chunk_bytes();
    uint64_t left = used_bytes_;
    for (char* c : chunks_) {
        if (left == 0) break;
        const size_t n = std::min<uint64_t>(left, cb);
        out.push_back(iovec{c, n});
        left -= n;
    }
    check(left == 0, "staged bytes beyond the chunks held");
}

// --- Decoding ----------------------------------------------------------------------------------

size_t encode_segment_header(const SegmentHeader& h, std::span<char> out) {
    constexpr size_t total = record_header_bytes + segment_header_payload_bytes;
    check(out.size() >= total, "segment header buffer too small");
    char* payload = out.data() + record_header_bytes;
    store<uint32_t>(payload, h.version);
    store<uint32_t>(payload + 4, h.core);
    store<uint64_t>(payload + 8, h.segment_seq);
    store<uint64_t>(payload + 16, h.salt);
    store<int64_t>(payload + 24, h.created_unix_us);
    fill_header(out.data(), RecordType::segment_header, segment_header_payload_bytes);
    // The segment header is read before its salt is known, so its own crc uses salt 0.
    const uint32_t crc =
        finish_crc(crc32c(0, payload, segment_header_payload_bytes), out.data(), 0);
    store<uint32_t>(out.data() + 12, crc);
    return total;
}

size_t encode_record(RecordType type, std::string_view payload, uint64_t salt,
                     std::span<char> out) {
    const size_t total = record_header_bytes + payload.size();
    check(out.size() >= total && payload.size() <= UINT32_MAX, "record buffer too small");
    std::memcpy(out.data() + record_header_bytes, payload.data(), payload.size());
    fill_header(out.data(), type, static_cast<uint32_t>(payload.size()));
    store<uint32_t>(out.data() + 12,
                    finish_crc(crc32c(0, payload.data(), payload.size()), out.data(), salt));
    return total;
}

std::optional<RawRecord> decode_record(std::string_view bytes, uint64_t salt,
                                       size_t* record_bytes) {
    if (bytes.size() < record_header_bytes) return std::nullopt;
    const char* hdr = bytes.data();
    if (load<uint32_t>(hdr) != record_magic) return std::nullopt;
    if (hdr[5] != 0 || load<uint16_t>(hdr + 6) != 0) return std::nullopt;  // flags, reserved
    const uint32_t payload_bytes = load<uint32_t>(hdr + 8);
    if (payload_bytes > bytes.size() - record_header_bytes) return std::nullopt;
    const std::string_view payload = bytes.substr(record_header_bytes, payload_bytes);
    const uint32_t crc = finish_crc(crc32c(0, payload.data(), payload.size()), hdr, salt);
    if (crc != load<uint32_t>(hdr + 12)) return std::nullopt;
    if (record_bytes != nullptr) *record_bytes = record_header_bytes + payload_bytes;
    return RawRecord{static_cast<RecordType>(hdr[4]), payload};
}

std::optional<SegmentHeader> decode_segment_header(std::string_view payload) {
    if (payload.size() != segment_header_payload_bytes) return std::nullopt;
    SegmentHeader h;
    Reader r(payload);
    if (!r.read(&h.version) || !r.read(&h.core) || !r.read(&h.segment_seq) || !r.read(&h.salt) ||
        !r.read(&h.created_unix_us)) {
        return std::nullopt;
    }
    if (h.version != segment_format_version) return std::nullopt;
    return h;
}

std::optional<MessageView> decode_message(std::string_view payload) {
    if (payload.size() < message_trailer_bytes) return std::nullopt;
    const size_t trailer_at = payload.size() - message_trailer_bytes;
    if (load<uint32_t>(payload.data() + trailer_at + 8) != message_end_magic) return std::nullopt;
    const uint64_t body_bytes = load<uint64_t>(payload.data() + trailer_at);

    MessageView m;
    Reader r(payload.substr(0, trailer_at));
    if (!r.read(&m.id) || !r.read(&m.arrival_unix_us) || !r.str16(&m.helo) ||
        !r.str16(&m.client_addr) || !r.str16(&m.protocol) || !r.str16(&m.mail_from) ||
        !r.str16(&m.mail_params)) {
        return std::nullopt;
    }
    uint32_t rcpt_count = 0;
    if (!r.read(&rcpt_count)) return std::nullopt;
    // Each recipient takes at least its two length prefixes: bound the count by the bytes left
    // before reserving, so a hostile count cannot make us allocate gigabytes.
    if (rcpt_count > r.remaining() / 4) return std::nullopt;
    m.rcpts.reserve(rcpt_count);
    for (uint32_t i = 0; i < rcpt_count; ++i) {
        RcptField f;
        if (!r.str16(&f.address) || !r.str16(&f.params)) return std::nullopt;
        m.rcpts.push_back(f);
    }
    m.body = r.rest();
    if (m.body.size() != body_bytes) return std::nullopt;
    return m;
}

}  // namespace ringmail::spool
