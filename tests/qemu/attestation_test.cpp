// Boot attestation on images Cairn builds (CTest label `qemu`; issue 14's scenarios): the debug
// image's own agent (cairn-attestd, `cairnctl attest`) with the VM's TPM (swtpm) and its real
// event log, against the real cairn-verifier on the host, reached over QEMU's user network
// (10.0.2.2) with real TLS. The verifier is told nothing but the device's EK: the reference
// values come from the booted slot's ESP, signed by the image build. Scenario (d), a new slot after
// an A/B update, is in update_test.cpp, on the update scenario's own boots.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "imager/uki.hpp"
#include "tests/support/host_verifier.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool has_check(const json& record, const std::string& code) {
    for (const json& c : record.value("failedChecks", json::array()))
        if (c.value("code", "") == code) return true;
    return false;
}

std::string text(const json& record, const char* key) { return record.value(key, ""); }

// Slot a's UKI of the debug image with `extra` added to its command line, signed with the key the
// firmware trusts (Debian's OVMF snakeoil key, as the recipe signs): it boots, but it is not one of
// the image's UKIs.
fs::path edited_uki(const fs::path& dir, const std::string& extra) {
    const fs::path original = image_dir("minimal-debug") / "uki_a.efi";
    const auto sections = imager::pe_section_contents(original, {".linux", ".initrd", ".cmdline", ".osrel", ".uname"});
    write_file_atomic(dir / "linux", sections.at(".linux"));
    write_file_atomic(dir / "initrd", sections.at(".initrd"));
    imager::UkiParts parts;
    parts.kernel = dir / "linux";
    parts.initrd = dir / "initrd";
    std::string cmdline = sections.at(".cmdline");
    while (!cmdline.empty() && (cmdline.back() == '\0' || cmdline.back() == '\n')) cmdline.pop_back();
    parts.cmdline = cmdline + " " + extra;
    parts.os_release = sections.at(".osrel");
    if (sections.count(".uname")) parts.uname = sections.at(".uname");
    imager::assemble_uki(parts, dir / "edited-unsigned.efi");
    imager::sign_pe(dir / "edited-unsigned.efi", dir / "edited.efi",
                    imager::SigningKey{"/usr/share/ovmf/PkKek-1-snakeoil.key", "/usr/share/ovmf/PkKek-1-snakeoil.pem", "snakeoil"}, 1700000000);
    return dir / "edited.efi";
}

void put_uki_on_esp(const fs::path& disk, const std::string& esp, const fs::path& uki) {
    run_checked({"mcopy", "-o", "-i", disk.string() + "@@" + std::to_string(offset_of(manifest_of("minimal-debug"), esp)), uki.string(),
                 "::/EFI/BOOT/BOOTX64.EFI"},
                {.extra_env = {"MTOOLS_SKIP_CHECK=1"}});
}

}  // namespace

// (a) A fresh image, enrolled by its EK and given a verifier, attests Healthy by itself. (e) With
// the verifier down the device says Unknown, why, and keeps the last good record; back up, Healthy
// again. (f) Someone on the network who kept a round's evidence cannot use it later: sent again it
// is refused (its nonce is spent), and with a fresh nonce it is refused too (the quote is over the
// old one); the device's status stays what its own round made it.
TEST(Attestation, AFreshImageIsHealthyUnknownWhileTheVerifierIsDownAndAKeptRoundIsRefused) {
    Scratch dir;
    HostVerifier verifier(dir / "verifier");
    Booted b("minimal-debug");
    b.drives = {verifier.give_tar()};
    qemu::Machine& m = b.start();
    wait_for_shell(m);
    const size_t from = m.console().size();
    const std::string id = enroll_and_configure_attestation(m, verifier, "/dev/vdb");

    // (a) The agent starts once configured, binds its AK and attests.
    m.wait_for_after("cairn-attestd: Healthy", from, 240s);
    const json healthy = shell_json(m, "cairnctl attest status --json");
    EXPECT_EQ(text(healthy, "healthStatus"), "Healthy") << healthy.dump();
    EXPECT_EQ(text(healthy, "attestSecureBootEnabled"), "Enabled");
    EXPECT_EQ(text(healthy, "attestationCertValidated"), "Valid");
    EXPECT_EQ(text(healthy, "bootIntegrityValidated"), "Valid");
    EXPECT_EQ(text(healthy, "provisioningState"), "Succeeded");
    EXPECT_EQ(text(healthy, "errorMessage"), "");
    EXPECT_EQ(text(healthy, "slot"), "a");
    EXPECT_EQ(text(healthy, "imageVersion"), "0.1.0");
    EXPECT_EQ(text(healthy, "deviceId"), id);
    EXPECT_FALSE(healthy.value("stale", true)) << "a record just made is not stale";
    const std::string uname = shell(m, "uname -r");
    EXPECT_FALSE(text(healthy, "linuxKernelVersion").empty());
    EXPECT_NE(uname.find(text(healthy, "linuxKernelVersion")), std::string::npos) << uname;
    json stored = verifier.status(id);
    for (const char* device_only : {"age", "stale", "lastGood", "lastAttempt"}) stored[device_only] = healthy.value(device_only, json());
    EXPECT_EQ(stored, healthy) << "the device keeps what the verifier stored";

    // (e) The verifier down: Unknown, with the reason; the Healthy record kept as the last good one.
    verifier.stop();
    const json down = shell_json(m, "cairnctl attest now --json", 120s);
    EXPECT_EQ(text(down, "healthStatus"), "Unknown") << down.dump();
    EXPECT_NE(text(down, "errorMessage").find("verifier unreachable"), std::string::npos) << down.dump();
    EXPECT_EQ(text(down["lastGood"], "healthStatus"), "Healthy") << down.dump();
    EXPECT_EQ(text(down["lastGood"], "timestamp"), text(healthy, "timestamp"));
    verifier.start();
    const json again = shell_json(m, "cairnctl attest now --json", 120s);
    EXPECT_EQ(text(again, "healthStatus"), "Healthy") << again.dump();
    EXPECT_GT(text(again, "timestamp"), text(healthy, "timestamp"));

    // (f) A round through a recorder on the network.
    const uint16_t recorder = verifier.start_recorder();
    write_guest_file(m, "/tmp/through-recorder.toml", verifier.guest_config(id, recorder));
    const json recorded_round = shell_json(m, "cairnctl attest now --json --config /tmp/through-recorder.toml", 120s);
    EXPECT_EQ(text(recorded_round, "healthStatus"), "Healthy") << recorded_round.dump();
    std::string evidence, nonce_request;
    for (const auto& r : verifier.recorded()) {
        if (r.path == "/attest/v1/devices/" + id + "/evidence") evidence = r.body;
        if (r.path == "/attest/v1/devices/" + id + "/nonce") nonce_request = r.body;
    }
    ASSERT_FALSE(evidence.empty()) << "the recorder saw no evidence";
    ASSERT_FALSE(nonce_request.empty());
    const json before = verifier.status(id);
    EXPECT_EQ(text(before, "timestamp"), text(recorded_round, "timestamp"));

    const auto replayed = verifier.call("POST", "/attest/v1/devices/" + id + "/evidence", evidence);
    EXPECT_EQ(replayed.status, 409) << replayed.body;
    EXPECT_EQ(json::parse(replayed.body, nullptr, false).value("error", ""), "nonce-invalid") << replayed.body;
    // With a fresh nonce (asked for with the device's AK, which is public) in place of the spent one.
    const auto fresh = verifier.call("POST", "/attest/v1/devices/" + id + "/nonce", nonce_request);
    ASSERT_EQ(fresh.status, 200) << fresh.body;
    json forged = json::parse(evidence);
    forged["nonce"] = json::parse(fresh.body).at("nonce");
    const auto refused = verifier.call("POST", "/attest/v1/devices/" + id + "/evidence", forged.dump());
    EXPECT_EQ(refused.status, 403) << refused.body;
    EXPECT_NE(refused.body.find("quote-nonce-mismatch"), std::string::npos) << refused.body;
    EXPECT_EQ(verifier.status(id), before) << "a refused replay changed the device's status";
}

// (c) A UKI signed with the key the firmware trusts, but not one the image built (its command line
// edited), boots; the device is Unhealthy for its boot integrity. (b) The image's own UKI on the
// same disk and TPM with Secure Boot off: Unhealthy, "Secure Boot disabled".
TEST(Attestation, AnEditedUkiAndSecureBootOffAreUnhealthyWithTheirReasons) {
    Scratch dir;
    HostVerifier verifier(dir / "verifier");
    Booted b("minimal-debug");
    b.drives = {verifier.give_tar()};
    put_uki_on_esp(b.disk, "esp_a", edited_uki(dir.path(), "cairn.edited=1"));
    qemu::Machine& m = b.start();
    wait_for_shell(m);
    EXPECT_NE(shell(m, "cat /proc/cmdline").find("cairn.edited=1"), std::string::npos) << "the edited UKI did not boot";
    size_t from = m.console().size();
    const std::string id = enroll_and_configure_attestation(m, verifier, "/dev/vdb");
    m.wait_for_after("cairn-attestd: Unhealthy", from, 240s);
    const json edited = shell_json(m, "cairnctl attest status --json");
    EXPECT_EQ(text(edited, "healthStatus"), "Unhealthy") << edited.dump();
    EXPECT_EQ(text(edited, "bootIntegrityValidated"), "Invalid");
    EXPECT_EQ(text(edited, "attestSecureBootEnabled"), "Enabled");
    EXPECT_EQ(text(edited, "attestationCertValidated"), "Valid") << "the TPM's quote itself was sound";
    EXPECT_NE(text(edited, "errorMessage").find("boot integrity"), std::string::npos) << edited.dump();
    EXPECT_TRUE(has_check(edited, "uki-mismatch")) << edited.dump();
    EXPECT_EQ(verifier.status(id).value("healthStatus", ""), "Unhealthy");

    // (b) The image's UKI back, Secure Boot off; the TPM (EK, bound AK) and the data partition
    // (the agent's configuration) stay.
    m.send("sync; poweroff -f\n");
    m.wait_exit(120s);
    put_uki_on_esp(b.disk, "esp_a", image_dir("minimal-debug") / "uki_a.efi");
    fs::create_directories(b.dir / "machine-no-secure-boot");
    run_checked({"cp", "-a", (b.dir / "machine/tpm").string(), (b.dir / "machine-no-secure-boot/tpm").string()});
    b.secure_boot = false;
    qemu::Machine& insecure = b.start();
    insecure.wait_for("cairn-attestd: Unhealthy", 300s);
    wait_for_shell(insecure);
    const json off = shell_json(insecure, "cairnctl attest status --json");
    EXPECT_EQ(text(off, "healthStatus"), "Unhealthy") << off.dump();
    EXPECT_EQ(text(off, "attestSecureBootEnabled"), "Disabled");
    EXPECT_NE(text(off, "errorMessage").find("Secure Boot disabled"), std::string::npos) << off.dump();
    EXPECT_TRUE(has_check(off, "secure-boot-disabled")) << off.dump();
    EXPECT_FALSE(has_check(off, "uki-mismatch")) << "the image's own UKI booted: " << off.dump();
    EXPECT_EQ(text(off, "attestationCertValidated"), "Valid");
    EXPECT_EQ(text(off, "deviceId"), id);
}
