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
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/efivars.hpp"
#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "initrd/boot.hpp"
#include "initrd/early_boot.hpp"
#include "initrd/read_ahead.hpp"
#include "partitions/disk.hpp"
#include "updater/boot_control.hpp"
#include "updater/uefi_boot_control.hpp"

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

constexpr const char* efivars_dir = "/sys/firmware/efi/efivars";
constexpr const char* fallback_variable = "CairnFallback";  // set when cairn-init switched slots; cleared by a good boot

char booting_slot = 0;                              // for the failure report, once the command line is read
std::optional<partitions::BlockDisk> boot_disk;     // once found: where the fallback's boot entries point

// Mounts efivarfs on the first call. False on a machine without UEFI variables.
bool have_efivars() {
    static const bool mounted = [] {
        if (!fs::exists("/sys/firmware/efi")) return false;
        ::mount("efivarfs", efivars_dir, "efivarfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);  // EBUSY when already there
        std::error_code ec;
        return !fs::is_empty(efivars_dir, ec) && !ec;
    }();
    return mounted;
}

// Leaves the reason in a UEFI variable for the updater, which reads it after the firmware fell
// back to the other slot. Best effort: without efivarfs the reason is only on the console.
void leave_failure_reason(const std::string& why) {
    try {
        if (!have_efivars()) return;
        std::string text = std::string("slot ") + (booting_slot ? booting_slot : '?') + " failed to boot: " + why;
        if (text.size() > 512) text.resize(512);
        EfiVars(efivars_dir).write("CairnBootFailure", cairn_vendor_guid, efi_attr_nv_bs_rt, std::vector<uint8_t>(text.begin(), text.end()));
    } catch (const std::exception& e) {
        say("could not record the failure in a UEFI variable: " + std::string(e.what()));
    }
}

// The booted slot cannot come up: let the next boot try the other slot when it may (see
// updater::fall_back), so a damaged committed slot or a fresh image with a damaged slot A does
// not reboot into the same failure for ever.
void fall_back_to_other_slot() {
    try {
        if (!booting_slot || !boot_disk || !have_efivars()) {
            say("no fallback: " + std::string(!boot_disk ? "the boot disk was not found" : "no UEFI variables"));
            return;
        }
        EfiVars vars(efivars_dir);
        const bool before = vars.read(fallback_variable, cairn_vendor_guid).has_value();
        updater::UefiBootControl control(vars, boot_disk->device);
        const updater::Slot failed = booting_slot == 'a' ? updater::Slot::a : updater::Slot::b;
        const updater::Fallback f = updater::fall_back(control, failed, before);
        if (f == updater::Fallback::to_other) vars.write(fallback_variable, cairn_vendor_guid, efi_attr_nv_bs_rt, {1});
        say(std::string("fallback: ") + std::string(updater::fallback_text(f)));
    } catch (const std::exception& e) {
        say("no fallback: " + std::string(e.what()));
    }
}

// A boot that reached the root's init: the next failure may fall back again.
void clear_fallback() {
    try {
        if (!have_efivars()) return;
        EfiVars vars(efivars_dir);
        if (vars.read(fallback_variable, cairn_vendor_guid)) vars.remove(fallback_variable, cairn_vendor_guid);
    } catch (const std::exception& e) {
        say("could not clear " + std::string(fallback_variable) + ": " + e.what());
    }
}

[[noreturn]] void fail_closed(const std::string& why, bool debug_shell) {
    say("FATAL: " + why);
    leave_failure_reason(why);
    if (debug_shell) {
        say("debug image: starting a shell instead of rebooting");
        ::execl("/bin/sh", "sh", static_cast<char*>(nullptr));
    }
    fall_back_to_other_slot();
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

// The disk the signed command line names, once the kernel has it (disks appear as their drivers
// probe). Other disks carrying Cairn's labels are named on the console and ignored.
partitions::BlockDisk wait_for_boot_disk(const Uuid& guid, std::chrono::seconds timeout) {
    std::optional<Uuid> esp;
    if (have_efivars()) esp = loader_device_part_uuid(EfiVars(efivars_dir));
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (auto found = partitions::find_boot_disk({}, guid, esp)) {
            for (const auto& line : found->ignored) say(line);
            say("boot disk " + found->disk.name + " (disk GUID " + guid.str() + (esp ? ", booted ESP " + esp->str() : std::string()) + ")");
            return found->disk;
        }
        if (std::chrono::steady_clock::now() > deadline)
            fail("no disk with the GUID " + guid.str() + " (named by the signed command line) appeared within " +
                 std::to_string(timeout.count()) + " s");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

// The device node of a partition of the boot disk, found by role and slot (label and type GUID).
fs::path boot_partition(const partitions::BlockDisk& disk, partitions::Role role, char slot) {
    const partitions::FoundPartition p = partitions::get_role(disk.table, role, slot, disk.name);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
        try {
            fs::path node = partitions::partition_device({}, disk.name, p.number);
            if (fs::exists(node)) return node;
        } catch (const Error&) {
            if (std::chrono::steady_clock::now() > deadline) throw;
        }
        if (std::chrono::steady_clock::now() > deadline) fail(disk.name + ": partition " + std::to_string(p.number) + " has no device node");
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

// On a disk larger than the image, the data partition grows to the end of it: only when the GPT
// gives it the grow attribute and it is the last partition on the disk.
bool grow_to_disk_end(const fs::path& part, const partitions::BlockDisk& disk, const partitions::FoundPartition& found) {
    if (!(found.entry.attributes & partitions::attr_grow_file_system)) return false;
    for (const auto& other : disk.table.partitions)
        if (other.entry.offset > found.entry.offset) return false;  // not the last partition: never grow over another
    fs::path sys_disk = fs::path("/sys/class/block") / disk.name;
    fs::path sys_part = fs::path("/sys/class/block") / part.filename();
    uint64_t disk_sectors = sysfs_number(sys_disk / "size");
    uint64_t start = sysfs_number(sys_part / "start");
    uint64_t size = sysfs_number(sys_part / "size");
    const uint64_t backup_gpt = 33, mib = 2048;
    uint64_t end_usable = (disk_sectors - backup_gpt) / mib * mib;  // 1 MiB aligned, like the imager
    if (start + size + mib > end_usable) return false;
    say("growing " + part.filename().string() + " to the end of " + disk.name);
    run_checked({"sfdisk", "--quiet", "--relocate", "gpt-bak-std", disk.device.string()});
    uint64_t new_size = end_usable - start;
    RunOptions input;
    input.input = std::to_string(start) + "," + std::to_string(new_size) + "\n";
    run_checked({"sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "-N", std::to_string(found.number), disk.device.string()}, input);
    // Tell the kernel about the new size of this one partition; the others are in use.
    UniqueFd fd = open_file(disk.device, O_RDONLY);
    blkpg_partition p{};
    p.start = static_cast<long long>(start * 512);
    p.length = static_cast<long long>(new_size * 512);
    p.pno = static_cast<int>(found.number);
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

// Whether the partition starts with the imager's blank marker for its own GUID: never formatted yet.
bool carries_blank_marker(const fs::path& dev, const partitions::FoundPartition& found) {
    const std::string marker = partitions::blank_marker(found.entry.uuid);
    std::string head(marker.size(), '\0');
    UniqueFd fd = open_file(dev, O_RDONLY);
    pread_exact(fd.get(), head.data(), head.size(), 0, dev.string());
    return head == marker;
}

// Mounts the log or data partition. It is formatted only when it starts with the imager's blank
// marker for its own partition GUID (then the marker is cleared); anything else is a filesystem
// that e2fsck checks and repairs (preen; then, if preen gives up, answering yes to every fix,
// which also finds the backup superblocks) before the mount. Throws Error when the partition can
// be neither formatted nor repaired nor mounted: the caller boots degraded, nothing is wiped.
void prepare_and_mount(const fs::path& dev, const partitions::BlockDisk& disk, const partitions::FoundPartition& found, const fs::path& target) {
    const std::string name = dev.filename().string() + " (" + found.entry.label + ")";
    bool grown = grow_to_disk_end(dev, disk, found);
    if (carries_blank_marker(dev, found)) {
        say("formatting " + name + " on first boot (it carries the imager's blank marker)");
        run_checked({"mkfs.ext4", "-q", "-F", "-L", found.entry.label, "-U", quick_uuid(), "-E",
                     "nodiscard,lazy_itable_init=1,lazy_journal_init=1,hash_seed=" + quick_uuid(), dev.string()});
        UniqueFd fd = open_file(dev, O_RDWR);
        const std::string zeros(partitions::blank_marker(found.entry.uuid).size(), '\0');
        pwrite_exact(fd.get(), zeros.data(), zeros.size(), 0, dev.string());
        if (::fsync(fd.get()) != 0) fail_errno("clearing the blank marker of " + name);
        grown = false;
    } else {
        RunResult r = run({"e2fsck", "-p", dev.string()});
        if (r.exit_code >= 4) {
            say("e2fsck -p could not repair " + name + " (exit " + std::to_string(r.exit_code) + "): " + trim(last_lines(r.out + r.err, 2)) +
                "; repairing with e2fsck -y");
            r = run({"e2fsck", "-y", dev.string()});
            if (r.exit_code >= 4)
                fail(name + " is damaged and e2fsck cannot repair it (exit " + std::to_string(r.exit_code) + "): " + trim(last_lines(r.out + r.err, 2)));
        }
        if (r.exit_code != 0) say("e2fsck repaired " + name + " (exit " + std::to_string(r.exit_code) + ")");
    }
    do_mount(dev.string(), target, "ext4", MS_NOSUID | MS_NODEV);
    if (grown) run_checked({"resize2fs", dev.string()});  // online, now that it is mounted
}

// Degraded boot: the data partition cannot be used. /var is a tmpfs (nothing survives a reboot),
// the reason goes to the console and to /run/cairn/degraded for the services and the status.
void degrade(const std::string& what, const std::string& why, const fs::path& target) {
    say("DEGRADED: " + what + ": " + why + (target.empty() ? std::string() : "; " + target.string().substr(std::string(sysroot).size()) + " is a tmpfs"));
    if (!target.empty()) do_mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    make_dir("/run/cairn");
    std::ofstream("/run/cairn/degraded", std::ios::app) << what << ": " << why << "\n";
}

// Where the overlays' layers are kept, on the data partition (under the root, once it is mounted).
constexpr const char* overlays_dir = "var/.cairn/overlays";

void lay_overlays() {
    for (const char* dir : {"etc", "home", "root"}) {
        fs::path base = fs::path(sysroot) / overlays_dir / dir;
        make_dir(base / "upper");
        make_dir(base / "work");
        fs::path lower = fs::path(sysroot) / dir;
        make_dir(lower);
        std::string options = "lowerdir=" + lower.string() + ",upperdir=" + (base / "upper").string() + ",workdir=" + (base / "work").string();
        do_mount("overlay", lower, "overlay", 0, options);
    }
}

// Debian images keep the dpkg database of their packages in the verity root, at
// /usr/lib/cairn/dpkg (the imager moves it there): bound read-only on /var/lib/dpkg, `dpkg -l` on
// the device reads the running slot's own, also right after an update. systemd's journal goes to
// the log partition when that is mounted elsewhere than /var/log; as /var/log/journal is there
// before systemd starts, journald is told (its flag that the journal was flushed to /var) to
// write there from its start rather than to /run until systemd-journal-flush.service moves it.
void bind_image_state(const std::string& log_mount) {
    const fs::path root = sysroot;
    std::error_code ec;
    if (fs::is_directory(root / "usr/lib/cairn/dpkg", ec)) {
        const fs::path target = root / "var/lib/dpkg";
        do_mount((root / "usr/lib/cairn/dpkg").string(), target, "", MS_BIND);
        do_mount("", target, "", MS_BIND | MS_REMOUNT | MS_RDONLY);
    }
    const bool journald = fs::exists(root / "usr/lib/systemd/systemd-journald", ec);
    if (log_mount != "/var/log" && journald) {
        const fs::path journal = root / log_mount.substr(1) / "journal", target = root / "var/log/journal";
        try {  // without a log partition (degraded), the journal stays on /var
            make_dir(journal);
            do_mount(journal.string(), target, "", MS_BIND);
        } catch (const Error& e) {
            say(std::string("the journal stays on /var: ") + e.what());
        }
    }
    if (journald) {
        make_dir("/run/systemd/journal");
        std::ofstream("/run/systemd/journal/flushed");
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
        say(std::string("slot ") + o.slot + ", started at " + std::to_string(started).substr(0, 5) + " s");
        load_modules();

        using partitions::Role;
        boot_disk = wait_for_boot_disk(*o.disk, std::chrono::seconds(30));
        const std::string root_label = partitions::label_for(Role::Root, o.slot);
        fs::path root = boot_partition(*boot_disk, Role::Root, o.slot);
        std::string root_device = root.string();
        std::unique_ptr<VerityRoot> verity;
        if (o.verity) {
            fs::path hash = boot_partition(*boot_disk, Role::RootVerity, o.slot);
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
        start_read_ahead(sysroot);  // in the background, while cairn-init goes on and the image's init starts

        // The modules the image's boot loads every time, loaded from the verified root in a thread
        // beside the rest of cairn-init's work (initrd/early_boot.hpp). A module the administrator's
        // /etc/modprobe.d names (the overlay's upper layer, on the data partition) is left alone: so
        // it starts once /var is mounted, or at once when the data partition is still blank.
        EarlyModules early_modules;
        std::jthread module_loader;
        bool modules_started = false;
        auto load_modules_ahead = [&early_modules, &module_loader, &modules_started, cmdline = read_file("/proc/cmdline")] {
            modules_started = true;
            auto work = [&early_modules, cmdline] {
                const std::string top = sysroot;
                const std::vector<std::string> settings = {top + "/etc/modprobe.d", top + "/" + overlays_dir + "/etc/upper/modprobe.d",
                                                           top + "/usr/lib/modprobe.d", top + "/lib/modprobe.d"};
                utsname u{};
                if (::uname(&u) == 0) early_modules = load_boot_modules(top, u.release, modules_with_settings(settings, cmdline));
            };
            try {
                module_loader = std::jthread(work);
            } catch (const std::system_error&) {  // no thread: here and now (saving time never fails a boot)
                work();
            }
        };

        // The data partition is required: without it there is no /var. A damaged one boots degraded.
        const partitions::FoundPartition data = partitions::get_role(boot_disk->table, Role::Data, 0, boot_disk->name);
        bool have_var = false;
        try {
            const fs::path data_device = boot_partition(*boot_disk, Role::Data, 0);
            if (carries_blank_marker(data_device, data)) load_modules_ahead();
            prepare_and_mount(data_device, *boot_disk, data, fs::path(sysroot) / "var");
            have_var = true;
        } catch (const Error& e) {
            degrade("data partition", e.what(), fs::path(sysroot) / "var");
        }
        if (!modules_started) load_modules_ahead();
        if (auto log = partitions::find_role(boot_disk->table, Role::Log, 0, boot_disk->name)) {
            try {
                prepare_and_mount(boot_partition(*boot_disk, Role::Log, 0), *boot_disk, *log, fs::path(sysroot) / o.log_mount.substr(1));
            } catch (const Error& e) {
                degrade("log partition", e.what(), {});
            }
        }
        if (!have_var) say("device state, SSH host keys and changes to /etc are not kept until the data partition is repaired");
        lay_overlays();
        bind_image_state(o.log_mount);
        if (module_loader.joinable()) module_loader.join();
        const size_t early_mounts = mount_boot_filesystems(sysroot);
        if (early_modules.loaded + early_modules.already + early_modules.left + early_mounts > 0)
            say("for the image's init: " + std::to_string(early_modules.loaded) + " modules loaded (" + std::to_string(early_modules.already) +
                " were there, " + std::to_string(early_modules.left) + " left to it), " + std::to_string(early_mounts) + " filesystems mounted");

        say("root " + to_hex(o.root_hash).substr(0, 16) + "... verified; switching to " + o.init + " at " +
            std::to_string(uptime()).substr(0, 5) + " s (" + std::to_string(static_cast<int>((uptime() - started) * 1000)) + " ms in cairn-init)");
        clear_fallback();
        switch_root(o.init);
    } catch (const std::exception& e) {
        fail_closed(e.what(), debug_shell);
    }
}
