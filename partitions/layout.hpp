// The disk layout model: roles, A/B slots, Discoverable Partitions Specification types, sizes,
// 1 MiB alignment, deterministic partition UUIDs, and validation with errors that name the entry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/units.hpp"
#include "common/uuid.hpp"
#include "partitions/gpt.hpp"

namespace cairn::partitions {

enum class Role { Esp, Root, RootVerity, Log, Data, Extra };

std::string_view role_name(Role role);           // "esp", "root", "root-verity", "log", "data", "extra"
std::optional<Role> parse_role(std::string_view name);

// Partition type GUIDs (Discoverable Partitions Specification, x86-64).
namespace types {
inline constexpr std::string_view esp = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
inline constexpr std::string_view root_x86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
inline constexpr std::string_view root_x86_64_verity = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
inline constexpr std::string_view var = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
inline constexpr std::string_view linux_generic = "0fc63daf-8483-4772-8e79-3d69d8477de4";
inline constexpr std::string_view swap = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
}  // namespace types

// The one place that names Cairn's partitions. The GPT label of a role in a slot ('a', 'b'; 0 for
// partitions outside the slots): esp_a, root_a, root_a_verity, log, data. Extra partitions have
// labels of their own, so Role::Extra has none here (throws Error).
std::string label_for(Role role, char slot = 0);
// The type GUID of a role's partition (Discoverable Partitions Specification); Role::Extra: linux generic.
Uuid type_for(Role role);

// Names accepted for `type` of extra partitions: esp, root, root-verity, var, linux, swap, or a GUID.
Uuid parse_type(std::string_view text, const std::string& what);

inline constexpr uint64_t alignment = MiB;
inline constexpr uint64_t sector = 512;
// Bytes at the end of the disk that the backup GPT (32 sectors of entries + header) takes.
inline constexpr uint64_t backup_gpt_bytes = 33 * sector;

// GPT attribute bits.
inline constexpr uint64_t attr_read_only = 1ull << 60;
inline constexpr uint64_t attr_grow_file_system = 1ull << 59;

// One partition as a recipe states it.
struct PartitionSpec {
    Role role = Role::Extra;
    std::string label;                // extra partitions: required; other roles: derived from the role
    bool slotted = false;             // esp, root, root-verity: always; extra: when asked
    std::optional<uint64_t> size;     // bytes; unset when `rest`
    bool rest = false;                // take the rest of the disk (last partition only)
    std::optional<uint64_t> offset;   // explicit start, bytes; normally placed after the previous one
    std::optional<Uuid> type;         // extra partitions only
    std::string where;                // where it was stated, for errors: "recipe.toml:12: disk.partitions[2]"
};

struct LayoutSpec {
    uint64_t disk_size = 0;           // 0: just large enough for the partitions ("auto")
    std::string seed;                 // partition and disk GUIDs are derived from it
    std::vector<PartitionSpec> partitions;
    std::string where;                // "recipe.toml: disk"
};

// One partition as it lands on the disk.
struct Partition {
    std::string label;                // "root_a", "log", ...
    Role role = Role::Extra;
    char slot = 0;                    // 'a', 'b', or 0 for partitions outside the slots
    Uuid type;
    Uuid uuid;
    uint64_t offset = 0;
    uint64_t size = 0;
    uint64_t attributes = 0;
};

struct Layout {
    uint64_t disk_size = 0;
    Uuid disk_guid;
    std::vector<Partition> partitions;

    const Partition* find(std::string_view label) const;
    const Partition& get(std::string_view label) const;   // throws Error when missing
    Partition& get(std::string_view label);
    std::vector<char> slots() const;                       // {'a','b'} when the layout has slots
};

// Expands slotted partitions into _a and _b (the A set, then the B set, where the first slotted
// partition stands), places partitions one after the other on 1 MiB boundaries starting at 1 MiB,
// gives the last one the rest of the disk when asked, derives UUIDs from the seed, and validates:
// unknown or misplaced `rest`, duplicate labels, overlaps, misalignment, and not fitting the disk.
Layout plan(const LayoutSpec& spec);

GptTable to_gpt(const Layout& layout);

// The log and data partitions leave the imager blank, formatted by the device on its first boot.
// The imager writes this marker at their first byte, and cairn-init formats a partition only
// when it starts with the marker for its own partition GUID (provably blank), then clears it. A
// partition with neither the marker nor a filesystem is damaged: it is repaired, never formatted.
std::string blank_marker(const Uuid& partition);
inline bool formats_on_first_boot(Role role) { return role == Role::Log || role == Role::Data; }

}  // namespace cairn::partitions
