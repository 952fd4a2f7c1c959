// commit_result.hpp — how a group commit ended for one message: the spool's answer that the
// SMTP session turns into its reply. Shared by spool/io (which produces it) and net/smtp
// (which answers with it), so neither includes the other.
#pragma once

#include <cstdint>

namespace ringmail::smtp {

enum class CommitResult : uint8_t {
    ok,        // 250 2.0.0 Ok: queued as <id>
    failed,    // 451 4.3.0 write or fdatasync failed
    no_space,  // 452 4.3.1 insufficient system storage
};

}  // namespace ringmail::smtp
