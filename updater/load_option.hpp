// UEFI boot entries (Boot####): EFI_LOAD_OPTION with a hard-drive device path to a file on a
// GPT partition (UEFI 2.10, 3.1.3 "Load Options" and 10.3.5.1 "Hard Drive Media Device Path").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/uuid.hpp"

namespace cairn::updater {

inline constexpr uint32_t load_option_active = 0x1;

struct LoadOption {
    uint32_t attributes = load_option_active;
    std::string description;        // ASCII here; stored as UCS-2
    // The hard-drive node, when the path has one:
    std::optional<Uuid> partition;  // the GPT partition's unique GUID
    uint32_t partition_number = 0;
    uint64_t start_lba = 0, size_lba = 0;
    std::string file;               // the file path node ("\EFI\BOOT\BOOTX64.EFI"), "" when none
};

// EFI_LOAD_OPTION bytes: attributes, path length, description, HD node, file node, end node.
std::vector<uint8_t> encode_load_option(const LoadOption& option);
// Reads any load option; device paths without an HD or file node leave those fields empty.
// Throws Error naming `what` on truncated or inconsistent input.
LoadOption decode_load_option(const std::vector<uint8_t>& bytes, const std::string& what);

// The GUID as UEFI stores it: the first three fields little endian, the rest as written.
std::vector<uint8_t> efi_guid_bytes(const Uuid& uuid);
Uuid uuid_from_efi_guid(const uint8_t* sixteen);

// "Boot0003" <-> 3; "BootOrder" and others are not entries.
std::string boot_variable_name(uint16_t number);
std::optional<uint16_t> boot_variable_number(const std::string& name);

}  // namespace cairn::updater
