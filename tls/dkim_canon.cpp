// dkim_canon.cpp — relaxed canonicalization of DKIM. See dkim_canon.hpp.
#include "tls/dkim_canon.hpp"

#include <cstring>

namespace ringmail::tls {
namespace {

constexpr bool is_wsp(char c) noexcept {
    return c == ' ' || c == '\t';
}

constexpr char lower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Bytes that end a run of ordinary body bytes.
struct SpecialTable {
    bool special[256] = {};
    constexpr SpecialTable() {
        special[static_cast<unsigned char>(' ')] = true;
        special[static_cast<unsigned char>('\t')] = true;
        special[static_cast<unsigned char>('\r')] = true;
        special[static_cast<unsigned char>('\n')] = true;
    }
};
constexpr SpecialTable body_special;

}  // namespace

DkimDigest dkim_sha256(std::string_view data) noexcept {
    DkimSha256 sha;
    sha.update(data.data(), data.size());
    return sha.finish();
}

void dkim_canon_header_relaxed(std::string_view field, std::string* out) {
    const size_t colon = field.find(':');
    std::string_view name = field.substr(0, colon);
    while (!name.empty() && is_wsp(name.back()))
        name.remove_suffix(1);
    for (char c : name)
        out->push_back(lower(c));
    if (colon == std::string_view::npos) return;
    out->push_back(':');
    bool started = false;
    bool space = false;
    for (char c : field.substr(colon + 1)) {
        if (c == '\r' || c == '\n') continue;  // unfolding (RFC 6376 §3.4.2)
        if (is_wsp(c)) {
            space = started;
            continue;
        }
        if (space) out->push_back(' ');
        out->push_back(c);
        started = true;
        space = false;
    }
}

// --- RelaxedBodyHasher ------------------------------------------------------------------------

void RelaxedBodyHasher::reset() noexcept {
    (void)sha_.finish();
    empty_lines_pending_ = 0;
    canonical_bytes_ = 0;
    stage_len_ = 0;
    wsp_pending_ = false;
    line_has_content_ = false;
    cr_pending_ = false;
}

void RelaxedBodyHasher::flush() noexcept {
    if (stage_len_ == 0) return;
    sha_.update(stage_, stage_len_);
    if (tee_ != nullptr) tee_->append(stage_, stage_len_);
    stage_len_ = 0;
}

void RelaxedBodyHasher::put(const char* p, size_t n) noexcept {
    canonical_bytes_ += n;
    if (n > sizeof stage_ / 4) {
        // Long runs go to the hash straight from the input: no copy of the body.
        flush();
        sha_.update(p, n);
        if (tee_ != nullptr) tee_->append(p, n);
        return;
    }
    if (stage_len_ + n > sizeof stage_) flush();
    std::memcpy(stage_ + stage_len_, p, n);
    stage_len_ += n;
}

void RelaxedBodyHasher::content(const char* p, size_t n) noexcept {
    if (!line_has_content_) {
        // The empty lines before this one were not trailing after all.
        for (; empty_lines_pending_ != 0; --empty_lines_pending_)
            put("\r\n", 2);
        line_has_content_ = true;
    }
    if (wsp_pending_) put(" ", 1);
    wsp_pending_ = false;
    put(p, n);
}

void RelaxedBodyHasher::line_end() noexcept {
    // A line of white space only is empty once its trailing white space is gone.
    if (line_has_content_) {
        put("\r\n", 2);
    } else {
        ++empty_lines_pending_;
    }
    line_has_content_ = false;
    wsp_pending_ = false;
}

void RelaxedBodyHasher::feed(std::string_view chunk) noexcept {
    const char* p = chunk.data();
    const char* const end = p + chunk.size();
    if (cr_pending_ && p != end) {
        cr_pending_ = false;
        if (*p == '\n') {
            line_end();
            ++p;
        } else {
            content("\r", 1);
        }
    }
    while (p != end) {
        const char c = *p;
        if (!body_special.special[static_cast<unsigned char>(c)]) {
            const char* run = p;
            while (p != end && !body_special.special[static_cast<unsigned char>(*p)])
                ++p;
            content(run, static_cast<size_t>(p - run));
            continue;
        }
        ++p;
        if (is_wsp(c)) {
            wsp_pending_ = true;
        } else if (c == '\n') {
            line_end();
        } else if (p == end) {  // CR at the end of the chunk: decided by the next byte
            cr_pending_ = true;
        } else if (*p == '\n') {
            line_end();
            ++p;
        } else {
            content("\r", 1);
        }
    }
}

DkimDigest RelaxedBodyHasher::finish() noexcept {
    if (cr_pending_) content("\r", 1);
    cr_pending_ = false;
    // RFC 6376 §3.4.4: a non-empty body that does not end in CRLF gets one; trailing empty
    // lines (pending here) are dropped, so an empty body hashes as nothing at all.
    if (line_has_content_) line_end();
    flush();
    return sha_.finish();
}

}  // namespace ringmail::tls
