// record.hpp — the spool's on-disk record format, its codec and the staging of one message.
//
// A segment file is a sequence of records:
//
//   header (16 bytes, little endian)          payload (payload_bytes)
//   u32 magic "RMR1" | u8 type | u8 flags |    type-specific, fields length-prefixed
//   u16 reserved | u32 payload_bytes |
//   u32 crc
//
// crc = CRC32C(payload || header bytes 0..11 || segment salt as u64 LE). The payload comes
// first so that a message's CRC is computed while its text is staged, before we know which
// segment it lands in; the per-segment random salt means text inside a message body can never
// pass for a record of the segment, even when recovery resynchronises after corruption.
// The first record of a segment is its segment header (salt 0 in its own crc).
//
// Message payload: u64 id | i64 arrival_unix_us | str16 helo | str16 client_addr |
//   str16 protocol | str16 mail_from | str16 mail_params | u32 rcpt_count |
//   rcpt_count × (str16 address | str16 params) | body | u64 body_bytes | u32 end magic "RMND"
// (str16 = u16 length + bytes). Envelope fields are never delimited by CR/LF, so no client
// input can forge structure. The trailer is Postfix's lesson: a record that does not end in
// its END marker does not count.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace ringmail::spool {

inline constexpr uint32_t record_magic = 0x31524d52;       // "RMR1" little endian
inline constexpr uint32_t message_end_magic = 0x444e4d52;  // "RMND"
inline constexpr size_t record_header_bytes = 16;

enum class RecordType : uint8_t {
    // payload: u32 version | u32 core | u64 segment_seq | u64 salt | i64 created_unix_us
    segment_header = 1,
    message = 2,
    status = 3,  // spool/status.hpp: one recipient's delivery outcome
};

// Hardware CRC32C (SSE4.2), continuing from `crc` (0 to start).
uint32_t crc32c(uint32_t crc, const void* data, size_t n);

// The envelope as stored (views into the caller's memory).
struct RcptField {
    std::string_view address;
    std::string_view params;
};
struct EnvelopeFields {
    std::string_view helo, client_addr, protocol, mail_from, mail_params;
    std::span<const RcptField> rcpts;
};

// A fixed-size-chunk pool for staged message text; a hard cap on the memory it may hold.
// Single-threaded (one per core). Chunks are recycled, never returned to the heap.
class ChunkPool {
  public:
    ChunkPool(size_t chunk_bytes, uint64_t max_bytes);
    ~ChunkPool();
    ChunkPool(const ChunkPool&) = delete;
    ChunkPool& operator=(const ChunkPool&) = delete;
    [[nodiscard]] char* get();  // nullptr when the cap is reached
    void put(char* chunk);
    [[nodiscard]] size_t chunk_bytes() const { return chunk_bytes_; }
    [[nodiscard]] uint64_t bytes_in_use() const;

  private:
    size_t chunk_bytes_;
    uint64_t max_bytes_;
    std::vector<char*> owned_;   // every chunk ever allocated; freed by the destructor only
    char* free_head_ = nullptr;  // intrusive free list: the next pointer lives in the chunk
    uint64_t chunks_in_use_ = 0;
};

// One message record being staged: envelope at begin(), text appended as it arrives (the one
// copy from the receive buffer), sealed with the segment salt when its batch is written.
class MessageBuilder {
  public:
    MessageBuilder() = default;
    ~MessageBuilder();  // returns its chunks
    MessageBuilder(const MessageBuilder&) = delete;
    MessageBuilder& operator=(const MessageBuilder&) = delete;

    // False when the pool is exhausted (nothing held afterwards).
    [[nodiscard]] bool begin(ChunkPool& pool, uint64_t id, int64_t arrival_unix_us,
                             const EnvelopeFields& env);
    [[nodiscard]] bool append(std::string_view text);  // false: pool exhausted
    // Writes the trailer and the header (payload length and crc over the salt). Never fails
    // for lack of memory (begin and append hold room for the trailer); false only when the
    // builder is not open (never begun, or already sealed: a record is sealed once).
    [[nodiscard]] bool seal(uint64_t salt);
    void reset();  // give every chunk back; ready for begin() again

    [[nodiscard]] uint64_t id() const;
    [[nodiscard]] uint64_t body_bytes() const;
    [[nodiscard]] uint64_t record_bytes() const;  // header + payload, valid after seal()
    // The sealed record as iovecs, appended to `out` (one per chunk in use).
    void iovecs(std::vector<iovec>& out) const;

  private:
    enum class State : uint8_t { idle, open, sealed };
    [[nodiscard]] bool reserve(uint64_t n);  // all-or-nothing: chunks for n more bytes
    void write(const void* data, size_t n);  // payload bytes, folded into the crc
    void write_str16(std::string_view s);

    ChunkPool* pool_ = nullptr;
    std::vector<char*> chunks_;  // keeps its capacity across reset(): no steady-state allocation
    uint64_t used_bytes_ = 0;    // header + payload staged so far
    uint64_t body_bytes_ = 0;
    uint64_t id_ = 0;
    uint32_t crc_ = 0;  // running CRC32C of the payload
    State state_ = State::idle;
};

// A decoded message record (views into the record bytes).
struct MessageView {
    uint64_t id = 0;
    int64_t arrival_unix_us = 0;
    std::string_view helo, client_addr, protocol, mail_from, mail_params;
    std::vector<RcptField> rcpts;
    std::string_view body;
};

struct SegmentHeader {
    uint32_t version = 1;
    uint32_t core = 0;
    uint64_t segment_seq = 0;
    uint64_t salt = 0;
    int64_t created_unix_us = 0;
};

// Encode a segment header record (fixed size) into out; returns its length.
size_t encode_segment_header(const SegmentHeader& h, std::span<char> out);
// Encode a small record of any type (status records) with the segment salt into out; returns
// its length (header + payload).
size_t encode_record(RecordType type, std::string_view payload, uint64_t salt, std::span<char> out);
// Decode one record at the start of `bytes`: checks magic, length within bytes, crc with
// `salt`. nullopt if any check fails. On success *record_bytes is header + payload.
struct RawRecord {
    RecordType type;
    std::string_view payload;
};
std::optional<RawRecord> decode_record(std::string_view bytes, uint64_t salt, size_t* record_bytes);
std::optional<SegmentHeader> decode_segment_header(std::string_view payload);
// Parse a message payload; nullopt when any length is out of bounds or the trailer is wrong.
std::optional<MessageView> decode_message(std::string_view payload);

}  // namespace ringmail::spool
