// Writing and reading a GUID Partition Table on a disk image file, through libfdisk.
//
// What write_gpt puts on the disk, always the same for the same table:
//   - LBA 0: a protective MBR (no boot code, disk signature 0, one 0xEE entry covering the disk);
//   - LBA 1 and LBA 2..33: the primary header and an array of 128 entries of 128 bytes;
//   - the last 33 sectors: the backup entry array and, in the very last sector, the backup header.
// First usable LBA is 34 and last usable LBA is (disk sectors - 34), whatever libfdisk's own
// alignment defaults would say. Sectors are 512 bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/uuid.hpp"

namespace cairn::partitions {

struct GptEntry {
    std::string label;        // GPT partition name (UTF-8 here, at most 36 UTF-16 units on disk), e.g. "root_a"
    Uuid type;                // partition type GUID
    Uuid uuid;                // unique partition GUID
    uint64_t offset = 0;      // bytes from the start of the disk, multiple of 512
    uint64_t size = 0;        // bytes, multiple of 512
    uint64_t attributes = 0;  // GPT attribute bits (e.g. bit 60 read-only for verity partitions)

    bool operator==(const GptEntry&) const = default;
};

struct GptTable {
    Uuid disk_guid;
    uint64_t disk_size = 0;         // bytes
    std::vector<GptEntry> entries;  // in partition-number order (entry i = partition i+1)

    bool operator==(const GptTable&) const = default;
};

inline constexpr uint64_t gpt_sector_size = 512;
inline constexpr uint64_t gpt_entry_count = 128;      // entries in the array, used or not
inline constexpr uint64_t gpt_first_usable_lba = 34;  // pMBR + header + 32 sectors of entries
inline constexpr uint64_t gpt_backup_sectors = 33;    // backup entries + backup header
inline constexpr uint64_t gpt_max_label_units = 36;   // UTF-16 code units in a partition name

// Last usable LBA (inclusive) of a disk of disk_size bytes as write_gpt lays it out (the first is
// gpt_first_usable_lba). Throws Error when the disk cannot hold both tables and one sector between.
uint64_t gpt_last_usable_lba(uint64_t disk_size);

// Checks a table without touching any file: disk size (a multiple of 512, big enough), at most
// 128 entries, non-zero GUIDs, unique partition GUIDs, 512-byte aligned offsets and sizes,
// partitions inside the usable area and not overlapping, labels of at most 36 UTF-16 units
// (libfdisk cannot store characters outside the Basic Multilingual Plane). Errors name `what`
// (usually the image) and the partition's label and number.
void validate_gpt(const GptTable& table, const std::string& what);

// Writes a protective MBR, primary and backup GPT with exactly these entries onto an existing
// regular file whose size is table.disk_size. It writes nothing else, so a sparse file stays
// sparse. Deterministic: the same table gives the same bytes.
void write_gpt(const std::filesystem::path& image, const GptTable& table);

// Reads the GPT back. Throws Error naming the image when it has no GPT, when either copy of the
// table is damaged (libfdisk would silently fall back to the other one), or when the used
// entries do not form one run from partition 1 (GptTable cannot express gaps).
GptTable read_gpt(const std::filesystem::path& image);

}  // namespace cairn::partitions
