// The parts of cairn-init that do not need to be PID 1: reading the kernel command line and
// finding partitions by their GPT label in sysfs. Tested on the build host.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/uuid.hpp"

namespace cairn::initrd {

struct BootOptions {
    char slot = 0;                    // cairn.slot=a|b
    std::optional<Uuid> disk;         // cairn.disk=<GPT disk GUID>: the disk every partition must come from
    std::vector<uint8_t> root_hash;   // cairn.roothash=<hex>
    std::string rootfs = "erofs";     // cairn.rootfs=erofs|ext4
    std::string log_mount = "/var/log";   // cairn.log=<mount point of the log partition>
    std::string init = "/sbin/init";  // cairn.init=<program to run after switch_root>
    bool debug_shell = false;         // cairn.debug=shell: drop to a shell instead of rebooting
    bool verity = true;               // cairn.verity=off: no root hash (images built without verity)
};

// Parses /proc/cmdline. Throws Error naming the parameter when one is missing or malformed
// (cairn.slot, cairn.disk and, unless cairn.verity=off, cairn.roothash are required).
BootOptions parse_cmdline(const std::string& cmdline);

// Refuses a mount point for the writable log partition that would cover verified or system
// content ("/", /usr, /etc, /bin, /sbin, /lib*, /boot), the API filesystems (/proc, /sys, /dev,
// /run, /tmp), the overlays (/home, /root, /var/.cairn), /var itself (the data partition) and
// /var/lib (device state). Also refuses relative paths, "..", "." and repeated or trailing
// slashes. `what` names where the value came from. The imager and cairn-init both call it.
void check_log_mount(const std::string& path, const std::string& what);
// The reason check_log_mount refuses `path`, or nullopt when it is a fine mount point.
std::optional<std::string> log_mount_problem(const std::string& path);

}  // namespace cairn::initrd
