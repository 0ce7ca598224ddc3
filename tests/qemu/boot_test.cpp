// Boot scenarios (CTest label `qemu`): images Cairn builds from the shipped recipes, booted in
// QEMU with OVMF Secure Boot and swtpm. Each test works on its own sparse copy of the disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "imager/disk_formats.hpp"
#include "imager/uki.hpp"
#include "partitions/gpt.hpp"
#include "partitions/layout.hpp"
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
    const std::string line = wait_for_line(m, "cairn: ready", 180s);
    json manifest = manifest_of("minimal");
    EXPECT_NE(line.find("slot=a"), std::string::npos) << line;
    EXPECT_NE(line.find("version=" + manifest["recipe"]["version"].get<std::string>()), std::string::npos) << line;
    EXPECT_NE(line.find("root=" + manifest["slots"]["a"]["verity"]["root_hash"].get<std::string>()), std::string::npos) << line;
    EXPECT_NE(line.find("rootdev=/dev/mapper/root"), std::string::npos) << line;
    EXPECT_NE(line.find("options=ro,"), std::string::npos) << line;
    EXPECT_NE(m.console().find("Secure boot enabled"), std::string::npos) << "the kernel saw Secure Boot on";
    EXPECT_EQ(m.console().find("cairn-init: FATAL"), std::string::npos);
}

// `cairn build --format qcow2` (QEMU/KVM, Proxmox): the minimal image converted to qcow2 boots to
// `ready` from the qcow2 alone, and the guest's writes (the first boot formats log and data) land
// in the qcow2 file, which qemu-img still finds consistent afterwards.
TEST(Boot, MinimalBootsToReadyFromItsQcow2) {
    Scratch dir;
    const fs::path raw = dir / "disk.raw", qcow2 = dir / "disk.qcow2";
    run_checked({"cp", "--sparse=always", (image_dir("minimal") / "disk.raw").string(), raw.string()});
    imager::write_disk_formats(raw, {imager::DiskFormat::Raw, imager::DiskFormat::Qcow2}, dir.path());
    fs::remove(raw);  // nothing else to boot from
    const uint64_t size_before = fs::file_size(qcow2);
    qemu::Config c;
    c.disk = qcow2;
    c.state_dir = dir / "machine";
    {
        qemu::Machine m(c);
        m.start();
        const std::vector<std::string> argv = m.qemu_command();
        EXPECT_NE(std::find(argv.begin(), argv.end(), "if=none,id=disk0,format=qcow2,file=" + qcow2.string()), argv.end());
        const std::string line = wait_for_line(m, "cairn: ready", 180s);
        EXPECT_NE(line.find("slot=a"), std::string::npos) << line;
        EXPECT_NE(line.find("root=" + manifest_of("minimal")["slots"]["a"]["verity"]["root_hash"].get<std::string>()), std::string::npos) << line;
    }  // ~Machine: SIGTERM, on which QEMU closes the qcow2 cleanly (power_off would end in SIGKILL: no ACPI handler here)
    EXPECT_GT(fs::file_size(qcow2), size_before) << "the guest's writes did not go into the qcow2";
    RunResult check = run({"qemu-img", "check", "-f", "qcow2", qcow2.string()});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
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

    // The data partition's superblock magic damaged (its backups intact): repaired, never
    // reformatted; everything on it is still there.
    const uint64_t data_offset = offset_of(manifest, "data");
    {
        UniqueFd fd = open_file(b.disk, O_RDWR);
        const char zeros[2] = {0, 0};
        pwrite_exact(fd.get(), zeros, 2, data_offset + 1024 + 56, b.disk.string());
    }
    auto& repaired = b.start();
    wait_for_shell(repaired);
    EXPECT_NE(repaired.console().find("repairing with e2fsck -y"), std::string::npos) << repaired.console_tail(40);
    EXPECT_EQ(repaired.console().find("formatting vda8"), std::string::npos) << "a damaged data partition was reformatted";
    out = shell(repaired, "cat /etc/cairn-test /var/cairn-test");
    for (const char* word : {"etc-kept", "var-kept"}) EXPECT_NE(out.find(word), std::string::npos) << word << "\n" << out;
    repaired.kill();

    // Beyond repair (every superblock gone): the device boots degraded on a tmpfs /var, says so,
    // and the partition is left as it is for someone to look at.
    {
        UniqueFd fd = open_file(b.disk, O_RDWR);
        const std::string zeros(1 << 20, '\0');
        for (uint64_t at = 0; at < size_of(manifest, "data"); at += 8ull << 20)  // every block group's start
            pwrite_exact(fd.get(), zeros.data(), std::min<uint64_t>(zeros.size(), size_of(manifest, "data") - at), data_offset + at, b.disk.string());
    }
    auto& degraded = b.start();
    wait_for_shell(degraded);
    EXPECT_NE(degraded.console().find("cairn-init: DEGRADED: data partition"), std::string::npos) << degraded.console_tail(40);
    EXPECT_NE(shell(degraded, "grep ' /var ' /proc/mounts").find("tmpfs"), std::string::npos);
    EXPECT_NE(shell(degraded, "cat /run/cairn/degraded").find("data partition"), std::string::npos);
    EXPECT_EQ(degraded.console().find("formatting vda8"), std::string::npos);
}

// (c) One flipped byte in root_a that the boot reads: cairn-init refuses, says why, and the next
// boot falls back to slot B (a fresh image on a blank NVRAM: B is a verified copy) instead of
// rebooting into the damaged slot for ever. Boots after that stay on B.
TEST(Boot, AFlippedRootByteIsRefusedAndTheDeviceFallsBackToB) {
    Booted b("minimal");
    json manifest = manifest_of("minimal");
    flip_byte(b.disk, offset_of(manifest, "root_a") + 1024 + 1);  // inside the erofs superblock, read at mount
    auto& m = b.start();
    size_t fatal = m.wait_for("cairn-init: FATAL", 180s);
    m.wait_for("cairn-init: fallback: the other slot boots next", 30s);
    m.wait_for("cairn-init: rebooting", 30s);
    std::string console = m.console();
    EXPECT_NE(console.find("root_a", fatal), std::string::npos) << console.substr(fatal, 300);
    EXPECT_EQ(console.find("switching to"), std::string::npos) << "the damaged root was mounted";
    EXPECT_EQ(console.find("cairn: ready"), std::string::npos);
    // The firmware starts slot B, which comes up and reports what happened to A.
    size_t ready = m.wait_for("cairn: ready", 240s);
    console = m.console();
    EXPECT_NE(console.find("slot=b", ready), std::string::npos) << console.substr(ready, 200);
    m.wait_for("FALLBACK: slot a failed to boot", 60s);
    m.kill();
    // And it stays there: the next boot goes straight to B, no FATAL.
    auto& again = b.start();
    ready = again.wait_for("cairn: ready", 240s);
    EXPECT_NE(again.console().find("slot=b", ready), std::string::npos) << again.console_tail(20);
    EXPECT_EQ(again.console().find("cairn-init: FATAL"), std::string::npos) << again.console_tail(40);
}

// A second disk (a USB stick, another virtio disk) with partitions labelled `data` and `root_a`:
// its data partition would become /var and its overlay upper dir would lay a program into
// /etc/cairn/services.d, run as root. cairn-init takes every partition from the disk the signed
// command line names: the stranger is named on the console and ignored; its program never runs.
TEST(Boot, ASecondDiskWithOurLabelsIsIgnored) {
    Booted b("minimal-debug");
    // The hostile disk: root_a (garbage) and data (ext4 with a planted device service).
    const fs::path staging = b.dir / "planted";
    const fs::path service = staging / ".cairn/overlays/etc/upper/cairn/services.d/99-planted";
    write_text(service, "#!/bin/sh\necho PLANTED-PROGRAM-RAN > /dev/console\ntouch /run/planted\nexec sleep 100000\n");
    fs::permissions(service, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
    const fs::path data_fs = b.dir / "data.ext4";
    write_text(data_fs, "");
    fs::resize_file(data_fs, 16ull << 20);
    run_checked({"mkfs.ext4", "-q", "-F", "-L", "data", "-d", staging.string(), data_fs.string()});
    partitions::GptTable t;
    t.disk_guid = Uuid::derive("attacker", "disk");
    t.disk_size = 64ull << 20;
    t.entries.push_back({"root_a", partitions::type_for(partitions::Role::Root), Uuid::derive("attacker", "root"), 1ull << 20, 8ull << 20, 0});
    t.entries.push_back({"data", partitions::type_for(partitions::Role::Data), Uuid::derive("attacker", "data"), 9ull << 20, 16ull << 20, 0});
    const fs::path stick = b.dir / "stick.raw";
    write_text(stick, "");
    fs::resize_file(stick, t.disk_size);
    partitions::write_gpt(stick, t);
    {
        UniqueFd in = open_file(data_fs, O_RDONLY), out = open_file(stick, O_RDWR);
        copy_sparse(in.get(), 0, out.get(), 9ull << 20, 16ull << 20, data_fs.string());
    }
    b.drives = {stick};
    b.drives_writable = true;

    auto& m = b.start();
    wait_for_shell(m);
    const std::string console = m.console();
    EXPECT_NE(console.find("cairn-init: vdb (disk GUID " + t.disk_guid.str()), std::string::npos) << m.console_tail(60);
    EXPECT_NE(console.find("has root_a, data: ignored"), std::string::npos) << m.console_tail(60);
    EXPECT_NE(shell(m, "grep ' /var ' /proc/mounts").find("/dev/vda8"), std::string::npos) << "/var is the boot disk's data partition";
    std::this_thread::sleep_for(3s);  // the services had their time to start
    EXPECT_NE(shell(m, "ls /etc/cairn/services.d/ /run/planted 2>&1").find("No such file"), std::string::npos);
    EXPECT_EQ(m.console().find("PLANTED-PROGRAM-RAN"), std::string::npos) << "the planted program ran";
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

    // A policy with a mistake (in the writable /etc): the next boot loads the built-in lockdown
    // and says so, never running without a firewall.
    shell(m, "echo 'this is not toml [' > /etc/cairn/firewall.toml && sync");
    size_t before_reboot = m.console().size();
    m.send("reboot -f\n");
    wait_for_shell(m, before_reboot);
    const std::string after = m.console().substr(before_reboot);
    EXPECT_NE(after.find("FIREWALL POLICY REFUSED"), std::string::npos) << m.console_tail(40);
    EXPECT_EQ(after.find("cairn: firewall loaded"), std::string::npos);
    out = shell(m, "cairn-firewall status");
    EXPECT_NE(out.find("firewall: loaded (table inet cairn)"), std::string::npos) << out;
    EXPECT_NE(out.find("accept ssh"), std::string::npos) << out;
}
