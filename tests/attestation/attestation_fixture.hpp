// Shared by the attestation tests: the event logs recorded from QEMU boots of the minimal debug
// image (tests/attestation/data/README.md says how they were made), the reference facts of that
// image's UKI, and a swtpm that holds a recorded boot's PCRs with an attestation key made by
// tpm2-tools, to quote them.
#pragma once

#include <array>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "attestation/eventlog.hpp"
#include "attestation/reference.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "tests/support/swtpm_fixture.hpp"
#include "tests/support/test_support.hpp"

namespace cairn::test {

inline std::filesystem::path attestation_data() { return source_dir() / "tests/attestation/data"; }

// The recorded boots: "sb-on" (Secure Boot on, snakeoil keys) and "sb-off" (plain OVMF).
inline std::string recorded_log(const std::string& boot) { return read_file(attestation_data() / boot / "eventlog.bin"); }

inline std::string hex_bytes(const std::string& hex) {
    const auto v = from_hex(hex, "hex");
    return std::string(v.begin(), v.end());
}
inline std::string hex_of(std::string_view s) { return to_hex({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }

// PCR values (SHA-256 bank) read from /sys/class/tpm/tpm0/pcr-sha256 in the same boot.
inline std::map<unsigned, std::string> recorded_pcrs(const std::string& boot) {
    std::map<unsigned, std::string> out;
    std::istringstream in(read_file(attestation_data() / boot / "pcrs-sha256.txt"));
    unsigned pcr;
    std::string hex;
    while (in >> pcr >> hex) out[pcr] = hex_bytes(hex);
    return out;
}

// key=value lines of data/uki-facts.txt.
inline std::map<std::string, std::string> uki_facts() {
    std::map<std::string, std::string> out;
    std::istringstream in(read_file(attestation_data() / "uki-facts.txt"));
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const auto eq = line.find('=');
        if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return out;
}

inline attestation::Sha256 sha256_field(const std::string& hex) {
    const auto v = from_hex(hex, "sha256");
    if (v.size() != 32) fail("not a SHA-256: " + hex);
    attestation::Sha256 d{};
    std::copy(v.begin(), v.end(), d.begin());
    return d;
}

// The reference document of the recorded image, built from uki-facts.txt (computed from the
// image's files, not from the logs): slot "a" is the recorded image's UKI; slot "b" a different
// (made-up) UKI, so that matching picks the right one.
inline attestation::ReferenceDocument recorded_reference() {
    auto f = uki_facts();
    attestation::ReferenceDocument doc;
    doc.image = "cairn-minimal";
    doc.version = "0.1.0";
    doc.uki_signer_certificate = sha256_field(f.at("signer_certificate_sha256"));
    attestation::SlotReference a;
    a.slot = "a";
    a.kernel_release = f.at("kernel_release");
    a.uki_authenticode = sha256_field(f.at("uki_authenticode"));
    a.pcr11 = {sha256_field(f.at("pcr11")), sha256_field(f.at("pcr11_sysinit_ready"))};
    a.pcr9 = sha256_field(f.at("pcr9"));
    a.cmdline_event = sha256_field(f.at("cmdline_event"));
    a.initrd_event = sha256_field(f.at("initrd_event"));
    attestation::SlotReference b = a;
    b.slot = "b";
    b.kernel_release = "6.1.0-99-cloud-amd64";
    b.uki_authenticode[0] ^= 0xff;
    b.pcr11 = {sha256_field(std::string(64, '1'))};
    b.pcr9[0] ^= 0xff;
    doc.slots = {a, b};
    return doc;
}

// A swtpm whose SHA-256 PCRs are made to equal a recorded boot's (by extending every event's
// digest of the log in order), with an EK and an AK made by tpm2-tools.
class QuoteFixture : public SwtpmFixture {
protected:
    std::filesystem::path dir() const { return scratch.path(); }
    std::string path(const std::string& name) const { return (scratch / name).string(); }

    // Extends the swtpm's SHA-256 PCRs with the log's digests, in order.
    void extend_log(const std::string& log_bytes) {
        const attestation::EventLog log = attestation::parse_event_log(log_bytes, "log");
        std::vector<std::string> argv = {"tpm2_pcrextend"};
        for (const auto& e : log.events) {
            if (e.type == attestation::event_type::no_action) continue;
            argv.push_back(std::to_string(e.pcr) + ":sha256=" + hex_of(*e.digest(attestation::alg_sha256)));
        }
        run_checked(argv, tools());
    }
    void extend(unsigned pcr, const std::string& digest) {
        run_checked({"tpm2_pcrextend", std::to_string(pcr) + ":sha256=" + hex_of(digest)}, tools());
    }

    // tpm2_createek (once) + tpm2_createak (`alg` "rsa" or "ecc"): <name>.pub (TPM2B_PUBLIC),
    // <name>.pem, <name>.ctx, <name>.name. Returns <name>.pub's bytes.
    std::string make_ak(const std::string& alg, const std::string& name = "ak") {
        if (!std::filesystem::exists(path("ek.pub"))) {
            run_checked({"tpm2_createek", "-c", "0x81010001", "-G", "rsa", "-u", path("ek.pub")}, tools());
            run({"tpm2_flushcontext", "-t"}, tools());
        }
        run_checked({"tpm2_createak", "-C", "0x81010001", "-c", path(name + ".ctx"), "-G", alg, "-g", "sha256", "-s", alg == "ecc" ? "ecdsa" : "rsassa",
                     "-u", path(name + ".pub"), "-n", path(name + ".name")},
                    tools());
        run({"tpm2_flushcontext", "-t"}, tools());
        run({"tpm2_flushcontext", "-s"}, tools());
        run_checked({"tpm2_readpublic", "-c", path(name + ".ctx"), "-f", "pem", "-o", path(name + ".pem")}, tools());
        run({"tpm2_flushcontext", "-t"}, tools());
        return read_file(path(name + ".pub"));
    }

    struct Quoted {
        std::string attest, signature;
    };
    // tpm2_quote of `pcrs` (SHA-256) with `nonce`: q.msg (TPMS_ATTEST), q.sig (TPMT_SIGNATURE), q.pcrs.
    Quoted quote(const std::string& nonce, const std::string& pcrs) {
        run_checked({"tpm2_quote", "-c", path("ak.ctx"), "-l", "sha256:" + pcrs, "-q", hex_of(nonce), "-m", path("q.msg"), "-s", path("q.sig"),
                     "-o", path("q.pcrs"), "-g", "sha256"},
                    tools());
        run({"tpm2_flushcontext", "-t"}, tools());
        return {read_file(path("q.msg")), read_file(path("q.sig"))};
    }
    // tpm2_checkquote's verdict on q.msg/q.sig/q.pcrs (or other files) with `nonce`.
    int checkquote(const std::string& nonce, const std::string& msg = "q.msg", const std::string& sig = "q.sig") {
        return run({"tpm2_checkquote", "-u", path("ak.pem"), "-m", path(msg), "-s", path(sig), "-f", path("q.pcrs"), "-g", "sha256", "-q",
                    hex_of(nonce)},
                   tools())
            .exit_code;
    }
};

}  // namespace cairn::test
