// client.hpp — a simulated SMTP client: a script of random shape (EHLO or HELO, transactions
// with DATA or BDAT, pipelined bursts or lockstep, RSET, NOOP, QUIT), cut at a random byte by
// a FIN, a half-close, an RST or silence, written and read at random speeds. It reads every
// reply in order and records each "250 ... queued as ID" against the message it answers.
// See clients.cpp.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace ringmail::sim {

struct Expect {
    enum class Kind : uint8_t { greet, hello, mail, rcpt, data, data_end, bdat, bdat_last, other };
    Kind kind = Kind::other;
    int msg = -1;
    int idx = 0;
};

struct Action {
    enum class Kind : uint8_t { send, wait_replies, body_if_go } kind = Kind::send;
    std::string bytes;
    std::vector<Expect> expects;  // queued when its first byte goes out
    int msg = -1;
    bool completes_msg = false;  // its last byte ends the message
};

struct Client {
    enum class Cut : uint8_t { none, fin, close, rst, silent };
    enum class State : uint8_t { running, draining, silent, done };
    uint32_t id = 0;
    int fd = -1;  // server end of its socket; -1 before connect
    uint32_t ip = 0;
    State state = State::running;
    std::vector<Action> script;
    size_t pc = 0;
    size_t sent_off = 0;
    size_t cut_at = SIZE_MAX;  // action index
    size_t cut_off = 0;        // bytes of that action sent before the cut
    Cut cut = Cut::none;
    uint32_t write_chunk_max = UINT32_MAX;
    uint32_t read_chunk_max = UINT32_MAX;
    uint64_t gap_us = 0;  // pause between its steps while it has something to do
    uint64_t next_us = 0;
    uint64_t waiting_since_us = 0;
    std::deque<Expect> expects;
    std::string line;  // reply text read but not yet a whole line
    int last_data_code = 0;
};

}  // namespace ringmail::sim
