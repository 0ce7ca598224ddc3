// The TCG PC Client crypto-agile event log a UEFI firmware keeps of what it measured into the TPM
// (Linux: /sys/kernel/security/tpm0/binary_bios_measurements), parsed and replayed.
//
// Layout (TCG PC Client Platform Firmware Profile; little-endian throughout): a first event in the
// old SHA-1 format (TCG_PCR_EVENT) whose data is the "Spec ID Event03" structure naming the digest
// algorithms and their sizes, then TCG_PCR_EVENT2 records, each with one digest per algorithm
// (`../shared/notes/attestation.md` §1). The log is hostile input: every count and size is checked
// against what is left of the input before anything is allocated, and a fault is an Error naming
// the byte offset and what is wrong.
//
// The log proves nothing by itself: only a replay that reproduces PCR values the TPM signed (a
// quote) makes it trustworthy, and then only the digests are; the event data beside a digest is
// trusted only where the digest can be recomputed from it (event_digest_mismatches).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::attestation {

// TPM_ALG_ID values of the digest algorithms a log may carry.
inline constexpr uint16_t alg_sha1 = 0x0004;
inline constexpr uint16_t alg_sha256 = 0x000B;
inline constexpr uint16_t alg_sha384 = 0x000C;
inline constexpr uint16_t alg_sha512 = 0x000D;
inline constexpr uint16_t alg_sm3_256 = 0x0012;

// The digest size of a known algorithm, 0 for an unknown one.
size_t digest_size(uint16_t alg);
// "sha1", "sha256", "sha384", "sha512", "sm3_256", or "0x...." for an unknown one.
std::string alg_name(uint16_t alg);
// The digest of `data` with `alg` (SHA-1/256/384/512; Error for others, e.g. SM3, which OpenSSL
// builds may lack).
std::string hash(uint16_t alg, std::string_view data);

// Event types (TCG PC Client PFP; edk2 UefiTcgPlatform.h).
namespace event_type {
inline constexpr uint32_t preboot_cert = 0x0;
inline constexpr uint32_t post_code = 0x1;
inline constexpr uint32_t no_action = 0x3;
inline constexpr uint32_t separator = 0x4;
inline constexpr uint32_t action = 0x5;
inline constexpr uint32_t event_tag = 0x6;
inline constexpr uint32_t s_crtm_contents = 0x7;
inline constexpr uint32_t s_crtm_version = 0x8;
inline constexpr uint32_t cpu_microcode = 0x9;
inline constexpr uint32_t platform_config_flags = 0xA;
inline constexpr uint32_t table_of_devices = 0xB;
inline constexpr uint32_t compact_hash = 0xC;
inline constexpr uint32_t ipl = 0xD;
inline constexpr uint32_t ipl_partition_data = 0xE;
inline constexpr uint32_t nonhost_code = 0xF;
inline constexpr uint32_t nonhost_config = 0x10;
inline constexpr uint32_t nonhost_info = 0x11;
inline constexpr uint32_t omit_boot_device_events = 0x12;
inline constexpr uint32_t efi_base = 0x80000000;
inline constexpr uint32_t efi_variable_driver_config = efi_base + 0x1;
inline constexpr uint32_t efi_variable_boot = efi_base + 0x2;
inline constexpr uint32_t efi_boot_services_application = efi_base + 0x3;
inline constexpr uint32_t efi_boot_services_driver = efi_base + 0x4;
inline constexpr uint32_t efi_runtime_services_driver = efi_base + 0x5;
inline constexpr uint32_t efi_gpt_event = efi_base + 0x6;
inline constexpr uint32_t efi_action = efi_base + 0x7;
inline constexpr uint32_t efi_platform_firmware_blob = efi_base + 0x8;
inline constexpr uint32_t efi_handoff_tables = efi_base + 0x9;
inline constexpr uint32_t efi_platform_firmware_blob2 = efi_base + 0xA;
inline constexpr uint32_t efi_handoff_tables2 = efi_base + 0xB;
inline constexpr uint32_t efi_variable_boot2 = efi_base + 0xC;
inline constexpr uint32_t efi_hcrtm_event = efi_base + 0x10;
inline constexpr uint32_t efi_variable_authority = efi_base + 0xE0;
inline constexpr uint32_t efi_spdm_firmware_blob = efi_base + 0xE1;
inline constexpr uint32_t efi_spdm_firmware_config = efi_base + 0xE2;
}  // namespace event_type
// "EV_SEPARATOR", "EV_EFI_VARIABLE_AUTHORITY", ...; "EV_UNKNOWN_0x..." for others.
std::string event_type_name(uint32_t type);

// Bounds on what a log may claim (a real OVMF log: ~15 KB, ~60 events, 1-4 banks).
inline constexpr size_t max_log_size = 16 * 1024 * 1024;
inline constexpr size_t max_events = 100000;
inline constexpr uint32_t max_algorithms = 16;
inline constexpr uint32_t max_pcr = 23;  // PCRs 0-23; events for other indexes are refused

struct SpecIdEvent {
    uint32_t platform_class = 0;
    uint8_t version_minor = 0, version_major = 0, errata = 0, uintn_size = 0;
    std::vector<std::pair<uint16_t, uint16_t>> algorithms;  // (algorithm, digest size), as listed
    std::string vendor_info;
};

struct EventDigest {
    uint16_t alg = 0;
    std::string bytes;
};

struct Event {
    size_t offset = 0;  // of the record in the log
    uint32_t pcr = 0;
    uint32_t type = 0;
    std::vector<EventDigest> digests;  // in the log's order, one per algorithm of the Spec ID event
    std::string data;
    // The digest for `alg`, or nullptr when the event has none.
    const std::string* digest(uint16_t alg) const;
};

struct EventLog {
    SpecIdEvent spec;
    uint8_t startup_locality = 0;  // from an EV_NO_ACTION "StartupLocality" event in PCR 0 (0 when none)
    std::vector<Event> events;     // every event after the Spec ID event, EV_NO_ACTION ones included
    bool has_bank(uint16_t alg) const;
};

// Parses a whole log; `what` names it in errors ("<what>: offset N: <fault>").
EventLog parse_event_log(std::string_view bytes, const std::string& what);

// Replays the log into PCRs 0-23 of one bank: PCR = H(PCR || digest) per event in log order,
// EV_NO_ACTION skipped, PCR 0 starting at 0...0||locality when a StartupLocality event exists.
// Error when the log has no such bank.
std::array<std::string, max_pcr + 1> replay(const EventLog& log, uint16_t alg);

// Events whose digest (in bank `alg`) can be recomputed from their own data and is not that:
// EV_SEPARATOR, EV_EFI_ACTION, EV_ACTION = H(data); EV_EFI_VARIABLE_DRIVER_CONFIG and
// EV_EFI_VARIABLE_AUTHORITY = H(whole data); EV_EFI_VARIABLE_BOOT = H(VariableData)
// (edk2 Tcg2Dxe MeasureVariable); systemd-stub's EV_IPL name events (PCR 11, "<section>\0" as
// UTF-16LE) are left out because their digest is of the ASCII name. Each entry: "offset N: why".
std::vector<std::string> event_digest_mismatches(const EventLog& log, uint16_t alg);

// Typed views of event data. Each throws Error naming the event's offset when the data is not
// that structure.
using Guid = std::array<uint8_t, 16>;  // as stored (mixed-endian EFI_GUID bytes)
std::string guid_text(const Guid& guid);  // "8be4df61-93ca-11d2-aa0d-00e098032b8c"
inline constexpr Guid efi_global_variable_guid = {0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11,
                                                  0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c};
inline constexpr Guid image_security_database_guid = {0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45,
                                                      0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f};

// UEFI_VARIABLE_DATA (EV_EFI_VARIABLE_DRIVER_CONFIG, _BOOT, _BOOT2, _AUTHORITY).
struct UefiVariable {
    Guid vendor{};
    std::string name;  // the UTF-16LE name as UTF-8 (non-ASCII code units become '?')
    std::string data;
};
UefiVariable parse_uefi_variable(const Event& event);

// EFI_SIGNATURE_DATA (what an EV_EFI_VARIABLE_AUTHORITY's VariableData holds for an X.509 db
// entry): the owner GUID and the DER certificate.
struct SignatureData {
    Guid owner{};
    std::string certificate;  // DER
};
SignatureData parse_signature_data(const UefiVariable& authority, size_t offset);

// UEFI_IMAGE_LOAD_EVENT (EV_EFI_BOOT_SERVICES_APPLICATION/_DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER).
struct ImageLoad {
    uint64_t location = 0, length = 0, link_time_address = 0;
    std::string device_path;  // the raw EFI device path
};
ImageLoad parse_image_load(const Event& event);
// True when an image load's device path is systemd-stub's vendor media path for the kernel it
// loads from its .linux section (VenMedia 55c5d1f8-04cd-46b5-8a20-e56cbb3052d0): firmware
// measures that load into PCR 4 when Secure Boot is off (note §3).
bool is_stub_kernel_load(const ImageLoad& image);

// TCG_PCClientTaggedEvent (EV_EVENT_TAG; Linux's EFI stub in PCR 9).
struct TaggedEvent {
    uint32_t id = 0;
    std::string data;
};
inline constexpr uint32_t linux_tag_load_options = 0x8F3B22ED;  // "LOADED_IMAGE::LoadOptions"
inline constexpr uint32_t linux_tag_initrd = 0x8F3B22EC;        // "Linux initrd"
TaggedEvent parse_tagged_event(const Event& event);

// The text of an event whose data is a string: EV_EFI_ACTION/EV_ACTION/EV_IPL as ASCII, or as
// UTF-16LE when it looks like that (systemd-stub's EV_IPL section names); trailing NULs dropped.
std::string event_text(const Event& event);

}  // namespace cairn::attestation
