// Finding Cairn's partitions on one disk, and finding that disk among the machine's block devices.
//
// Trust rule (DESIGN.md): everything the boot uses comes from the one disk that holds the booted
// slot, chosen by what the signed kernel command line names (`cairn.disk=<disk GUID>`). A
// partition with the right label on another disk is ignored. On that disk a partition is found by
// its label *and* its type GUID (label_for / type_for in layout.hpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/uuid.hpp"
#include "partitions/gpt.hpp"
#include "partitions/layout.hpp"

namespace cairn::partitions {

struct FoundPartition {
    GptEntry entry;
    uint32_t number = 0;  // 1-based GPT partition number
};

// A disk's partition table as the boot reads it: the disk GUID and the used entries with their
// numbers (gaps allowed).
struct DiskTable {
    Uuid disk_guid;
    uint64_t sector_size = 512;
    std::vector<FoundPartition> partitions;
};

DiskTable disk_table(const GptTable& table);

// Parses the primary GPT of a disk from its first bytes (`head`: at least LBA 0 to the end of
// the entry array) with `sector_size`-byte sectors: header signature, size, CRC32 of header and
// entry array, entry geometry. Only the primary copy counts (as for the kernel); the backup
// may lie anywhere (a disk larger than the image has it before the end until first boot moves
// it). Throws Error naming `what` on anything malformed. Bytes needed: head_bytes_needed().
DiskTable parse_primary_gpt(const uint8_t* head, size_t size, uint64_t sector_size, const std::string& what);
// Reads and parses the primary GPT of a device or image file.
DiskTable read_primary_gpt(const std::filesystem::path& device, uint64_t sector_size = 512);

// The partition of `role` in `slot` on this table: nullopt when no partition carries its label.
// Throws Error naming `disk` and the label when the label is there with another type GUID, or
// twice.
std::optional<FoundPartition> find_role(const DiskTable& table, Role role, char slot, const std::string& disk);
// The same, but a missing partition is an Error naming `disk` and the label.
FoundPartition get_role(const DiskTable& table, Role role, char slot, const std::string& disk);

// A whole disk seen through sysfs, with its GPT.
struct BlockDisk {
    std::string name;               // "vda", "nvme0n1"
    std::filesystem::path device;   // "/dev/vda"
    DiskTable table;
};

struct BootDisk {
    BlockDisk disk;
    // One line per other disk that carries a partition labelled like one of Cairn's, for the
    // console: "vdb (disk GUID ...: not the signed one) has data, root_a: ignored".
    std::vector<std::string> ignored;
};

// Where block devices are: <sys_class_block>/<name>/ (whole disks have no `partition` file; their
// partitions are subdirectories with one) and <dev_dir>/<name>. Tests point both at a temporary tree.
struct BlockDevices {
    std::filesystem::path sys_class_block = "/sys/class/block";
    std::filesystem::path dev_dir = "/dev";
};

// Every whole disk with a readable primary GPT (disks without one, empty drives and unreadable devices
// are skipped).
std::vector<BlockDisk> scan_disks(const BlockDevices& where);

// The disk whose GPT disk GUID is `disk_guid`. When `booted_esp` is known (the firmware's
// LoaderDevicePartUUID: the partition the UKI was started from), the disk must also hold that
// partition. nullopt while no such disk has appeared. Throws Error when two disks qualify (a
// copy of the boot disk is attached: refusing to guess is the only safe answer), or when the
// booted ESP is on a disk whose GUID is not the signed one.
std::optional<BootDisk> find_boot_disk(const BlockDevices& where, const Uuid& disk_guid, const std::optional<Uuid>& booted_esp);

// The device node of partition `number` of whole disk `disk_name` ("/dev/vda8", "/dev/nvme0n1p8").
std::filesystem::path partition_device(const BlockDevices& where, const std::string& disk_name, uint32_t number);

}  // namespace cairn::partitions
