// dkim_sign.cpp — the streaming DKIM signer. See dkim_sign.hpp.
#include "tls/dkim_sign.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "tls/auth.hpp"  // base64_encode

namespace ringmail::tls {
namespace {

constexpr bool is_wsp(char c) noexcept {
    return c == ' ' || c == '\t';
}

constexpr char lower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr size_t from_index = 0;
static_assert(dkim_signed_header_names[from_index] == "from");
static_assert(dkim_signed_fields_max <= UINT8_MAX);

// Index of a header name in the signed set, or -1. Case-insensitive (RFC 5322 §1.2.2).
int signed_name_index(std::string_view name) noexcept {
    for (size_t i = 0; i < dkim_signed_header_names.size(); ++i) {
        const std::string_view n = dkim_signed_header_names[i];
        if (n.size() != name.size()) continue;
        size_t j = 0;
        while (j < n.size() && lower(name[j]) == n[j])
            ++j;
        if (j == n.size()) return static_cast<int>(i);
    }
    return -1;
}

bool domain_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

// Appends token to a header field being folded at dkim_header_line_max_columns: on the same
// line after one SP (space) or nothing, or on a new line starting with one SP. reserve is room
// that must also remain on the line after the token (so "b=" is never alone at a line end).
void put_folded(std::string* f, size_t* column, std::string_view token, bool space,
                size_t reserve = 0) {
    const size_t need = (space ? 1 : 0) + token.size() + reserve;
    if (*column + need > dkim_header_line_max_columns && *column > 1) {
        f->append("\r\n ");
        *column = 1;
    } else if (space) {
        f->push_back(' ');
        ++*column;
    }
    f->append(token);
    *column += token.size();
}

}  // namespace

std::string_view dkim_sign_status_name(DkimSignStatus s) noexcept {
    switch (s) {
        case DkimSignStatus::ok:
            return "ok";
        case DkimSignStatus::no_from:
            return "no From: field";
        case DkimSignStatus::multiple_from:
            return "more than one From: field";
        case DkimSignStatus::bad_from:
            return "no single domain in From:";
        case DkimSignStatus::no_key:
            return "no key for the From: domain";
        case DkimSignStatus::headers_too_large:
            return "signed header fields too large";
        case DkimSignStatus::sign_failed:
            return "signing failed";
    }
    return "?";
}

DkimSigner::DkimSigner() {
    signed_.reserve(4096);
    from_domain_.reserve(256);
    scratch_.reserve(1024);
    for (Signature& s : sigs_)
        s.field.reserve(1024);
}

void DkimSigner::reset() noexcept {
    phase_ = Phase::none;
    at_line_start_ = true;
    cr_pending_ = false;
    value_started_ = false;
    space_pending_ = false;
    overflow_ = false;
    name_len_ = 0;
    signed_.clear();
    field_count_ = 0;
    instances_ = {};
    body_.reset();
    body_hash_ = {};
    from_domain_.clear();
    count_ = 0;
}

// --- Header section ---------------------------------------------------------------------------

void DkimSigner::feed(std::string_view chunk) noexcept {
    size_t i = 0;
    while (phase_ != Phase::body && i < chunk.size())
        header_byte(chunk[i++]);
    if (i < chunk.size()) body_.feed(chunk.substr(i));
}

void DkimSigner::header_byte(char c) noexcept {
    if (cr_pending_) {
        cr_pending_ = false;
        if (c == '\n') {
            line_end();
            return;
        }
        header_char('\r');
    }
    if (c == '\r') {
        cr_pending_ = true;
    } else if (c == '\n') {
        line_end();
    } else {
        header_char(c);
    }
}

void DkimSigner::line_end() noexcept {
    if (at_line_start_) {  // the empty line that ends the header section
        end_field();
        phase_ = Phase::body;
        return;
    }
    at_line_start_ = true;
}

void DkimSigner::header_char(char c) noexcept {
    if (at_line_start_) {
        at_line_start_ = false;
        if (!is_wsp(c)) {
            end_field();
            phase_ = Phase::name;
            name_len_ = 0;
        } else if (phase_ == Phase::name) {
            phase_ = Phase::skip;  // a folded line inside a field name: not a field we sign
        }
    }
    switch (phase_) {
        case Phase::name: {
            if (c != ':') {
                if (name_len_ == sizeof name_) {
                    phase_ = Phase::skip;
                } else {
                    name_[name_len_++] = c;
                }
                return;
            }
            size_t len = name_len_;
            while (len != 0 && is_wsp(name_[len - 1]))
                --len;  // "Subject :" is Subject
            const int index = signed_name_index({name_, len});
            if (index < 0) {
                phase_ = Phase::skip;
            } else {
                begin_field_value(static_cast<size_t>(index));
            }
            return;
        }
        case Phase::value:
            // Relaxed (RFC 6376 §3.4.2): line breaks are gone already, white-space runs become
            // one SP, white space after the colon and at the end disappears.
            if (is_wsp(c)) {
                space_pending_ = value_started_;
                return;
            }
            if (space_pending_) append_signed(' ');
            append_signed(c);
            value_started_ = true;
            space_pending_ = false;
            return;
        case Phase::none:
        case Phase::skip:
        case Phase::body:
            return;
    }
}

void DkimSigner::begin_field_value(size_t name) noexcept {
    if (field_count_ == fields_.size()) {
        overflow_ = true;
        phase_ = Phase::skip;
        return;
    }
    fields_[field_count_] =
        Field{static_cast<uint8_t>(name), static_cast<uint32_t>(signed_.size()), 0};
    for (char n : dkim_signed_header_names[name])
        append_signed(n);
    append_signed(':');
    phase_ = Phase::value;
    value_started_ = false;
    space_pending_ = false;
}

void DkimSigner::end_field() noexcept {
    if (phase_ == Phase::value) {
        append_signed('\r');
        append_signed('\n');
        Field& f = fields_[field_count_++];
        f.length = static_cast<uint32_t>(signed_.size() - f.offset);
        ++instances_[f.name];
    }
    phase_ = Phase::none;
}

void DkimSigner::append_signed(char c) noexcept {
    if (signed_.size() == dkim_signed_headers_max_bytes) {
        overflow_ = true;
        return;
    }
    signed_.push_back(c);  // within the capacity reserved or grown once up to the bound
}

// --- Signing ----------------------------------------------------------------------------------

DkimSignStatus DkimSigner::find_from_domain() noexcept {
    if (instances_[from_index] == 0) return DkimSignStatus::no_from;
    if (instances_[from_index] > 1) return DkimSignStatus::multiple_from;
    const Field* from = nullptr;
    for (size_t i = 0; i < field_count_ && from == nullptr; ++i) {
        if (fields_[i].name == from_index) from = &fields_[i];
    }
    // "from:" … "\r\n"
    std::string_view v(signed_.data() + from->offset + 5, from->length - 7);
    // The address is inside the angle brackets if there are any (a display name may hold
    // anything, even "@"); one mailbox only: with several, whose domain would sign?
    if (const size_t lt = v.find('<'); lt != std::string_view::npos) {
        if (v.find('<', lt + 1) != std::string_view::npos) return DkimSignStatus::bad_from;
        v = v.substr(lt + 1);
        v = v.substr(0, v.find('>'));
    } else if (v.find(',') != std::string_view::npos) {
        return DkimSignStatus::bad_from;
    }
    const size_t at = v.rfind('@');
    if (at == std::string_view::npos) return DkimSignStatus::bad_from;
    v = v.substr(at + 1);
    from_domain_.clear();
    for (char c : v) {
        if (is_wsp(c) || c == '(') break;  // "joe@example.com (Joe)"
        from_domain_.push_back(lower(c));
    }
    while (!from_domain_.empty() && from_domain_.back() == '.')
        from_domain_.pop_back();
    if (from_domain_.empty() || from_domain_.size() > 253 || from_domain_.front() == '.') {
        return DkimSignStatus::bad_from;
    }
    for (char c : from_domain_) {
        if (!domain_char(c)) return DkimSignStatus::bad_from;
    }
    return DkimSignStatus::ok;
}

DkimSignStatus DkimSigner::prepare(const DkimKeyTable& table, const DkimSignOptions& options) {
    count_ = 0;
    if (phase_ != Phase::body) {
        end_field();  // the text ended inside the header section: an empty body
        phase_ = Phase::body;
    }
    body_hash_ = body_.finish();
    if (overflow_) return DkimSignStatus::headers_too_large;
    if (const DkimSignStatus s = find_from_domain(); s != DkimSignStatus::ok) return s;
    const DkimKeyMatch match = table.find(from_domain_);
    if (match.count == 0) return DkimSignStatus::no_key;
    for (size_t i = 0; i < match.count; ++i) {
        sigs_[i].entry = match.entries[i];
        build_field(&sigs_[i], options);
        hash_headers(&sigs_[i]);
    }
    count_ = match.count;
    return DkimSignStatus::ok;
}

// The names of h=, as indices into dkim_signed_header_names: each present field of the set as
// many times as it occurs, then From again.
size_t DkimSigner::h_names(std::array<uint8_t, dkim_signed_fields_max + 1>* out) const noexcept {
    size_t n = 0;
    for (size_t k = 0; k < instances_.size(); ++k) {
        for (size_t j = 0; j < instances_[k]; ++j)
            (*out)[n++] = static_cast<uint8_t>(k);
    }
    (*out)[n++] = static_cast<uint8_t>(from_index);
    return n;
}

void DkimSigner::build_field(Signature* s, const DkimSignOptions& options) const {
    const DkimKeyEntry& e = *s->entry;
    std::string& f = s->field;
    f.assign("DKIM-Signature: v=1;");
    size_t column = f.size();
    char buf[320];
    const std::string_view algorithm = dkim_algorithm_name(e.algorithm);
    std::snprintf(buf, sizeof buf, "a=%.*s;", static_cast<int>(algorithm.size()), algorithm.data());
    put_folded(&f, &column, buf, true);
    put_folded(&f, &column, "c=relaxed/relaxed;", true);
    std::snprintf(buf, sizeof buf, "d=%s;", e.domain.c_str());
    put_folded(&f, &column, buf, true);
    std::snprintf(buf, sizeof buf, "s=%s;", e.selector.c_str());
    put_folded(&f, &column, buf, true);
    std::snprintf(buf, sizeof buf, "t=%" PRId64 ";", options.now_s);
    put_folded(&f, &column, buf, true);
    if (options.expire_after_s != 0) {
        std::snprintf(buf, sizeof buf, "x=%" PRId64 ";",
                      options.now_s + static_cast<int64_t>(options.expire_after_s));
        put_folded(&f, &column, buf, true);
    }
    std::array<uint8_t, dkim_signed_fields_max + 1> names;
    const size_t n = h_names(&names);
    for (size_t i = 0; i < n; ++i) {
        const std::string_view name = dkim_signed_header_names[names[i]];
        std::snprintf(buf, sizeof buf, "%s%.*s%c", i == 0 ? "h=" : "",
                      static_cast<int>(name.size()), name.data(), i + 1 == n ? ';' : ':');
        put_folded(&f, &column, buf, i == 0);
    }
    char b64[base64_encoded_bytes(dkim_digest_bytes) + 8];
    const size_t b64_len = base64_encode(
        {reinterpret_cast<const char*>(body_hash_.data()), body_hash_.size()}, b64, sizeof b64);
    std::snprintf(buf, sizeof buf, "bh=%.*s;", static_cast<int>(b64_len), b64);
    put_folded(&f, &column, buf, true);
    put_folded(&f, &column, "b=", true, 8);
    s->column = column;
}

void DkimSigner::hash_headers(Signature* s) {
    // RFC 6376 §3.7: the fields named by h= in that order, the last instance of a name first
    // (§5.4.2), each canonicalized with its CRLF; then the DKIM-Signature field itself with an
    // empty b= and no CRLF. An over-signed name with no instance left contributes nothing.
    DkimSha256 sha;
    for (size_t k = 0; k < instances_.size(); ++k) {
        if (instances_[k] == 0) continue;
        for (size_t i = field_count_; i-- > 0;) {
            if (fields_[i].name != k) continue;
            sha.update(signed_.data() + fields_[i].offset, fields_[i].length);
        }
    }
    scratch_.clear();
    dkim_canon_header_relaxed(s->field, &scratch_);
    sha.update(scratch_.data(), scratch_.size());
    s->digest = sha.finish();
}

void DkimSigner::append_header_field(size_t i, std::span<const uint8_t> signature,
                                     std::string* out) const {
    const Signature& s = sigs_[i];
    char b64[base64_encoded_bytes(dkim_signature_max_bytes) + 4];
    const size_t len = base64_encode(
        {reinterpret_cast<const char*>(signature.data()), signature.size()}, b64, sizeof b64);
    out->append(s.field);
    size_t column = s.column;
    // Base64 may be broken anywhere by FWS (RFC 6376 §3.5, b= tag).
    for (size_t done = 0; done < len;) {
        if (column >= dkim_header_line_max_columns) {
            out->append("\r\n ");
            column = 1;
        }
        const size_t n = std::min(len - done, dkim_header_line_max_columns - column);
        out->append(b64 + done, n);
        done += n;
        column += n;
    }
    out->append("\r\n");
}

DkimSignStatus DkimSigner::sign_inline(const DkimKeyTable& table, const DkimSignOptions& options,
                                       std::string* out) {
    const DkimSignStatus status = prepare(table, options);
    if (status != DkimSignStatus::ok) return status;
    for (size_t i = 0; i < count_; ++i) {
        uint8_t sig[dkim_signature_max_bytes];
        const size_t n = key(i).sign(header_digest(i), sig, sizeof sig);
        if (n == 0) return DkimSignStatus::sign_failed;
        append_header_field(i, {sig, n}, out);
    }
    return DkimSignStatus::ok;
}

}  // namespace ringmail::tls
