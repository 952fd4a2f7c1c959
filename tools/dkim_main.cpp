// dkim_main.cpp — `ringmail-dkim`, the operator's DKIM key and signing tool.
//
// Makes keys and the DNS records to publish for them, and signs a message file exactly as the
// relay's signer does (tls/dkim_sign.hpp), so a signature can be checked by any verifier; the
// cross-verification test (tests/dkim/) signs its sample messages with it. Subcommands:
//   genkey --algorithm rsa-sha256|ed25519-sha256 [--bits N]   PKCS#8 PEM on stdout
//   dns --keys TABLE                                          "SELECTOR._domainkey.DOMAIN TXT"
//   sign --keys TABLE [--time T] [--expire S] [--chunk N] FILE  signed message on stdout
// --chunk feeds the signer N bytes at a time (tests of chunk-split invariance).
// Exit codes: 0 ok; 1 the message was not signed (the reason on stderr); 2 usage or I/O error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <string>

#include "tls/dkim_keys.hpp"
#include "tls/dkim_sign.hpp"

namespace {

using ringmail::tls::DkimAlgorithm;
using ringmail::tls::DkimKey;
using ringmail::tls::DkimKeyTable;
using ringmail::tls::DkimSigner;
using ringmail::tls::DkimSignOptions;
using ringmail::tls::DkimSignStatus;

constexpr size_t message_max_bytes = 1024 * 1024 * 1024;

int genkey(const std::string& algorithm, unsigned bits) {
    DkimAlgorithm a;
    if (algorithm == "rsa-sha256") {
        a = DkimAlgorithm::rsa_sha256;
    } else if (algorithm == "ed25519-sha256") {
        a = DkimAlgorithm::ed25519_sha256;
    } else {
        std::fprintf(stderr, "ringmail-dkim: unknown algorithm %s\n", algorithm.c_str());
        return 2;
    }
    const std::string pem = DkimKey::generate_pem(a, bits);
    if (pem.empty()) {
        std::fprintf(stderr, "ringmail-dkim: key generation failed\n");
        return 2;
    }
    std::fwrite(pem.data(), 1, pem.size(), stdout);
    return 0;
}

int dns(const DkimKeyTable& table) {
    for (const auto& e : table.entries()) {
        std::printf("%s._domainkey.%s TXT \"%s\"\n", e.selector.c_str(), e.domain.c_str(),
                    e.key->dns_record().c_str());
    }
    return 0;
}

int sign(const DkimKeyTable& table, const std::string& file, int64_t now_s, uint32_t expire_s,
         size_t chunk) {
    std::string text;
    std::string error;
    if (!ringmail::tls::dkim_read_file(file, message_max_bytes, &text, &error)) {
        std::fprintf(stderr, "ringmail-dkim: %s\n", error.c_str());
        return 2;
    }
    DkimSigner signer;
    if (chunk == 0) chunk = text.size() + 1;
    for (size_t off = 0; off < text.size(); off += chunk) {
        signer.feed(std::string_view(text).substr(off, chunk));
    }
    std::string fields;
    const DkimSignStatus s = signer.sign_inline(table, DkimSignOptions{now_s, expire_s}, &fields);
    if (s != DkimSignStatus::ok) {
        std::fprintf(stderr, "ringmail-dkim: not signed: %s\n",
                     std::string(ringmail::tls::dkim_sign_status_name(s)).c_str());
        return 1;
    }
    std::fwrite(fields.data(), 1, fields.size(), stdout);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringmail-dkim: DKIM keys, DNS records and signing"};
    app.require_subcommand(1);
    std::string keys;
    std::string algorithm = "ed25519-sha256";
    unsigned bits = 2048;
    std::string file;
    int64_t now_s = static_cast<int64_t>(std::time(nullptr));
    uint32_t expire_s = 0;
    size_t chunk = 0;
    CLI::App* gen = app.add_subcommand("genkey", "a new private key, PKCS#8 PEM on stdout");
    gen->add_option("--algorithm", algorithm, "rsa-sha256 or ed25519-sha256");
    gen->add_option("--bits", bits, "RSA modulus bits")->check(CLI::Range(1024, 4096));
    CLI::App* rec = app.add_subcommand("dns", "the TXT record to publish for each key");
    rec->add_option("--keys", keys, "key table file")->required();
    CLI::App* sig = app.add_subcommand("sign", "print FILE with its DKIM-Signature fields");
    sig->add_option("--keys", keys, "key table file")->required();
    sig->add_option("--time", now_s, "t= (seconds since the epoch; default now)");
    sig->add_option("--expire", expire_s, "x= is t= plus this many seconds (0: no x=)");
    sig->add_option("--chunk", chunk, "feed the signer this many bytes at a time");
    sig->add_option("file", file, "message, CRLF line ends")->required();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (gen->parsed()) return genkey(algorithm, bits);
    DkimKeyTable table;
    std::string error;
    if (!table.load_file(keys, &error)) {
        std::fprintf(stderr, "ringmail-dkim: %s\n", error.c_str());
        return 2;
    }
    if (rec->parsed()) return dns(table);
    return sign(table, file, now_s, expire_s, chunk);
}
