// spool_reader.hpp — reading message records back from the spool through the ring.
//
// Delivery reads a message's record (envelope and text) from the segment that holds it, which
// may belong to another core's directory: records are immutable once their commit completed,
// so reading them needs no coordination. Segment files are opened read-only once and kept
// (bounded cache; the least recently used is closed, and so is a segment found unlinked). Every
// read is verified (magic, length, salted crc through spool::decode_record, then decode_message): a
// record that fails is an operating error reported to the caller, never delivered.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/runtime/reactor.hpp"

namespace ringmail {

struct RecordLocation {
    uint16_t dir = 0;  // core directory number
    uint64_t segment_seq = 0;
    uint64_t offset = 0;
    uint32_t record_bytes = 0;
};

class SpoolReader {
  public:
    // A read in flight; owned by the caller (embedded in a delivery), completes once.
    struct Read {
        IoOp op;
        SpoolReader* reader = nullptr;
        RecordLocation at;
        std::vector<char> buf;                     // keeps its capacity across reads
        void (*done)(Read* r, int err) = nullptr;  // err 0: buf holds the whole record
        void* user = nullptr;
        int fd = -1;
        uint64_t salt = 0;  // of the segment: to verify the record with spool::decode_record
    };

    SpoolReader(Reactor& reactor, std::string spool_dir, uint32_t fds_max = 64);
    ~SpoolReader();
    SpoolReader(const SpoolReader&) = delete;
    SpoolReader& operator=(const SpoolReader&) = delete;

    // Starts reading r->at into r->buf; r->done is called from a completion.
    void read(Read* r);
    // The segment is gone (deleted after all its messages became final): close its fd.
    void forget(uint16_t dir, uint64_t segment_seq);
    // Closes the fds of segments deleted by their owning core (another core's directory, whose
    // deletion this core's forget() never hears of): an unlinked file held open keeps its disk
    // space (a preallocated segment) until the fd would be evicted, which may be never.
    void close_unlinked();

  private:
    static void on_read(void* self, int res, uint32_t flags);
    int fd_for(uint16_t dir, uint64_t seq, uint64_t* salt);

    struct Open {
        uint16_t dir;
        uint64_t seq;
        int fd;
        uint64_t salt;
        uint64_t used;
    };
    Reactor& reactor_;
    std::string spool_dir_;
    uint32_t fds_max_;
    std::vector<Open> open_;
    uint64_t clock_ = 0;
};

}  // namespace ringmail
