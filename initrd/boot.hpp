// The parts of cairn-init that do not need to be PID 1: reading the kernel command line and
// finding partitions by their GPT label in sysfs. Tested on the build host.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace cairn::initrd {

struct BootOptions {
    std::string slot;                 // cairn.slot=a
    std::vector<uint8_t> root_hash;   // cairn.roothash=<hex>
    std::string rootfs = "erofs";     // cairn.rootfs=erofs|ext4
    std::string log_mount = "/var/log";   // cairn.log=<mount point of the log partition>
    std::string init = "/sbin/init";  // cairn.init=<program to run after switch_root>
    bool debug_shell = false;         // cairn.debug=shell: drop to a shell instead of rebooting
    bool verity = true;               // cairn.verity=off: no root hash (images built without verity)
};

// Parses /proc/cmdline. Throws Error naming the parameter when one is missing or malformed.
BootOptions parse_cmdline(const std::string& cmdline);

// The device node (/dev/<name>) of the partition whose GPT label is `label`, read from the
// PARTNAME= lines of <sys_class_block>/*/uevent; nullopt while it has not appeared.
std::optional<std::filesystem::path> find_partition(const std::filesystem::path& sys_class_block, const std::string& label);

// The whole-disk device a partition belongs to ("/dev/vda" for "/dev/vda8") and its number.
struct PartitionOf {
    std::filesystem::path disk;
    int number = 0;
};
PartitionOf partition_of(const std::filesystem::path& sys_class_block, const std::filesystem::path& partition);

// True when the device or file holds an ext2/3/4 superblock.
bool has_ext4(const std::filesystem::path& device);

}  // namespace cairn::initrd
