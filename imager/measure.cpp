#include "imager/measure.hpp"

#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstdio>
#include <optional>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/openssl.hpp"
#include "imager/authenticode.hpp"
#include "imager/systemd.hpp"
#include "imager/uki.hpp"
#include "updater/signature.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

namespace {

// What systemd's mangle_stub_cmdline takes for whitespace: control characters, space and DEL.
bool is_whitespace16(uint32_t c) { return c <= 0x20 || c == 0x7f; }

// One UTF-8 sequence at `s` (at most `n` bytes): its code point, or UINT32_MAX when invalid; its
// length in bytes (as systemd's utf8_to_unichar counts it: an invalid lead byte is one byte).
std::pair<uint32_t, size_t> utf8_char(const unsigned char* s, size_t n) {
    const unsigned char lead = s[0];
    size_t len;
    uint32_t c;
    if (lead < 0x80) return {lead, 1};
    if ((lead & 0xe0) == 0xc0) len = 2, c = lead & 0x1f;
    else if ((lead & 0xf0) == 0xe0) len = 3, c = lead & 0x0f;
    else if ((lead & 0xf8) == 0xf0) len = 4, c = lead & 0x07;
    else if ((lead & 0xfc) == 0xf8) len = 5, c = lead & 0x03;
    else if ((lead & 0xfe) == 0xfc) len = 6, c = lead & 0x01;
    else return {UINT32_MAX, 1};
    if (len > n) return {UINT32_MAX, len};
    for (size_t i = 1; i < len; ++i) {
        if ((s[i] & 0xc0) != 0x80) return {UINT32_MAX, len};
        c = c << 6 | (s[i] & 0x3f);
    }
    return {c, len};
}

}  // namespace

Digest pcr_extend(const Digest& pcr, const Digest& digest) {
    Sha256 h;
    h.update(pcr.data(), pcr.size());
    h.update(digest.data(), digest.size());
    return h.final();
}

Digest stub_pcr11(const std::map<std::string, std::string>& sections) {
    Digest pcr{};
    for (const char* name : stub_measured_sections) {
        auto it = sections.find(name);
        if (it == sections.end() || it->second.empty()) continue;  // the stub skips sections of size 0
        pcr = pcr_extend(pcr, sha256(std::string_view(name, std::char_traits<char>::length(name) + 1)));  // with its NUL
        pcr = pcr_extend(pcr, sha256(it->second));
    }
    return pcr;
}

std::vector<Digest> pcr11_chain(const Digest& stub, const std::vector<std::string>& words) {
    std::vector<Digest> chain = {stub};
    for (const std::string& w : words) chain.push_back(pcr_extend(chain.back(), sha256(w)));
    return chain;
}

std::string stub_load_options(std::string_view section) {
    std::vector<uint16_t> units;
    const auto* s = reinterpret_cast<const unsigned char*>(section.data());
    size_t n = section.size();
    while (n > 0 && *s != 0) {
        auto [c, len] = utf8_char(s, n);
        s += std::min(len, n);
        n -= std::min(len, n);
        if (c <= 0xd7ff || (c >= 0xe000 && c <= 0xffff)) units.push_back(static_cast<uint16_t>(c));
    }
    // Leading whitespace goes, inner whitespace becomes one space each, trailing whitespace goes.
    std::vector<uint16_t> mangled;
    size_t last = 0;  // mangled's length up to its last non-whitespace character
    size_t i = 0;
    while (i < units.size() && is_whitespace16(units[i])) ++i;
    for (; i < units.size(); ++i) {
        if (is_whitespace16(units[i])) {
            mangled.push_back(' ');
            continue;
        }
        mangled.push_back(units[i]);
        last = mangled.size();
    }
    mangled.resize(last);
    std::string out;
    out.reserve((mangled.size() + 1) * 2);
    for (uint16_t u : mangled) {
        out += static_cast<char>(u & 0xff);
        out += static_cast<char>(u >> 8);
    }
    out.append(2, '\0');
    return out;
}

std::vector<std::string> pcrphase_words(const Tree& tree) {
    if (!runs_systemd(tree)) return {};
    const std::string what = "systemd-pcrphase units";
    // The entry at `path`; for a path under /usr/lib, in a tree without merged /usr, the one under /lib.
    auto entry = [&](const std::string& path) -> std::optional<std::pair<std::string, Meta>> {
        std::vector<std::string> candidates = {path};
        if (path.starts_with("/usr/lib/")) candidates.push_back(path.substr(4));
        for (const std::string& p : candidates) {
            const std::string canonical = tree.resolve(p, what);
            if (auto m = tree.meta(canonical)) return std::pair{canonical, *m};
        }
        return std::nullopt;
    };
    auto regular = [&](const std::string& path) {
        auto e = entry(path);
        return e && S_ISREG(e->second.mode);
    };
    if (!regular("/usr/lib/systemd/systemd-pcrphase")) return {};
    std::vector<std::string> words;
    for (const auto& [unit, word] : {std::pair{"systemd-pcrphase-sysinit.service", "sysinit"}, std::pair{"systemd-pcrphase.service", "ready"}}) {
        const std::string name = unit;
        if (!regular(std::string(systemd_paths::units) + "/" + name)) continue;
        // Masked: a link to /dev/null, or an empty file, in the admin folder (what `systemctl mask` makes).
        if (auto admin = entry(std::string(systemd_paths::admin_units) + "/" + name)) {
            std::error_code ec;
            const fs::path host = tree.host(admin->first);
            if (S_ISLNK(admin->second.mode) && fs::read_symlink(host, ec) == "/dev/null") continue;
            if (S_ISREG(admin->second.mode) && fs::file_size(host, ec) == 0) continue;
        }
        if (entry(std::string(systemd_paths::units) + "/sysinit.target.wants/" + name) ||
            entry(std::string(systemd_paths::admin_units) + "/sysinit.target.wants/" + name))
            words.push_back(word);
    }
    return words;
}

attestation::SlotReference measure_uki(const fs::path& uki, const std::string& slot, const std::string& kernel_release,
                                       const std::vector<std::string>& pcrphase) {
    attestation::SlotReference r;
    r.slot = slot;
    r.kernel_release = kernel_release;
    r.uki_authenticode = authenticode_digest(read_file(uki), uki.string());
    std::vector<std::string> names(stub_measured_sections.begin(), stub_measured_sections.end());
    const auto sections = pe_section_contents(uki, names);
    for (const char* needed : {".linux", ".cmdline", ".initrd"})
        if (!sections.count(needed) || sections.at(needed).empty())
            fail(uki.string() + ": no " + needed + " section: its measurements cannot be predicted");
    r.pcr11 = pcr11_chain(stub_pcr11(sections), pcrphase);
    r.cmdline_event = sha256(stub_load_options(sections.at(".cmdline")));
    r.initrd_event = sha256(sections.at(".initrd"));
    r.pcr9 = pcr_extend(pcr_extend(Digest{}, r.cmdline_event), r.initrd_event);
    return r;
}

void check_attestation_signer(const Recipe& recipe) {
    const auto& a = recipe.attestation;
    const std::string where = a.where.empty() ? recipe.file.string() + ": attestation" : a.where;
    try {
        updater::check_bundle_signer(a.cert);
        const std::string probe = "cairn build: attestation signer check";
        const std::string signature = updater::cms_sign(probe, a.key, a.cert, a.key_passphrase);
        updater::cms_verify(probe, signature, recipe.update.trust_anchor, a.cert.string());
    } catch (const Error& e) {
        fail(where + ": " + e.what() + " (the reference document is signed and checked like an update bundle, under update.trust_anchor " +
             recipe.update.trust_anchor.string() + ")");
    }
    PkeyPtr key = load_private_key(a.key, a.key_passphrase);
    if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA)
        std::fprintf(stderr,
                     "cairn: warning: %s: attestation.key %s is not an RSA key: its signature over the reference document, which goes on "
                     "the ESPs, differs on every build, so two builds of this recipe no longer give the same disk.raw\n",
                     where.c_str(), a.key.c_str());
}

std::string sign_reference(std::string_view document, const Recipe& recipe, int64_t epoch) {
    const auto& a = recipe.attestation;
    return updater::cms_sign(document, a.key, a.cert, a.key_passphrase, epoch);
}

Digest certificate_sha256(const fs::path& pem) {
    X509Ptr cert = load_certificate(pem);
    unsigned char* der = nullptr;
    const int size = i2d_X509(cert.get(), &der);
    OpensslBufferPtr owned(der);
    if (size <= 0) fail(pem.string() + ": cannot encode the certificate: " + openssl_error());
    return sha256(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(size)));
}

}  // namespace cairn::imager
