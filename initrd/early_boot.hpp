// systemd's first chores, done by cairn-init before systemd starts: the kernel modules a boot of the
// image loads every time, and the API filesystems its mount units mount. The imager lists both
// (imager/early_boot.hpp); cairn-init loads the modules from the verified root while it prepares the
// data and log partitions, and mounts the filesystems just before switch_root. systemd then finds
// them there: a mount unit whose mount point is mounted is active without running mount(8), and a
// modprobe@NAME.service skips its `modprobe` once /sys/module/NAME exists (a drop-in the imager adds).
// As an initrd with systemd does these in the initrd, so that the real root's boot need not; here
// it saves the boot a dozen programs (each 50-100 ms of CPU under emulation) and the modules' load
// on systemd's own critical path.
//
// Both lists are in the verified root, and everything is best effort: a module that does not load,
// or a filesystem that does not mount, is left to systemd's unit, which does it as it always did
// and reports a failure in the journal. What the device's administrator changed in the /etc overlay
// wins: a module named in /etc/modprobe.d (options, blacklist, install, ...) or on the kernel
// command line (NAME.param=, modprobe.blacklist=) is left to modprobe, which applies it, and a mount
// unit the administrator overrides, extends or masks in /etc/systemd/system is left to systemd.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

namespace cairn::initrd {

// In the image's root: one module per line, in load order (a module after the ones it needs), for
// each of the image's kernels: the absolute path of its file, then the names of the modules it
// needs (space-separated). cairn-init loads those of the running kernel.
inline constexpr const char* boot_modules_list = "/usr/lib/cairn/boot-modules";
// In the image's root: one mount per line, tab-separated: the unit that would mount it (or "-"
// for one PID 1 mounts itself), type, source, mount point, options (mount(8)'s, "-" for none), and
// conditions, space-separated: "PATH" (must exist), "!PATH" (must not), "!symlink:PATH" (must not
// be a symbolic link).
inline constexpr const char* boot_mounts_list = "/usr/lib/cairn/boot-mounts";

// Module names (as modprobe reads them: '-' as '_') that settings leave to modprobe: every name a
// line of a `.conf` file in `folders` names (modprobe.d: options, blacklist, install, remove,
// softdep, and what an alias or softdep leads to), and on the kernel command line `cmdline`
// NAME.PARAM=, modprobe.blacklist= and module_blacklist= names.
std::set<std::string> modules_with_settings(const std::vector<std::string>& folders, const std::string& cmdline);

struct EarlyModules {
    size_t loaded = 0;   // inserted now
    size_t already = 0;  // were there (built in, loaded by the initrd)
    size_t left = 0;     // left to systemd: settings name them, or they did not load
};

// Loads the modules of boot_modules_list under `root` that belong to kernel `release`
// (/usr/lib/modules/RELEASE/...), in order, with finit_module: each a regular file of the root
// filesystem (no symbolic link followed), none that `skip` names, and only once every module it
// needs is there (/sys/module/NAME). One that fails is left to systemd and the list goes on (what
// needs it is then left as well). Never throws.
EarlyModules load_boot_modules(const std::string& root, const std::string& release, const std::set<std::string>& skip) noexcept;

struct BootMount {
    std::string unit, type, source, where, options;
    std::vector<std::string> conditions;
};

// boot_mounts_list's lines; malformed ones (not 6 fields, a relative mount point) are dropped.
std::vector<BootMount> parse_boot_mounts(const std::string& text);

// mount(8)'s options as mount(2)'s flags and data: the generic flags (ro, nosuid, nodev, noexec,
// strictatime, relatime, noatime, nodiratime, sync, dirsync, ...) become flags, options only
// mount(8) reads (defaults, auto, nofail, x-*, ...) are dropped, the rest is the filesystem's data.
struct MountArguments {
    unsigned long flags = 0;
    std::string data;
};
MountArguments mount_arguments(const std::string& options);

// Whether every condition holds, the paths looked up as they are now (the initrd's /dev, /proc, /sys
// and /run; anything else under `root`).
bool conditions_hold(const BootMount& m, const std::string& root);

// Mounts boot_mounts_list's filesystems: those under /dev, /proc, /sys and /run where the initrd has
// them (switch_root moves them along), /tmp under `root`; nothing elsewhere (a mount point reached
// through the data partition could be a planted symbolic link). Skips a mount point that is already one,
// a unit the administrator has something of in ROOT/etc/systemd/system (the unit, a drop-in folder),
// and mounts whose conditions do not hold. Returns the number mounted. Never throws.
size_t mount_boot_filesystems(const std::string& root) noexcept;

}  // namespace cairn::initrd
