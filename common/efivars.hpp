// UEFI variables through efivarfs (/sys/firmware/efi/efivars): each variable is a file named
// Name-vendorguid whose content is 4 bytes of attributes (little endian) then the data. A write
// must be one write() call; files are immutable (chattr +i) until that flag is cleared.
// Used by the updater's boot control and by cairn-init (which leaves the reason a boot failed).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/uuid.hpp"

namespace cairn {

inline constexpr const char* efi_global_guid = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
// Cairn's own vendor GUID, for its variables (e.g. CairnBootFailure).
inline constexpr const char* cairn_vendor_guid = "3d7c2a5e-8f1b-4c6d-9e0a-5b4f7c1d2e93";
// The Boot Loader Interface's vendor GUID: systemd-stub sets LoaderDevicePartUUID there.
inline constexpr const char* loader_vendor_guid = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

inline constexpr uint32_t efi_attr_non_volatile = 0x1;
inline constexpr uint32_t efi_attr_bootservice_access = 0x2;
inline constexpr uint32_t efi_attr_runtime_access = 0x4;
inline constexpr uint32_t efi_attr_nv_bs_rt = 0x7;

class EfiVars {
public:
    struct Variable {
        uint32_t attributes = 0;
        std::vector<uint8_t> data;
    };

    explicit EfiVars(std::filesystem::path dir = "/sys/firmware/efi/efivars");
    const std::filesystem::path& dir() const { return dir_; }
    // nullopt when the variable does not exist. Errors name the variable.
    std::optional<Variable> read(const std::string& name, const std::string& vendor) const;
    void write(const std::string& name, const std::string& vendor, uint32_t attributes, const std::vector<uint8_t>& data);
    void remove(const std::string& name, const std::string& vendor);  // no error when missing
    // Names (without the vendor) of the variables of one vendor.
    std::vector<std::string> list(const std::string& vendor) const;

private:
    std::filesystem::path path(const std::string& name, const std::string& vendor) const;
    std::filesystem::path dir_;
};

// The partition the firmware started the boot loader (here: the UKI's stub) from, as
// LoaderDevicePartUUID says (a UTF-16 UUID string); nullopt when it is not set or malformed.
std::optional<Uuid> loader_device_part_uuid(const EfiVars& vars);

}  // namespace cairn
