// delivery_parts.hpp — the helper types that Delivery's .cpp files share (its constructor and
// destructor need them whole). Private to core/queue/: include delivery.hpp elsewhere.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/queue/delivery.hpp"

namespace ringmail {

// The due recipients of one message, grouped by domain while each domain is resolved; once
// every answer is in, recipients whose domains share a destination (the same MX host set) go
// in one job, so they share one transaction.
struct Delivery::Dispatch {
    struct Group {
        Dispatch* parent;
        uint32_t domain;
        std::vector<uint32_t> rcpts;
        dns::ResolutionPtr result;
    };
    sched::MessageRef ref;
    Delivery* owner;
    uint32_t pending = 0;
    std::vector<Group> groups;
};

struct Delivery::DsnRead {
    SpoolReader::Read read;
    sched::MessageRef ref;
    Delivery* owner;
};

class Delivery::DsnWaiter final : public CommitWaiter {
  public:
    Delivery* owner = nullptr;
    uint64_t id = 0;              // the DSN's queue id, named in its text: the same on every try
    sched::MessageRef ref{};      // the bounced message
    uint64_t message_id = 0;      // its id (the slot is held until the DSN is durable)
    std::vector<Bounce> bounces;  // whose statuses are written once the DSN is durable
    std::string text;             // the DSN message
    std::string sender;           // its one recipient: the original envelope sender
    std::string params;           // BODY=8BITMIME when the DSN quotes 8-bit headers
    spool::RcptField rcpt;        // views into sender
    uint32_t tries = 0;
    void commit_finished(smtp::CommitResult r) override {
        owner->dsn_committed(this, r == smtp::CommitResult::ok);
    }
};

class Delivery::CopyWaiter final : public CommitWaiter {
  public:
    Delivery* owner = nullptr;
    sched::MessageRef ref{};
    uint64_t id = 0;
    SpoolReader::Read read;
    spool::MessageView msg;
    void commit_finished(smtp::CommitResult) override { owner->copy_finished(this); }
};

}  // namespace ringmail
