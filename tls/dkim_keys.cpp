// dkim_keys.cpp — DKIM keys and the key table. See dkim_keys.hpp.
#include "tls/dkim_keys.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "tls/auth.hpp"  // base64_encode
#include "tls/dkim_crypto.hpp"

namespace ringmail::tls {
namespace {

std::string base64(std::string_view bytes) {
    std::string out(base64_encoded_bytes(bytes.size()), '\0');
    out.resize(base64_encode(bytes, out.data(), out.size()));
    return out;
}

char lower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lower_domain(std::string_view d) {
    while (!d.empty() && d.back() == '.')
        d.remove_suffix(1);
    std::string s(d);
    for (char& c : s)
        c = lower(c);
    return s;
}

// A DNS name of labels of letters, digits, hyphens and underscores (selectors may use them).
bool valid_name(std::string_view s) {
    if (s.empty() || s.size() > 253) return false;
    size_t label = 0;
    for (char c : s) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok || ++label > 63) return false;
    }
    return label != 0;
}

// Splits a line into white-space separated words; at most max are stored, *count is the total.
size_t split_words(std::string_view line, std::string_view* words, size_t max) {
    size_t n = 0;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
            ++i;
        if (i == line.size()) break;
        const size_t start = i;
        while (i < line.size() && line[i] != ' ' && line[i] != '\t')
            ++i;
        if (n < max) words[n] = line.substr(start, i - start);
        ++n;
    }
    return n;
}

}  // namespace

std::string_view dkim_algorithm_name(DkimAlgorithm a) noexcept {
    return a == DkimAlgorithm::rsa_sha256 ? "rsa-sha256" : "ed25519-sha256";
}

bool dkim_read_file(const std::string& path, size_t max_bytes, std::string* out,
                    std::string* error) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        *error = "cannot open " + path + ": " + std::strerror(errno);
        return false;
    }
    out->clear();
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) != 0) {
        if (out->size() + n > max_bytes) {
            std::fclose(f);
            *error = path + " is larger than " + std::to_string(max_bytes) + " bytes";
            return false;
        }
        out->append(buf, n);
    }
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    if (failed) {
        *error = "cannot read " + path;
        return false;
    }
    return true;
}

// --- DkimKey ----------------------------------------------------------------------------------

std::unique_ptr<DkimKey> DkimKey::from_pem(std::string_view pem, std::string* error) {
    dkim_crypto::ParsedKey parsed;
    if (!dkim_crypto::openssl_parse_pem(pem, &parsed, error)) return nullptr;
    std::unique_ptr<DkimKey> key(new DkimKey);
    key->algorithm_ = parsed.algorithm;
    key->bits_ = parsed.bits;
    key->rsa_ = parsed.rsa;
    if (parsed.algorithm == DkimAlgorithm::rsa_sha256) {
        if (parsed.bits < dkim_rsa_bits_min || parsed.bits > dkim_rsa_bits_max) {
            *error = "RSA key of " + std::to_string(parsed.bits) + " bits (allowed " +
                     std::to_string(dkim_rsa_bits_min) + "-" + std::to_string(dkim_rsa_bits_max) +
                     ")";
            return nullptr;
        }
        return key;
    }
    key->seed_ = parsed.seed;
    std::memset(parsed.seed.data(), 0, parsed.seed.size());
    if (!dkim_crypto::wolf_ed25519_public(key->seed_, &key->public_)) {
        *error = "cannot derive the Ed25519 public key";
        return nullptr;
    }
    return key;
}

std::string DkimKey::generate_pem(DkimAlgorithm algorithm, unsigned rsa_bits) {
    return dkim_crypto::openssl_generate_pem(algorithm, rsa_bits);
}

DkimKey::~DkimKey() {
    dkim_crypto::openssl_free(rsa_);
    std::memset(seed_.data(), 0, seed_.size());
}

size_t DkimKey::signature_bytes() const noexcept {
    return algorithm_ == DkimAlgorithm::rsa_sha256 ? (bits_ + 7) / 8 : dkim_ed25519_signature_bytes;
}

size_t DkimKey::sign(const DkimDigest& digest, uint8_t* out, size_t cap) const noexcept {
    if (algorithm_ == DkimAlgorithm::rsa_sha256) {
        return dkim_crypto::openssl_rsa_sign(rsa_, digest, out, cap);
    }
    return dkim_crypto::wolf_ed25519_sign(seed_, public_, digest.data(), digest.size(), out, cap);
}

std::string DkimKey::public_key_base64() const {
    if (algorithm_ == DkimAlgorithm::rsa_sha256) {
        return base64(dkim_crypto::openssl_rsa_public_der(rsa_));
    }
    return base64({reinterpret_cast<const char*>(public_.data()), public_.size()});
}

std::string DkimKey::dns_record() const {
    const char* k = algorithm_ == DkimAlgorithm::rsa_sha256 ? "rsa" : "ed25519";
    return std::string("v=DKIM1; k=") + k + "; p=" + public_key_base64();
}

std::string DkimKey::rsa_private_der() const {
    return algorithm_ == DkimAlgorithm::rsa_sha256 ? dkim_crypto::openssl_rsa_private_der(rsa_)
                                                   : std::string();
}

// --- DkimKeyTable -----------------------------------------------------------------------------

bool DkimKeyTable::load_file(const std::string& path, std::string* error) {
    std::string text;
    if (!dkim_read_file(path, dkim_key_table_max_bytes, &text, error)) return false;
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash);
    return load_text(text, path, dir, error);
}

bool DkimKeyTable::load_text(std::string_view text, std::string_view source,
                             const std::string& base_dir, std::string* error) {
    std::vector<DkimKeyEntry> entries;
    size_t line_no = 0;
    auto fail = [&](const std::string& what) {
        *error = std::string(source) + ":" + std::to_string(line_no) + ": " + what;
        return false;
    };
    while (!text.empty()) {
        ++line_no;
        const size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (const size_t hash = line.find('#'); hash != std::string_view::npos) {
            line = line.substr(0, hash);
        }
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        std::string_view w[4];
        const size_t n = split_words(line, w, 4);
        if (n == 0) continue;
        if (n != 4) {
            return fail("expected DOMAIN SELECTOR ALGORITHM KEYFILE, got " + std::to_string(n) +
                        " fields");
        }
        if (!valid_name(w[0])) return fail("bad domain '" + std::string(w[0]) + "'");
        if (!valid_name(w[1])) return fail("bad selector '" + std::string(w[1]) + "'");
        DkimAlgorithm algorithm;
        if (w[2] == "rsa-sha256") {
            algorithm = DkimAlgorithm::rsa_sha256;
        } else if (w[2] == "ed25519-sha256") {
            algorithm = DkimAlgorithm::ed25519_sha256;
        } else {
            return fail("unknown algorithm '" + std::string(w[2]) +
                        "' (rsa-sha256 or ed25519-sha256)");
        }
        if (entries.size() == dkim_key_table_entries_max) {
            return fail("more than " + std::to_string(dkim_key_table_entries_max) + " keys");
        }
        std::string path(w[3]);
        if (path[0] != '/' && !base_dir.empty()) path = base_dir + "/" + path;
        std::string pem;
        std::string why;
        if (!dkim_read_file(path, dkim_key_file_max_bytes, &pem, &why)) return fail(why);
        std::unique_ptr<DkimKey> key = DkimKey::from_pem(pem, &why);
        std::fill(pem.begin(), pem.end(), '\0');
        if (key == nullptr) return fail(std::string(w[3]) + ": " + why);
        if (key->algorithm() != algorithm) {
            return fail(std::string(w[3]) + " holds a " +
                        std::string(dkim_algorithm_name(key->algorithm())) + " key, not " +
                        std::string(w[2]));
        }
        std::string domain = lower_domain(w[0]);
        for (const DkimKeyEntry& e : entries) {
            if (e.domain == domain && e.algorithm == algorithm) {
                return fail("second " + std::string(w[2]) + " key for " + domain);
            }
        }
        entries.push_back(
            DkimKeyEntry{std::move(domain), std::string(w[1]), algorithm, std::move(key)});
    }
    std::sort(entries.begin(), entries.end(), [](const DkimKeyEntry& a, const DkimKeyEntry& b) {
        return a.domain != b.domain ? a.domain < b.domain : a.algorithm < b.algorithm;
    });
    entries_ = std::move(entries);
    return true;
}

DkimKeyMatch DkimKeyTable::find(std::string_view domain) const noexcept {
    DkimKeyMatch m;
    while (!domain.empty() && domain.back() == '.')
        domain.remove_suffix(1);
    char buf[256];
    if (domain.empty() || domain.size() > sizeof buf) return m;
    for (size_t i = 0; i < domain.size(); ++i)
        buf[i] = lower(domain[i]);
    std::string_view d(buf, domain.size());
    // Most specific first: the domain, then each parent.
    for (;;) {
        auto it = std::lower_bound(
            entries_.begin(), entries_.end(), d,
            [](const DkimKeyEntry& e, std::string_view key) { return e.domain < key; });
        for (; it != entries_.end() && it->domain == d && m.count < m.entries.size(); ++it) {
            m.entries[m.count++] = &*it;
        }
        if (m.count != 0) return m;
        const size_t dot = d.find('.');
        if (dot == std::string_view::npos) return m;
        d.remove_prefix(dot + 1);
    }
}

}  // namespace ringmail::tls
