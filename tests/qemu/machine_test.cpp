// The QEMU runner itself (CTest label `qemu`). Most tests boot the fixture's kernel directly with
// a tiny busybox initrd made here (a few seconds per boot under TCG); the last one boots the
// debug build of the minimal image from its disk and types on its console.
#include "qemu/machine.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "imager/cpio.hpp"
#include "imager/deb.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace std::chrono_literals;
using cairn::test::free_port;
using cairn::test::read_from;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

constexpr auto boot_timeout = 180s;  // TCG on a busy machine; a direct boot takes ~4-8 s here
const std::string up = "cairn-test: up";

// The guest's /init. The kernel hands `cairn_test=MODE` from its command line to it as $cairn_test:
// idle (default), poweroff, reboot, ignore-button (no ACPI handler: the power button does nothing),
// or shell (a shell reads commands from the console).
// It reports the TPM (version, and TPM2_ReadClock's answer, whose resetCount lives in the TPM's
// persistent state), serves `forwarded-ok` on TCP port 7777, then says "cairn-test: up".
const char* init_script = R"SH(#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin /etc/acpi/PWRF
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net button evdev; do
    insmod /m/$m.ko || echo "cairn-test: insmod $m failed"
done
if [ "$cairn_test" != ignore-button ]; then
    printf '#!/bin/sh\necho "cairn-test: power button"\npoweroff -f\n' > /etc/acpi/PWRF/00000080
    chmod +x /etc/acpi/PWRF/00000080
    acpid -c /etc/acpi -l /dev/console
fi
echo "cairn-test: tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo none)"
if [ -e /dev/tpm0 ]; then
    exec 3<>/dev/tpm0
    printf '\x80\x01\x00\x00\x00\x0a\x00\x00\x01\x81' >&3
    echo "cairn-test: readclock=$(od -An -tx1 -v <&3 | tr -d ' \n')"
    exec 3<&-
fi
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up
{ while true; do echo forwarded-ok | nc -l -p 7777; done & }
echo "cairn-test: boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "cairn-test: entropy=$(cat /proc/sys/kernel/random/entropy_avail)"
echo "cairn-test: up"
case "$cairn_test" in
    poweroff) poweroff -f ;;
    reboot) reboot -f ;;
    shell) exec sh </dev/console >/dev/console 2>&1 ;;
esac
while true; do sleep 1; done
)SH";

// Kernel modules the init loads (the cloud kernel builds these as modules), in load order.
const std::vector<std::string> guest_modules = {"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
                                                "failover",    "net_failover", "virtio_net", "button", "evdev"};

struct Guest {
    Scratch dir;
    fs::path kernel;  // the fixture's kernel: Debian's, signed by Debian (not by the snakeoil key OVMF trusts)
    fs::path initrd;
};

// Made once per test program: busybox from Debian's busybox-static, the modules from the
// fixture's kernel package (both through the imager's package cache).
std::unique_ptr<Guest> make_guest() {
    auto g = std::make_unique<Guest>();
    const fs::path images = test::test_images() / "minimal";
    if (!fs::exists(images / "vmlinuz") || !fs::exists(images / "manifest.json")) {
        run_checked({test::cairn_binary().string(), "build", (test::source_dir() / "recipes/minimal.toml").string(), "-o", images.string(),
                     "--quiet"},
                    {.extra_env = {"SOURCE_DATE_EPOCH=1700000000"}});
    }
    g->kernel = images / "vmlinuz";
    const std::string kernel_package = nlohmann::json::parse(read_file(images / "manifest.json"))["kernel"]["package"];
    const fs::path cache = imager::default_cache_dir();

    imager::Tree tree(g->dir / "tree");
    imager::ExtractOptions pick;
    pick.map = [](const std::string& name) -> std::optional<std::string> {
        if (name == "bin/busybox" || name == "usr/bin/busybox") return "/busybox";
        return std::nullopt;
    };
    imager::extract_deb(imager::fetch_deb("busybox-static", cache, "test guest"), tree, pick);
    pick.map = [](const std::string& name) -> std::optional<std::string> {
        fs::path p(name);
        if (p.extension() != ".ko") return std::nullopt;
        for (const auto& m : guest_modules)
            if (p.stem() == m) return "/" + p.filename().string();
        return std::nullopt;
    };
    imager::extract_deb(imager::fetch_deb(kernel_package, cache, "test guest"), tree, pick);

    std::vector<imager::CpioEntry> entries;
    entries.push_back({.path = "bin/busybox", .mode = 0100755, .source = tree.host("/busybox")});
    entries.push_back({.path = "init", .mode = 0100755, .content = init_script});
    for (const auto& m : guest_modules) {
        fs::path ko = tree.host("/" + m + ".ko");
        if (!fs::exists(ko)) throw std::runtime_error(kernel_package + " has no module " + m + ".ko");
        entries.push_back({.path = "m/" + m + ".ko", .mode = 0100644, .source = ko});
    }
    g->initrd = g->dir / "initrd.img";
    imager::write_initrd(g->initrd, entries, "gzip", 0);
    return g;
}

const Guest& guest() {
    static std::unique_ptr<Guest> g = make_guest();
    return *g;
}

qemu::Config direct_boot(const fs::path& state_dir, const std::string& mode, bool secure_boot = true) {
    qemu::Config c;
    c.state_dir = state_dir;
    c.secure_boot = secure_boot;
    c.kernel = guest().kernel;
    c.initrd = guest().initrd;
    c.append = "console=ttyS0 cairn_test=" + mode;
    c.memory_mb = 512;
    return c;
}

// The rest of the console line after `key` (first occurrence from `from`), or "" when absent.
std::string value_of(const std::string& console, const std::string& key, size_t from = 0) {
    size_t at = console.find(key, from);
    if (at == std::string::npos) return "";
    at += key.size();
    return trim_end(console.substr(at, console.find('\n', at) - at));
}

// TPM2_ReadClock's answer (hex) -> resetCount: how many times this TPM has been reset (started
// afresh) in its life. It is kept in the TPM's persistent state.
uint32_t tpm_reset_count(const std::string& readclock_hex) {
    // tag(2) size(4) rc(4) time(8) clock(8) resetCount(4) restartCount(4) safe(1)
    if (readclock_hex.size() != 2 * 35 || readclock_hex.substr(0, 4) != "8001" || readclock_hex.substr(12, 8) != "00000000") {
        ADD_FAILURE() << "not a successful TPM2_ReadClock answer: '" << readclock_hex << "'";
        return 0;
    }
    return static_cast<uint32_t>(std::stoul(readclock_hex.substr(52, 8), nullptr, 16));
}

uint32_t le32(const std::string& d, size_t at) {
    return static_cast<uint32_t>(static_cast<uint8_t>(d[at])) | static_cast<uint32_t>(static_cast<uint8_t>(d[at + 1])) << 8 |
           static_cast<uint32_t>(static_cast<uint8_t>(d[at + 2])) << 16 | static_cast<uint32_t>(static_cast<uint8_t>(d[at + 3])) << 24;
}

// OVMF's "MTC" variable (the monotonic counter it bumps at every boot), read from the machine's
// variable store: the authenticated-variable record whose name is "MTC" and state VAR_ADDED.
std::optional<uint32_t> firmware_boot_counter(const fs::path& vars) {
    const std::string d = read_file(vars);
    const std::string name("M\0T\0C\0\0\0", 8);
    constexpr size_t header = 60;  // StartId, State, Reserved, Attributes, MonotonicCount, TimeStamp, PubKeyIndex, NameSize, DataSize, GUID
    std::optional<uint32_t> value;
    for (size_t at = d.find(name); at != std::string::npos; at = d.find(name, at + 1)) {
        if (at < header) continue;
        size_t h = at - header;
        if (d[h] != '\xaa' || d[h + 1] != '\x55' || static_cast<uint8_t>(d[h + 2]) != 0x3f) continue;
        if (le32(d, h + 36) != name.size() || le32(d, h + 40) != 4) continue;
        value = le32(d, at + name.size());
    }
    return value;
}

// A process that exists and is not a zombie.
bool alive(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    size_t paren = line.rfind(')');
    return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

// Whether /proc still lists the pid at all (a zombie counts: nobody reaped it).
bool listed(pid_t pid) { return fs::exists("/proc/" + std::to_string(pid)); }

// Live processes whose command line mentions `text` (a state directory).
std::vector<pid_t> processes_mentioning(const std::string& text) {
    std::vector<pid_t> found;
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream in(entry.path() / "cmdline", std::ios::binary);
        std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (cmdline.find(text) != std::string::npos && alive(std::stoi(name))) found.push_back(std::stoi(name));
    }
    return found;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

// A boot with Secure Boot on (the default) and a TPM: the marker, the TPM, a port forward, a clear
// timeout error, then the ACPI power button that the guest answers by powering off.
// The disk's format comes from its first bytes, never its name, and goes to QEMU's -drive; VHDX
// and VMDK are refused before anything starts. (No QEMU runs here: only qemu-img.)
TEST(MachineDiskFormat, ToldByContentAndGivenToQemu) {
    Scratch dir;
    const fs::path raw = dir / "image.qcow2";  // raw, whatever its name says
    run_checked({"truncate", "-s", "8M", raw.string()});
    run_checked({"sgdisk", "-o", "-n", "1:2048:+2M", raw.string()});
    EXPECT_EQ(qemu::detect_disk_format(raw), qemu::DiskFormat::Raw);
    test::write_text(dir / "empty", "");
    EXPECT_EQ(qemu::detect_disk_format(dir / "empty"), qemu::DiskFormat::Raw);
    const fs::path qcow2 = dir / "disk.raw", vhdx = dir / "a.img", vmdk = dir / "b.img", flat = dir / "c.img";
    run_checked({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.string(), qcow2.string()});
    run_checked({"qemu-img", "convert", "-f", "raw", "-O", "vhdx", raw.string(), vhdx.string()});
    run_checked({"qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw.string(), vmdk.string()});
    run_checked({"qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat.string(), "1M"});
    EXPECT_EQ(qemu::detect_disk_format(qcow2), qemu::DiskFormat::Qcow2);
    EXPECT_EQ(qemu::detect_disk_format(vhdx), qemu::DiskFormat::Vhdx);
    EXPECT_EQ(qemu::detect_disk_format(vmdk), qemu::DiskFormat::Vmdk);
    EXPECT_EQ(qemu::detect_disk_format(flat), qemu::DiskFormat::Vmdk);
    test::expect_error([&] { qemu::detect_disk_format(dir / "none"); }, {(dir / "none").string()});

    auto drive_of = [&](const fs::path& disk) {
        qemu::Config c;
        c.disk = disk;
        c.state_dir = dir / "state";
        for (const std::string& arg : qemu::Machine(c).qemu_command())
            if (arg.starts_with("if=none,id=disk0,")) return arg;
        return std::string("(no disk0 drive)");
    };
    EXPECT_EQ(drive_of(qcow2), "if=none,id=disk0,format=qcow2,file=" + qcow2.string());  // read-write: no snapshot, no readonly
    EXPECT_EQ(drive_of(raw), "if=none,id=disk0,format=raw,file=" + raw.string());

    for (const auto& [disk, says] : {std::pair{vhdx, "VHDX"}, std::pair{vmdk, "VMDK"}}) {
        qemu::Config c;
        c.disk = disk;
        c.state_dir = dir / "refused";
        qemu::Machine m(c);
        test::expect_error([&] { m.start(); }, {disk.string(), says, "boots raw and qcow2 disks"});
        EXPECT_FALSE(m.running());
        EXPECT_FALSE(fs::exists(dir / "refused")) << "a refused disk left a state directory";
    }
}

TEST(MachineDirect, BootsWithATpmForwardsAPortTimesOutClearlyAndPowersOff) {
    Scratch dir;
    qemu::Config c = direct_boot(dir / "state", "idle");
    const uint16_t port = free_port();
    c.forwards = {{port, 7777}};
    qemu::Machine m(c);
    m.start();
    EXPECT_TRUE(m.running());
    EXPECT_GT(m.swtpm_pid(), 0);
    size_t at = m.wait_for(up, boot_timeout);
    const std::string console = m.console();
    EXPECT_EQ(console.find(up), at);
    EXPECT_EQ(value_of(console, "cairn-test: tpm="), "2") << "no TPM 2.0 in the guest:\n" << m.console_tail(30);
    EXPECT_GE(tpm_reset_count(value_of(console, "cairn-test: readclock=")), 1u);
    EXPECT_NE(console.find("Secure boot enabled"), std::string::npos) << "the kernel saw Secure Boot off";
    // The machine has a random source (virtio-rng, seeding the kernel through the firmware): the
    // pool is ready (256 bits, as the kernel counts it) before init starts, as on real hardware.
    EXPECT_EQ(value_of(console, "cairn-test: entropy="), "256") << m.console_tail(30);
    EXPECT_TRUE(fs::exists(dir / "state/OVMF_VARS.fd"));
    EXPECT_TRUE(fs::exists(dir / "state/qmp.sock"));

    // A host port forwarded to the guest's listener.
    std::string got;
    for (int i = 0; i < 20 && got.find("forwarded-ok") == std::string::npos; ++i) {
        got = read_from(port);
        if (got.empty()) std::this_thread::sleep_for(500ms);
    }
    EXPECT_NE(got.find("forwarded-ok"), std::string::npos) << "nothing came through the forward; console:\n" << m.console_tail(15);

    // A marker that never comes: the error names it and the time waited, and shows the console's
    // last lines (without the firmware's terminal escapes).
    auto t0 = std::chrono::steady_clock::now();
    test::expect_error([&] { m.wait_for("cairn-test: never", 2s); },
                       {"'cairn-test: never' did not appear on the console within 2 s", "last console lines", up});
    EXPECT_GE(seconds_since(t0), 2.0);
    try {
        m.wait_for("cairn-test: never", 1s);
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\x1b'), std::string::npos);
    }
    test::expect_error([&] { m.wait_exit(1s); }, {"still runs after 1 s"});
    EXPECT_NE(m.qmp("{\"execute\":\"query-status\"}").find("\"running\""), std::string::npos);

    // The power button: the guest powers off by itself, well before the grace runs out.
    t0 = std::chrono::steady_clock::now();
    m.power_off(60s);
    EXPECT_LT(seconds_since(t0), 50.0);
    EXPECT_FALSE(m.running());
    EXPECT_NE(m.console().find("cairn-test: power button"), std::string::npos) << m.console_tail(10);
    EXPECT_EQ(m.swtpm_pid(), -1);
}

// reset(): the same QEMU process boots again; the TPM and the firmware see a new boot.
TEST(MachineDirect, ResetRebootsInPlace) {
    Scratch dir;
    qemu::Machine m(direct_boot(dir / "state", "idle"));
    m.start();
    const size_t first = m.wait_for(up, boot_timeout);
    const pid_t pid = m.qemu_pid();
    const std::string console = m.console();
    const std::string boot_id = value_of(console, "cairn-test: boot_id=");
    const uint32_t resets = tpm_reset_count(value_of(console, "cairn-test: readclock="));
    const auto counter = firmware_boot_counter(dir / "state/OVMF_VARS.fd");
    ASSERT_TRUE(counter) << "no MTC variable in the NVRAM";

    m.reset();
    const size_t second = m.wait_for_after(up, first + 1, boot_timeout);
    EXPECT_GT(second, first);
    EXPECT_EQ(m.qemu_pid(), pid) << "reset() started another QEMU";
    const std::string after = m.console();
    EXPECT_NE(value_of(after, "cairn-test: boot_id=", first), boot_id) << "no new boot";
    EXPECT_GT(tpm_reset_count(value_of(after, "cairn-test: readclock=", first)), resets) << "the TPM was not reset with the machine";
    EXPECT_GT(firmware_boot_counter(dir / "state/OVMF_VARS.fd").value_or(0), *counter) << "the firmware did not boot again";
    m.kill();
    EXPECT_FALSE(m.running());
}

// A power cut, then a start on the same state directory: NVRAM and TPM state carry over. Here
// with Secure Boot off, whose firmware keeps its NVRAM only without SMM-only flash.
TEST(MachineDirect, KillThenStartKeepsNvramAndTpmState) {
    Scratch dir;
    const fs::path state = dir / "state";
    qemu::Machine m(direct_boot(state, "ignore-button", false));
    m.start();
    m.wait_for(up, boot_timeout);
    EXPECT_NE(m.console().find("Secure boot disabled"), std::string::npos);
    const uint32_t resets = tpm_reset_count(value_of(m.console(), "cairn-test: readclock="));
    const pid_t qemu_pid = m.qemu_pid(), swtpm_pid = m.swtpm_pid();
    ASSERT_GT(qemu_pid, 0);
    ASSERT_GT(swtpm_pid, 0);

    m.kill();
    EXPECT_FALSE(m.running());
    EXPECT_FALSE(listed(qemu_pid)) << "QEMU is still there (or an unreaped zombie)";
    EXPECT_FALSE(listed(swtpm_pid)) << "swtpm is still there (or an unreaped zombie)";
    EXPECT_TRUE(fs::exists(state / "tpm/tpm2-00.permall")) << "swtpm keeps its state in the state directory";
    const auto counter = firmware_boot_counter(state / "OVMF_VARS.fd");
    ASSERT_TRUE(counter) << "the firmware wrote no MTC variable: the NVRAM is not persisting";

    m.start();
    EXPECT_EQ(m.console().find(up), std::string::npos) << "console() starts afresh at each start()";
    m.wait_for(up, boot_timeout);
    EXPECT_GT(tpm_reset_count(value_of(m.console(), "cairn-test: readclock=")), resets) << "the TPM started from a blank state";

    // No handler for the power button: the grace runs out, then QEMU is killed.
    auto t0 = std::chrono::steady_clock::now();
    m.power_off(3s);
    EXPECT_GE(seconds_since(t0), 3.0);
    EXPECT_FALSE(m.running());
    EXPECT_EQ(m.console().find("cairn-test: power button"), std::string::npos);
    EXPECT_GT(firmware_boot_counter(state / "OVMF_VARS.fd").value_or(0), *counter) << "the NVRAM was not kept across starts";
}

// What OVMF really does with a directly booted kernel under Secure Boot: it does not check it.
// A kernel without any signature starts, and sees Secure Boot on. (A UKI on the disk is checked:
// see boot_test's BadSignature.)
TEST(MachineDirect, SecureBootDoesNotCheckADirectlyBootedKernel) {
    Scratch dir;
    const fs::path unsigned_kernel = dir / "vmlinuz";
    fs::copy_file(guest().kernel, unsigned_kernel);
    run_checked({"sbattach", "--remove", unsigned_kernel.string()});
    RunResult list = run({"sbverify", "--list", unsigned_kernel.string()});
    EXPECT_NE((list.out + list.err).find("No signature table present"), std::string::npos) << list.out << list.err;
    qemu::Config c = direct_boot(dir / "state", "idle", true);
    c.kernel = unsigned_kernel;
    qemu::Machine m(c);
    m.start();
    m.wait_for(up, boot_timeout);
    EXPECT_NE(m.console().find("Secure boot enabled"), std::string::npos) << m.console_tail(30);
    m.kill();
}

// A guest reboot under -no-reboot ends QEMU (exit status 0); waiting for a marker then fails at
// once with the reason. Also: a machine without a TPM.
TEST(MachineDirect, AGuestRebootEndsQemuUnderNoReboot) {
    Scratch dir;
    qemu::Config c = direct_boot(dir / "state", "reboot", false);
    c.tpm = false;
    c.extra_args = {"-no-reboot"};
    qemu::Machine m(c);
    m.start();
    EXPECT_EQ(m.swtpm_pid(), -1);
    EXPECT_EQ(m.wait_exit(boot_timeout), 0);
    EXPECT_FALSE(m.running());
    EXPECT_EQ(value_of(m.console(), "cairn-test: tpm="), "none");
    EXPECT_NE(m.console().find(up), std::string::npos);
    auto t0 = std::chrono::steady_clock::now();
    test::expect_error([&] { m.wait_for("cairn-test: never", 60s); }, {"'cairn-test: never'", "QEMU exited (status 0)", up});
    EXPECT_LT(seconds_since(t0), 5.0);
    test::expect_error([&] { m.reset(); }, {"QEMU is not running"});
}

// The console log holds what the guest printed, each character once and none lost, through a
// burst far larger than any socket or pipe buffer: QEMU 7.2 logs a character twice when its write
// to the console's reader would block, so the reader must never hold it up.
TEST(MachineDirect, TheConsoleLogKeepsABurstWhole) {
    Scratch dir;
    qemu::Machine m(direct_boot(dir / "state", "shell", false));
    m.start();
    m.wait_for(up, boot_timeout);
    constexpr int lines = 30000;  // about 170 KB
    // No kernel messages in between (dmesg -n 1).
    m.send("dmesg -n 1; seq 1 " + std::to_string(lines) + "; echo burst-\"end\"\n");
    const size_t end = m.wait_for("burst-end", 300s);
    const std::string out = m.console().substr(0, end);
    size_t at = out.find("\n1\r\n");
    ASSERT_NE(at, std::string::npos) << m.console_tail(10);
    std::string expected;
    for (int i = 1; i <= lines; ++i) expected += std::to_string(i) + "\r\n";
    const std::string got = out.substr(at + 1, expected.size());
    size_t differ = 0;
    while (differ < got.size() && got[differ] == expected[differ]) ++differ;
    EXPECT_EQ(got.size(), expected.size());
    auto around = [&](const std::string& text) {
        std::string shown = text.substr(differ > 40 ? differ - 40 : 0, 80);
        for (char& c : shown) c = c == '\r' || c == '\n' ? ' ' : c;
        return shown;
    };
    EXPECT_EQ(differ, expected.size()) << "the burst differs at byte " << differ << ": '" << around(got) << "' where '" << around(expected)
                                       << "' was printed";
    m.kill();
}

// The machine says what QEMU actually runs with: TCG on a host whose KVM has no SMM (where
// boot_bench used to print "kvm" because /dev/kvm opened).
TEST(MachineDirect, SaysWhichAcceleratorItRunsWith) {
    Scratch dir;
    qemu::Config c;  // firmware only: nothing to boot is needed to ask
    c.state_dir = dir / "state";
    c.tpm = false;
    c.memory_mb = 256;
    qemu::Machine m(c);
    m.start();
    EXPECT_EQ(m.accelerator(), qemu::kvm_usable() ? "kvm" : "tcg");
    EXPECT_EQ(qemu::kvm_unusable_reason().empty(), qemu::kvm_usable());
}

// start() failures are clear errors with QEMU's own words, and leave nothing running.
TEST(MachineDirect, StartFailuresAreClearAndLeaveNothingRunning) {
    Scratch dir;
    const fs::path state = dir / "state";
    qemu::Config c = direct_boot(state, "idle");
    c.extra_args = {"-no-such-option"};
    qemu::Machine bad(c);
    test::expect_error([&] { bad.start(); }, {"QEMU did not start", "-no-such-option: invalid option"});
    EXPECT_FALSE(bad.running());
    EXPECT_EQ(bad.swtpm_pid(), -1);
    EXPECT_TRUE(processes_mentioning(state.string()).empty()) << "swtpm or QEMU left running";

    c = direct_boot(state, "idle");
    c.kernel = dir / "no-such-vmlinuz";
    test::expect_error([&] { qemu::Machine(c).start(); }, {"kernel", "no-such-vmlinuz", "does not exist"});

    c = direct_boot(state, "idle");
    c.kernel.clear();
    test::expect_error([&] { qemu::Machine{c}; }, {"initrd needs a kernel"});

    // The state directory's NVRAM was made for Secure Boot; the other firmware does not get it.
    c = direct_boot(state, "idle", false);
    test::expect_error([&] { qemu::Machine(c).start(); }, {"Secure Boot off", "OVMF_VARS_4M.snakeoil.fd", "another state directory"});
}

// QEMU and swtpm go with the Machine, and with the process that owns it, even when that one dies
// without cleaning up.
TEST(MachineDirect, NothingIsLeftBehind) {
    Scratch dir;
    pid_t qemu_pid = -1, swtpm_pid = -1;
    {
        qemu::Machine m(direct_boot(dir / "a", "idle"));
        m.start();
        qemu_pid = m.qemu_pid();
        swtpm_pid = m.swtpm_pid();
        ASSERT_TRUE(alive(qemu_pid));
        ASSERT_TRUE(alive(swtpm_pid));
    }
    EXPECT_FALSE(listed(qemu_pid)) << "QEMU outlived its Machine (or was not reaped)";
    EXPECT_FALSE(listed(swtpm_pid)) << "swtpm outlived its Machine (or was not reaped)";

    // A child process starts a machine and dies by SIGKILL: no destructor runs.
    guest();  // made here, not in the child
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(fds[0]);
        pid_t pids[2] = {-1, -1};
        try {
            auto* m = new qemu::Machine(direct_boot(dir / "b", "idle"));  // never deleted
            m->start();
            pids[0] = m->qemu_pid();
            pids[1] = m->swtpm_pid();
        } catch (...) {
        }
        if (::write(fds[1], pids, sizeof pids) != sizeof pids) ::_exit(1);
        ::raise(SIGKILL);
    }
    ::close(fds[1]);
    pid_t pids[2] = {-1, -1};
    ASSERT_EQ(::read(fds[0], pids, sizeof pids), static_cast<ssize_t>(sizeof pids));
    ::close(fds[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_GT(pids[0], 0) << "the child could not start its machine";
    ASSERT_GT(pids[1], 0);
    for (int i = 0; i < 100 && (alive(pids[0]) || alive(pids[1])); ++i) std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(alive(pids[0])) << "QEMU outlived the process that started it";
    EXPECT_FALSE(alive(pids[1])) << "swtpm outlived the process that started it";
}

// From the disk, on the debug build of the minimal image (it has a console shell): typing on the
// console, reset and restart on the image's own boot path.
TEST(MachineDisk, BootsTypesResetsAndRestartsWithItsState) {
    Scratch dir;
    fs::path disk = dir / "disk.raw";
    run_checked({"cp", "--sparse=always", (test::test_images() / "minimal-debug/disk.raw").string(), disk.string()});
    qemu::Config c;
    c.disk = disk;
    c.state_dir = dir / "state";
    const uint16_t port = free_port();
    c.forwards = {{port, 22}};
    qemu::Machine m(c);
    m.start();
    size_t ready = m.wait_for("cairn: ready", 180s);
    m.wait_for_after("# ", ready, 60s);  // the debug image's shell

    // Typing on the console, and the TPM that swtpm provides.
    m.send("cat /sys/class/tpm/tpm0/tpm_version_major; echo typed-\"ok\"\n");
    size_t typed = m.wait_for("typed-ok", 30s);
    EXPECT_NE(m.console().rfind("\n2", typed), std::string::npos) << m.console_tail(10);

    // A host port forwarded to the guest: the image takes its address by DHCP on QEMU's user
    // network and its firewall lets in SSH only, so sshd's banner is what comes through.
    m.wait_for("cairn: network eth0 10.0.2.15/24", 120s);
    cairn::test::wait_for_sshd(m);
    std::string got = read_from(port, 10s);
    EXPECT_EQ(got.rfind("SSH-2.0-OpenSSH_", 0), 0u) << "no sshd banner through the forward: '" << got << "'; console:\n" << m.console_tail(15);

    // Reset in place: the same process boots again.
    size_t before = m.console().size();
    m.reset();
    m.wait_for_after("cairn: ready", before, 180s);

    // Power cut, then start again on the same disk, NVRAM and TPM state.
    m.kill();
    EXPECT_FALSE(m.running());
    EXPECT_FALSE(fs::is_empty(dir / "state/tpm")) << "swtpm keeps its state";
    m.start();
    EXPECT_EQ(m.console().find("cairn: ready"), std::string::npos) << "console() starts afresh at each start()";
    m.wait_for("cairn: ready", 180s);
    m.power_off(5s);  // no ACPI handler in the minimal image: the grace runs out, then the kill
    EXPECT_FALSE(m.running());
}
