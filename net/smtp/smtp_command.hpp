// smtp_command.hpp — the static table of SMTP verbs the server session understands.
//
// Used by net/smtp/smtp_server.cpp to turn the first word of a command line into a Verb, with the
// flags that steer sequencing. Lookup is case-insensitive (RFC 5321 §2.4) and allocation-free.
#pragma once

#include <strings.h>

#include <array>
#include <cstdint>
#include <string_view>

namespace ringmail::smtp {

enum class Verb : uint8_t {
    unknown,
    ehlo,
    helo,
    mail,
    rcpt,
    data,
    bdat,
    rset,
    noop,
    quit,
    vrfy,
    help,
    starttls,
    auth
};

struct VerbInfo {
    Verb verb;
    std::string_view name;
    bool takes_argument;  // false: any argument is a 501 syntax error
    bool ends_group;      // RFC 2920 §3.1: must be the last command of a pipelined group
};

inline constexpr std::array<VerbInfo, 13> kVerbs{{
    {Verb::ehlo, "EHLO", true, true},
    {Verb::helo, "HELO", true, true},
    {Verb::mail, "MAIL", true, false},
    {Verb::rcpt, "RCPT", true, false},
    {Verb::data, "DATA", false, true},
    {Verb::bdat, "BDAT", true, false},  // RFC 3030 §4.2: BDAT may be pipelined with its data
    {Verb::rset, "RSET", false, false},
    {Verb::noop, "NOOP", true, false},  // RFC 5321 §4.1.1.9: NOOP may carry a string
    {Verb::quit, "QUIT", false, true},
    {Verb::vrfy, "VRFY", true, true},
    {Verb::help, "HELP", true, true},
    {Verb::starttls, "STARTTLS", false, true},  // RFC 3207 §4.2: what follows it is discarded
    {Verb::auth, "AUTH", true, true},           // RFC 4954 §4: last command of a group
}};

[[nodiscard]] inline const VerbInfo* find_verb(std::string_view word) {
    for (const VerbInfo& v : kVerbs) {
        if (word.size() == v.name.size() &&
            strncasecmp(word.data(), v.name.data(), word.size()) == 0)
            return &v;
    }
    return nullptr;
}

}  // namespace ringmail::smtp
