// Boot scenarios (CTest label `qemu`): images Cairn builds from the shipped recipes, booted in
// QEMU with OVMF Secure Boot and swtpm. Each test works on its own sparse copy of the disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "imager/uki.hpp"
#include "partitions/gpt.hpp"
#include "qemu/machine.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace std::chrono_literals;
using cairn::test::Scratch;
using nlohmann::json;
namespace fs = std::filesystem;

using namespace cairn::test;


// (a) Secure Boot on, root on dm-verity, mounted read-only, `ready` with slot, version and root hash.
TEST(Boot, MinimalBootsToReadyFromAVerifiedReadOnlyRoot) {
    Booted b("minimal");
    auto& m = b.start();
    size_t at = m.wait_for("cairn: ready", 180s);
    std::string line = m.console().substr(at, m.console().find('\n', at) - at);
    json manifest = manifest_of("minimal");
    EXPECT_NE(line.find("slot=a"), std::string::npos) << line;
    EXPECT_NE(line.find("version=" + manifest["recipe"]["version"].get<std::string>()), std::string::npos) << line;
    EXPECT_NE(line.find("root=" + manifest["slots"]["a"]["verity"]["root_hash"].get<std::string>()), std::string::npos) << line;
    EXPECT_NE(line.find("rootdev=/dev/mapper/root"), std::string::npos) << line;
    EXPECT_NE(line.find("options=ro,"), std::string::npos) << line;
    EXPECT_NE(m.console().find("Secure boot enabled"), std::string::npos) << "the kernel saw Secure Boot on";
    EXPECT_EQ(m.console().find("cairn-init: FATAL"), std::string::npos);
}

// (b) and (f): /etc, /home, /root, /var and the log partition keep what was written across a
// reboot, while the root partition stays bit for bit what the image shipped.
TEST(Boot, WritesSurviveARebootAndTheRootDoesNot) {
    Booted b("minimal-debug");
    json manifest = manifest_of("minimal-debug");
    const uint64_t root_offset = offset_of(manifest, "root_a");
    const uint64_t root_size = manifest["rootfs"]["size"];
    const std::string root_before = sha256_of_range(b.disk, root_offset, root_size);

    auto& m = b.start();
    wait_for_shell(m);
    shell(m, "echo etc-kept > /etc/cairn-test && echo home-kept > /home/cairn-test && echo root-kept > /root/cairn-test && "
             "echo var-kept > /var/cairn-test && echo log-kept > /var/log/cairn-test && sync");
    EXPECT_NE(shell(m, "touch /usr/cairn-test 2>&1").find("Read-only file system"), std::string::npos);
    size_t before_reboot = m.console().size();
    m.send("reboot -f\n");
    wait_for_shell(m, before_reboot);
    std::string out = shell(m, "cat /etc/cairn-test /home/cairn-test /root/cairn-test /var/cairn-test /var/log/cairn-test");
    for (const char* word : {"etc-kept", "home-kept", "root-kept", "var-kept", "log-kept"}) EXPECT_NE(out.find(word), std::string::npos) << word << "\n" << out;
    EXPECT_NE(shell(m, "grep ' /var/log ' /proc/mounts").find("/dev/vda7"), std::string::npos) << "the log partition is mounted at /var/log";
    m.kill();
    EXPECT_EQ(sha256_of_range(b.disk, root_offset, root_size), root_before) << "root_a changed";
}

// (c) One flipped byte in root_a that the boot reads: cairn-init refuses, says why, reboots.
TEST(Boot, AFlippedRootByteIsRefusedNeverMounted) {
    Booted b("minimal");
    json manifest = manifest_of("minimal");
    flip_byte(b.disk, offset_of(manifest, "root_a") + 1024 + 1);  // inside the erofs superblock, read at mount
    auto& m = b.start();
    size_t fatal = m.wait_for("cairn-init: FATAL", 180s);
    m.wait_for("cairn-init: rebooting", 30s);
    std::string console = m.console();
    EXPECT_NE(console.find("root_a", fatal), std::string::npos) << console.substr(fatal, 300);
    EXPECT_EQ(console.find("switching to"), std::string::npos) << "the damaged root was mounted";
    EXPECT_EQ(console.find("cairn: ready"), std::string::npos);
    // It really reboots: the firmware starts the kernel again.
    m.wait_for_after("Linux version", console.find("Linux version") + 1, 120s);
}

// (d) An unsigned UKI, or one signed with a key the firmware does not trust, is refused by the firmware.
class BadSignature : public ::testing::TestWithParam<std::string> {};

TEST_P(BadSignature, TheFirmwareRefusesTheUki) {
    Booted b("minimal");
    json manifest = manifest_of("minimal");
    fs::path uki = b.dir / "bad.efi";
    fs::path unsigned_uki = b.dir / "unsigned.efi";
    // Strip the signature from the shipped UKI: the same image, unsigned.
    run_checked({"cp", (image_dir("minimal") / "uki_a.efi").string(), unsigned_uki.string()});
    run_checked({"sbattach", "--remove", unsigned_uki.string()});
    if (GetParam() == "unsigned") {
        fs::copy_file(unsigned_uki, uki);
    } else {
        run_checked({"openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=not trusted", "-days", "30",
                     "-keyout", (b.dir / "other.key").string(), "-out", (b.dir / "other.pem").string()});
        imager::sign_pe(unsigned_uki, uki, imager::SigningKey{b.dir / "other.key", b.dir / "other.pem", ""}, 1700000000);
    }
    for (const char* esp : {"esp_a", "esp_b"})
        run_checked({"mcopy", "-o", "-i", b.disk.string() + "@@" + std::to_string(offset_of(manifest, esp)), uki.string(), "::/EFI/BOOT/BOOTX64.EFI"},
                    {.extra_env = {"MTOOLS_SKIP_CHECK=1"}});
    auto& m = b.start();
    m.wait_for("Access Denied", 180s);
    std::this_thread::sleep_for(5s);
    EXPECT_EQ(m.console().find("Linux version"), std::string::npos) << "the kernel started from a refused UKI";
}

INSTANTIATE_TEST_SUITE_P(Uki, BadSignature, ::testing::Values("unsigned", "untrusted"));

// (e) On a disk larger than the image, the first boot grows the data partition to the end.
TEST(Boot, FirstBootGrowsDataOnALargerDisk) {
    const uint64_t extra = 512ull << 20;
    Booted b("minimal", extra);
    auto& m = b.start();
    m.wait_for("growing vda8", 180s);
    m.wait_for("cairn: ready", 120s);
    m.kill();
    partitions::GptTable t = partitions::read_gpt(b.disk);
    const auto& data = t.entries.back();
    EXPECT_EQ(data.label, "data");
    EXPECT_GE(data.offset + data.size + (2ull << 20), t.disk_size) << "data ends within 2 MiB of the disk's end";
    json manifest = manifest_of("minimal");
    for (const auto& p : manifest["partitions"]) {
        if (p["label"] == "data") {
            EXPECT_EQ(data.size, p["size"].get<uint64_t>() + extra);
        }
    }
}

// The firewall is loaded at boot, before the device services and `ready`, with the recipe's policy.
TEST(Boot, TheFirewallIsLoadedBeforeReady) {
    Booted b("minimal-debug");
    qemu::Machine& m = b.start();
    wait_for_shell(m);
    const std::string console = m.console();
    size_t loaded = console.find("cairn: firewall loaded");
    ASSERT_NE(loaded, std::string::npos) << m.console_tail(40);
    EXPECT_LT(loaded, console.find("cairn: ready"));
    std::string out = shell(m, "cairn-firewall status");
    EXPECT_NE(out.find("firewall: loaded (table inet cairn)"), std::string::npos) << out;
    EXPECT_NE(out.find("ssh brute force: block the source (IPv4)"), std::string::npos) << out;
    EXPECT_NE(out.find("accept ssh"), std::string::npos) << out;
}
