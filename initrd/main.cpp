// cairn-init: PID 1 of the initrd. Loads the modules it needs, activates dm-verity for the
// slot's root with the root hash from the (signed) kernel command line, mounts it read-only,
// prepares and mounts the log and data partitions, lays overlays for /etc, /home and /root,
// and switches to the root's init. Any failure: one line on the console, then reboot.
#include <fcntl.h>
#include <libcryptsetup.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/efivars.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "initrd/boot.hpp"

namespace fs = std::filesystem;
using namespace cairn;
using namespace cairn::initrd;

namespace {

// The list of modules to load, in order, written by the imager (paths inside the initrd).
constexpr const char* module_list = "/etc/cairn/initrd-modules";
constexpr const char* sysroot = "/sysroot";

double uptime() {
    std::ifstream in("/proc/uptime");
    double up = 0;
    in >> up;
    return up;
}

void say(const std::string& line) {
    std::string text = "cairn-init: " + line + "\n";
    if (::write(2, text.data(), text.size()) < 0) {
    }
}

std::string booting_slot;  // for the failure report, once the command line is read

// Leaves the reason in a UEFI variable for the updater, which reads it after the firmware fell
// back to the other slot. Best effort: without efivarfs the reason is only on the console.
void leave_failure_reason(const std::string& why) {
    try {
        const char* dir = "/sys/firmware/efi/efivars";
        if (!fs::exists("/sys/firmware/efi")) return;
        ::mount("efivarfs", dir, "efivarfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);  // may already be there
        std::string text = "slot " + (booting_slot.empty() ? std::string("?") : booting_slot) + " failed to boot: " + why;
        if (text.size() > 512) text.resize(512);
        EfiVars(dir).write("CairnBootFailure", cairn_vendor_guid, efi_attr_nv_bs_rt, std::vector<uint8_t>(text.begin(), text.end()));
    } catch (const std::exception& e) {
        say("could not record the failure in a UEFI variable: " + std::string(e.what()));
    }
}

[[noreturn]] void fail_closed(const std::string& why, bool debug_shell) {
    say("FATAL: " + why);
    leave_failure_reason(why);
    if (debug_shell) {
        say("debug image: starting a shell instead of rebooting");
        ::execl("/bin/sh", "sh", static_cast<char*>(nullptr));
    }
    say("rebooting");
    ::sync();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    ::reboot(RB_AUTOBOOT);
    for (;;) ::pause();
}

void make_dir(const fs::path& p) {
    std::error_code ec;
    fs::create_directories(p, ec);
    if (ec) fail("creating " + p.string() + ": " + ec.message());
}

void do_mount(const std::string& source, const fs::path& target, const std::string& type, unsigned long flags, const std::string& data = "") {
    make_dir(target);
    if (::mount(source.c_str(), target.c_str(), type.empty() ? nullptr : type.c_str(), flags, data.empty() ? nullptr : data.c_str()) != 0)
        fail_errno("mounting " + source + " (" + (type.empty() ? "move" : type) + ") on " + target.string());
}

void mount_api_filesystems() {
    do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    // The kernel found no /dev/console in the initrd: take the console now.
    int fd = ::open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd >= 0) {
        ::dup2(fd, 0);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        if (fd > 2) ::close(fd);
    }
    do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC);
    do_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
}

void load_modules() {
    std::ifstream list(module_list);
    std::string path;
    while (std::getline(list, path)) {
        if (path.empty()) continue;
        UniqueFd fd = open_file(path, O_RDONLY);
        if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST) fail_errno("loading module " + path);
    }
}

fs::path wait_for_partition(const std::string& label, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (auto dev = find_partition("/sys/class/block", label)) {
            if (fs::exists(*dev)) return *dev;
        }
        if (std::chrono::steady_clock::now() > deadline)
            fail("no partition labelled '" + label + "' appeared within " + std::to_string(timeout.count()) + " s");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

struct CryptFree {
    void operator()(crypt_device* cd) const { crypt_free(cd); }
};
using CryptDevice = std::unique_ptr<crypt_device, CryptFree>;

// dm-verity for the root: `data` checked against the tree in `hash`, trusting only the root hash
// from the command line; the kernel checks every block against it when read.
class VerityRoot {
public:
    VerityRoot(const fs::path& data, const fs::path& hash, const std::vector<uint8_t>& root_hash) : data_(data), root_hash_(root_hash) {
        crypt_device* raw = nullptr;
        int r = crypt_init_data_device(&raw, hash.c_str(), data.c_str());
        if (r < 0) fail_errno("opening " + hash.string() + " and " + data.string() + " for dm-verity", -r);
        cd_.reset(raw);
        crypt_params_verity params{};
        r = crypt_load(cd_.get(), CRYPT_VERITY, &params);
        if (r < 0) fail_errno(hash.string() + ": no dm-verity superblock", -r);
    }
    // A block that does not match the tree reads as an I/O error, never as data: a damaged root
    // fails the mount and cairn-init says so. (Restarting on corruption instead would need the
    // table reloaded after the mount; libcryptsetup 2.6 cannot refresh a verity device.)
    fs::path activate() {
        int r = crypt_activate_by_volume_key(cd_.get(), "root", reinterpret_cast<const char*>(root_hash_.data()), root_hash_.size(),
                                             CRYPT_ACTIVATE_READONLY);
        if (r == -EPERM) fail(data_.string() + ": the root hash on the command line does not match the verity tree");
        if (r < 0) fail_errno("activating dm-verity for " + data_.string(), -r);
        return "/dev/mapper/root";
    }

private:
    fs::path data_;
    std::vector<uint8_t> root_hash_;
    CryptDevice cd_;
};

uint64_t sysfs_number(const fs::path& file) {
    std::ifstream in(file);
    uint64_t v = 0;
    if (!(in >> v)) fail("reading " + file.string());
    return v;
}

// On a disk larger than the image, the data partition (the last one) grows to the end of it.
bool grow_to_disk_end(const fs::path& part) {
    PartitionOf of = partition_of("/sys/class/block", part);
    fs::path sys_disk = fs::path("/sys/class/block") / of.disk.filename();
    fs::path sys_part = fs::path("/sys/class/block") / part.filename();
    uint64_t disk_sectors = sysfs_number(sys_disk / "size");
    uint64_t start = sysfs_number(sys_part / "start");
    uint64_t size = sysfs_number(sys_part / "size");
    const uint64_t backup_gpt = 33, mib = 2048;
    uint64_t end_usable = (disk_sectors - backup_gpt) / mib * mib;  // 1 MiB aligned, like the imager
    if (start + size + mib > end_usable) return false;
    say("growing " + part.filename().string() + " to the end of " + of.disk.filename().string());
    run_checked({"sfdisk", "--quiet", "--relocate", "gpt-bak-std", of.disk.string()});
    uint64_t new_size = end_usable - start;
    RunOptions input;
    input.input = std::to_string(start) + "," + std::to_string(new_size) + "\n";
    run_checked({"sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "-N", std::to_string(of.number), of.disk.string()}, input);
    // Tell the kernel about the new size of this one partition; the others are in use.
    UniqueFd fd = open_file(of.disk, O_RDONLY);
    blkpg_partition p{};
    p.start = static_cast<long long>(start * 512);
    p.length = static_cast<long long>(new_size * 512);
    p.pno = of.number;
    blkpg_ioctl_arg arg{};
    arg.op = BLKPG_RESIZE_PARTITION;
    arg.datalen = sizeof p;
    arg.data = &p;
    if (::ioctl(fd.get(), BLKPG, &arg) != 0) fail_errno("telling the kernel the new size of " + part.string());
    return true;
}

// A random UUID that never waits for the kernel's entropy pool (early boot may have none yet,
// and mke2fs would block in getrandom() for seconds).
std::string quick_uuid() {
    uint8_t b[16];
    if (::getrandom(b, sizeof b, GRND_INSECURE) != static_cast<ssize_t>(sizeof b)) fail_errno("getrandom");
    b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);
    b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);
    std::string hex = to_hex(std::span<const uint8_t>(b, sizeof b));
    return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" + hex.substr(20);
}

// Formats a blank partition (first boot), then mounts it.
void prepare_and_mount(const fs::path& dev, const std::string& label, const fs::path& target, bool grow) {
    bool grown = grow && grow_to_disk_end(dev);
    if (!has_ext4(dev)) {
        say("formatting " + dev.filename().string() + " (" + label + ") on first boot");
        run_checked({"mkfs.ext4", "-q", "-F", "-L", label, "-U", quick_uuid(), "-E",
                     "nodiscard,lazy_itable_init=1,lazy_journal_init=1,hash_seed=" + quick_uuid(), dev.string()});
        grown = false;
    }
    do_mount(dev.string(), target, "ext4", MS_NOSUID | MS_NODEV);
    if (grown) run_checked({"resize2fs", dev.string()});  // online, now that it is mounted
}

void lay_overlays() {
    for (const char* dir : {"etc", "home", "root"}) {
        fs::path base = fs::path(sysroot) / "var/.cairn/overlays" / dir;
        make_dir(base / "upper");
        make_dir(base / "work");
        fs::path lower = fs::path(sysroot) / dir;
        make_dir(lower);
        std::string options = "lowerdir=" + lower.string() + ",upperdir=" + (base / "upper").string() + ",workdir=" + (base / "work").string();
        do_mount("overlay", lower, "overlay", 0, options);
    }
}

[[noreturn]] void switch_root(const std::string& init) {
    for (const char* api : {"/dev", "/proc", "/sys", "/run"}) do_mount(api, fs::path(sysroot) / (api + 1), "", MS_MOVE);
    if (::chdir(sysroot) != 0) fail_errno("entering " + std::string(sysroot));
    if (::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) fail_errno("moving " + std::string(sysroot) + " to /");
    if (::chroot(".") != 0 || ::chdir("/") != 0) fail_errno("changing root");
    ::execl(init.c_str(), init.c_str(), static_cast<char*>(nullptr));
    fail_errno("starting " + init);
}

}  // namespace

int main() {
    ::setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    bool debug_shell = false;
    try {
        mount_api_filesystems();
        const double started = uptime();
        BootOptions o = parse_cmdline(read_file("/proc/cmdline"));
        debug_shell = o.debug_shell;
        booting_slot = o.slot;
        say("slot " + o.slot + ", started at " + std::to_string(started).substr(0, 5) + " s");
        load_modules();

        const std::string root_label = "root_" + o.slot;
        fs::path root = wait_for_partition(root_label, std::chrono::seconds(30));
        std::string root_device = root.string();
        std::unique_ptr<VerityRoot> verity;
        if (o.verity) {
            fs::path hash = wait_for_partition(root_label + "_verity", std::chrono::seconds(5));
            verity = std::make_unique<VerityRoot>(root, hash, o.root_hash);
            root_device = verity->activate().string();
        }
        make_dir(sysroot);
        if (::mount(root_device.c_str(), sysroot, o.rootfs.c_str(), MS_RDONLY, nullptr) != 0) {
            int err = errno;
            fail_errno("mounting " + root_label + " (" + o.rootfs + (o.verity ? " on dm-verity" : "") + ")" +
                           (err == EIO || err == EINVAL ? ": it does not match its root hash or is damaged" : ""),
                       err);
        }

        fs::path data = wait_for_partition("data", std::chrono::seconds(5));
        prepare_and_mount(data, "data", fs::path(sysroot) / "var", true);
        if (auto log = find_partition("/sys/class/block", "log")) prepare_and_mount(*log, "log", fs::path(sysroot) / o.log_mount.substr(1), false);
        lay_overlays();

        say("root " + to_hex(o.root_hash).substr(0, 16) + "... verified; switching to " + o.init + " at " +
            std::to_string(uptime()).substr(0, 5) + " s (" + std::to_string(static_cast<int>((uptime() - started) * 1000)) + " ms in cairn-init)");
        switch_root(o.init);
    } catch (const std::exception& e) {
        fail_closed(e.what(), debug_shell);
    }
}
