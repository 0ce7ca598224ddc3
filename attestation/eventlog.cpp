#include "attestation/eventlog.hpp"

#include <openssl/evp.h>

#include <cstdio>
#include <cstring>

#include "common/error.hpp"

namespace cairn::attestation {

namespace {

// Little-endian reads from a bounded input; every fault names `what` and the offset of the
// record being read.
class Reader {
public:
    Reader(std::string_view bytes, const std::string& what) : bytes_(bytes), what_(what) {}
    size_t pos() const { return pos_; }
    size_t left() const { return bytes_.size() - pos_; }
    bool done() const { return pos_ == bytes_.size(); }
    void mark() { record_ = pos_; }
    [[noreturn]] void fault(const std::string& why) const {
        fail(what_ + ": offset " + std::to_string(record_) + ": " + why);
    }
    void need(size_t n, const char* field) const {
        if (n > left())
            fault(std::string("truncated: ") + field + " needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left");
    }
    uint64_t le(size_t n, const char* field) {
        need(n, field);
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v |= uint64_t(uint8_t(bytes_[pos_ + i])) << (8 * i);
        pos_ += n;
        return v;
    }
    uint8_t u8(const char* f) { return uint8_t(le(1, f)); }
    uint16_t u16(const char* f) { return uint16_t(le(2, f)); }
    uint32_t u32(const char* f) { return uint32_t(le(4, f)); }
    uint64_t u64(const char* f) { return le(8, f); }
    std::string bytes(size_t n, const char* field) {
        need(n, field);
        std::string s(bytes_.substr(pos_, n));
        pos_ += n;
        return s;
    }

private:
    std::string_view bytes_;
    const std::string& what_;
    size_t pos_ = 0, record_ = 0;
};

std::string hex32(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%X", v);
    return buf;
}

std::string event_where(const Event& e) {
    return "event at offset " + std::to_string(e.offset) + " (" + event_type_name(e.type) + ", PCR " + std::to_string(e.pcr) + ")";
}

std::string utf16_to_text(std::string_view utf16) {
    std::string out;
    for (size_t i = 0; i + 1 < utf16.size(); i += 2) {
        uint16_t c = uint16_t(uint8_t(utf16[i]) | (uint8_t(utf16[i + 1]) << 8));
        out += (c >= 0x20 && c < 0x7f) ? char(c) : (c == 0 ? '\0' : '?');
    }
    return out;
}

const EVP_MD* md_of(uint16_t alg) {
    switch (alg) {
    case alg_sha1: return EVP_sha1();
    case alg_sha256: return EVP_sha256();
    case alg_sha384: return EVP_sha384();
    case alg_sha512: return EVP_sha512();
    default: return nullptr;
    }
}

}  // namespace

size_t digest_size(uint16_t alg) {
    switch (alg) {
    case alg_sha1: return 20;
    case alg_sha256: return 32;
    case alg_sha384: return 48;
    case alg_sha512: return 64;
    case alg_sm3_256: return 32;
    default: return 0;
    }
}

std::string alg_name(uint16_t alg) {
    switch (alg) {
    case alg_sha1: return "sha1";
    case alg_sha256: return "sha256";
    case alg_sha384: return "sha384";
    case alg_sha512: return "sha512";
    case alg_sm3_256: return "sm3_256";
    default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%04X", alg);
        return buf;
    }
    }
}

std::string hash(uint16_t alg, std::string_view data) {
    const EVP_MD* md = md_of(alg);
    if (!md) fail("no digest implementation for TPM algorithm " + alg_name(alg));
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_Digest(data.data(), data.size(), out, &size, md, nullptr) != 1) fail("digest " + alg_name(alg) + " failed");
    return std::string(reinterpret_cast<const char*>(out), size);
}

std::string event_type_name(uint32_t type) {
    using namespace event_type;
    switch (type) {
    case preboot_cert: return "EV_PREBOOT_CERT";
    case post_code: return "EV_POST_CODE";
    case no_action: return "EV_NO_ACTION";
    case separator: return "EV_SEPARATOR";
    case action: return "EV_ACTION";
    case event_tag: return "EV_EVENT_TAG";
    case s_crtm_contents: return "EV_S_CRTM_CONTENTS";
    case s_crtm_version: return "EV_S_CRTM_VERSION";
    case cpu_microcode: return "EV_CPU_MICROCODE";
    case platform_config_flags: return "EV_PLATFORM_CONFIG_FLAGS";
    case table_of_devices: return "EV_TABLE_OF_DEVICES";
    case compact_hash: return "EV_COMPACT_HASH";
    case ipl: return "EV_IPL";
    case ipl_partition_data: return "EV_IPL_PARTITION_DATA";
    case nonhost_code: return "EV_NONHOST_CODE";
    case nonhost_config: return "EV_NONHOST_CONFIG";
    case nonhost_info: return "EV_NONHOST_INFO";
    case omit_boot_device_events: return "EV_OMIT_BOOT_DEVICE_EVENTS";
    case efi_variable_driver_config: return "EV_EFI_VARIABLE_DRIVER_CONFIG";
    case efi_variable_boot: return "EV_EFI_VARIABLE_BOOT";
    case efi_boot_services_application: return "EV_EFI_BOOT_SERVICES_APPLICATION";
    case efi_boot_services_driver: return "EV_EFI_BOOT_SERVICES_DRIVER";
    case efi_runtime_services_driver: return "EV_EFI_RUNTIME_SERVICES_DRIVER";
    case efi_gpt_event: return "EV_EFI_GPT_EVENT";
    case efi_action: return "EV_EFI_ACTION";
    case efi_platform_firmware_blob: return "EV_EFI_PLATFORM_FIRMWARE_BLOB";
    case efi_handoff_tables: return "EV_EFI_HANDOFF_TABLES";
    case efi_platform_firmware_blob2: return "EV_EFI_PLATFORM_FIRMWARE_BLOB2";
    case efi_handoff_tables2: return "EV_EFI_HANDOFF_TABLES2";
    case efi_variable_boot2: return "EV_EFI_VARIABLE_BOOT2";
    case efi_hcrtm_event: return "EV_EFI_HCRTM_EVENT";
    case efi_variable_authority: return "EV_EFI_VARIABLE_AUTHORITY";
    case efi_spdm_firmware_blob: return "EV_EFI_SPDM_FIRMWARE_BLOB";
    case efi_spdm_firmware_config: return "EV_EFI_SPDM_FIRMWARE_CONFIG";
    default: return "EV_UNKNOWN_" + hex32(type);
    }
}

const std::string* Event::digest(uint16_t alg) const {
    for (const auto& d : digests)
        if (d.alg == alg) return &d.bytes;
    return nullptr;
}

bool EventLog::has_bank(uint16_t alg) const {
    for (const auto& [a, size] : spec.algorithms)
        if (a == alg) return true;
    return false;
}

EventLog parse_event_log(std::string_view bytes, const std::string& what) {
    if (bytes.size() > max_log_size)
        fail(what + ": " + std::to_string(bytes.size()) + " bytes, more than an event log may have (" + std::to_string(max_log_size) + ")");
    Reader r(bytes, what);
    EventLog log;
    // The first event: TCG_PCR_EVENT (SHA-1 format) holding TCG_EfiSpecIDEvent.
    r.mark();
    const uint32_t pcr = r.u32("PCRIndex");
    const uint32_t type = r.u32("EventType");
    const std::string sha1 = r.bytes(20, "Digest");
    const uint32_t size = r.u32("EventSize");
    if (pcr != 0 || type != event_type::no_action)
        r.fault("the first event is " + event_type_name(type) + " in PCR " + std::to_string(pcr) +
                ", not the EV_NO_ACTION Spec ID event of a crypto-agile log (an SHA-1-only log is not supported)");
    if (sha1 != std::string(20, '\0')) r.fault("the Spec ID event's digest is not zero");
    std::string spec_data = r.bytes(size, "the Spec ID event");
    {
        Reader s(spec_data, what);
        const std::string signature = s.bytes(16, "Spec ID signature");
        if (signature != std::string("Spec ID Event03\0", 16))
            r.fault("the first event is not a \"Spec ID Event03\" (crypto-agile log) event");
        log.spec.platform_class = s.u32("platformClass");
        log.spec.version_minor = s.u8("specVersionMinor");
        log.spec.version_major = s.u8("specVersionMajor");
        log.spec.errata = s.u8("specErrata");
        log.spec.uintn_size = s.u8("uintnSize");
        const uint32_t count = s.u32("numberOfAlgorithms");
        if (count == 0 || count > max_algorithms)
            r.fault("the Spec ID event lists " + std::to_string(count) + " algorithms (1 to " + std::to_string(max_algorithms) + " expected)");
        for (uint32_t i = 0; i < count; ++i) {
            const uint16_t alg = s.u16("algorithmId");
            const uint16_t dsize = s.u16("digestSize");
            const size_t known = digest_size(alg);
            if (known == 0) r.fault("the Spec ID event names an unknown digest algorithm " + alg_name(alg));
            if (dsize != known)
                r.fault("the Spec ID event gives " + alg_name(alg) + " a digest size of " + std::to_string(dsize) + ", not " + std::to_string(known));
            if (log.has_bank(alg)) r.fault("the Spec ID event lists " + alg_name(alg) + " twice");
            log.spec.algorithms.emplace_back(alg, dsize);
        }
        const uint8_t vendor = s.u8("vendorInfoSize");
        log.spec.vendor_info = s.bytes(vendor, "vendorInfo");
        if (!s.done()) r.fault("the Spec ID event has " + std::to_string(s.left()) + " bytes after vendorInfo");
    }
    // TCG_PCR_EVENT2 records.
    while (!r.done()) {
        if (log.events.size() >= max_events) r.fault("more than " + std::to_string(max_events) + " events");
        r.mark();
        Event e;
        e.offset = r.pos();
        e.pcr = r.u32("PCRIndex");
        e.type = r.u32("EventType");
        if (e.pcr > max_pcr) r.fault("PCR index " + std::to_string(e.pcr) + " (0 to " + std::to_string(max_pcr) + " expected)");
        const uint32_t count = r.u32("digest count");
        if (count != log.spec.algorithms.size())
            r.fault(std::to_string(count) + " digests, but the Spec ID event lists " + std::to_string(log.spec.algorithms.size()) + " algorithms");
        for (uint32_t i = 0; i < count; ++i) {
            const uint16_t alg = r.u16("hashAlg");
            size_t dsize = 0;
            for (const auto& [a, s] : log.spec.algorithms)
                if (a == alg) dsize = s;
            if (dsize == 0) r.fault("a digest of algorithm " + alg_name(alg) + ", which the Spec ID event does not list");
            if (e.digest(alg)) r.fault("two " + alg_name(alg) + " digests");
            e.digests.push_back({alg, r.bytes(dsize, "digest")});
        }
        const uint32_t esize = r.u32("EventSize");
        if (esize > r.left())
            r.fault("EventSize " + std::to_string(esize) + " but only " + std::to_string(r.left()) + " bytes left");
        e.data = r.bytes(esize, "event data");
        if (e.type == event_type::no_action && e.pcr == 0 && e.data.size() == 17 &&
            e.data.compare(0, 16, std::string("StartupLocality\0", 16)) == 0)
            log.startup_locality = uint8_t(e.data[16]);
        log.events.push_back(std::move(e));
    }
    return log;
}

std::array<std::string, max_pcr + 1> replay(const EventLog& log, uint16_t alg) {
    if (!log.has_bank(alg)) fail("the event log has no " + alg_name(alg) + " bank");
    std::array<std::string, max_pcr + 1> pcrs;
    const size_t size = digest_size(alg);
    for (auto& p : pcrs) p.assign(size, '\0');
    if (log.startup_locality) pcrs[0].back() = char(log.startup_locality);
    for (const auto& e : log.events) {
        if (e.type == event_type::no_action) continue;
        const std::string* d = e.digest(alg);
        if (!d) fail("event at offset " + std::to_string(e.offset) + " has no " + alg_name(alg) + " digest");
        pcrs[e.pcr] = hash(alg, pcrs[e.pcr] + *d);
    }
    return pcrs;
}

std::vector<std::string> event_digest_mismatches(const EventLog& log, uint16_t alg) {
    using namespace event_type;
    std::vector<std::string> out;
    for (const auto& e : log.events) {
        std::string expected;
        bool known = true;
        switch (e.type) {
        case separator:
        case action:
        case efi_action:
        case efi_variable_driver_config:
        case efi_variable_authority: expected = hash(alg, e.data); break;
        case efi_variable_boot:
            try {
                expected = hash(alg, parse_uefi_variable(e).data);
            } catch (const Error& err) {
                out.push_back(err.what());
                continue;
            }
            break;
        default: known = false;
        }
        if (!known) continue;
        const std::string* d = e.digest(alg);
        if (!d) {
            out.push_back(event_where(e) + ": no " + alg_name(alg) + " digest");
        } else if (*d != expected) {
            // UEFI lets a platform measure an EV_EFI_VARIABLE_AUTHORITY as H(VariableData) too; a
            // mismatch is a fault only if neither form matches.
            if (e.type == efi_variable_authority) {
                try {
                    if (*d == hash(alg, parse_uefi_variable(e).data)) continue;
                } catch (const Error&) {
                }
            }
            out.push_back(event_where(e) + ": its " + alg_name(alg) + " digest is not that of its data");
        }
    }
    return out;
}

std::string guid_text(const Guid& g) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", g[3], g[2], g[1], g[0], g[5], g[4],
                  g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
    return buf;
}

UefiVariable parse_uefi_variable(const Event& event) {
    const std::string what = event_where(event) + ": UEFI_VARIABLE_DATA";
    Reader r(event.data, what);
    UefiVariable v;
    const std::string guid = r.bytes(16, "VariableName");
    std::memcpy(v.vendor.data(), guid.data(), 16);
    const uint64_t name_chars = r.u64("UnicodeNameLength");
    const uint64_t data_size = r.u64("VariableDataLength");
    if (name_chars > r.left() / 2) r.fault("UnicodeNameLength " + std::to_string(name_chars) + " exceeds the event data");
    v.name = utf16_to_text(r.bytes(size_t(name_chars) * 2, "UnicodeName"));
    if (data_size != r.left())
        r.fault("VariableDataLength " + std::to_string(data_size) + " but " + std::to_string(r.left()) + " bytes follow the name");
    v.data = r.bytes(size_t(data_size), "VariableData");
    return v;
}

SignatureData parse_signature_data(const UefiVariable& authority, size_t offset) {
    const std::string what = "event at offset " + std::to_string(offset) + ": EFI_SIGNATURE_DATA";
    if (authority.data.size() <= 16) fail(what + ": " + std::to_string(authority.data.size()) + " bytes, too short for an owner GUID and a certificate");
    SignatureData s;
    std::memcpy(s.owner.data(), authority.data.data(), 16);
    s.certificate = authority.data.substr(16);
    return s;
}

ImageLoad parse_image_load(const Event& event) {
    const std::string what = event_where(event) + ": UEFI_IMAGE_LOAD_EVENT";
    Reader r(event.data, what);
    ImageLoad i;
    i.location = r.u64("ImageLocationInMemory");
    i.length = r.u64("ImageLengthInMemory");
    i.link_time_address = r.u64("ImageLinkTimeAddress");
    const uint64_t path = r.u64("LengthOfDevicePath");
    if (path != r.left()) r.fault("LengthOfDevicePath " + std::to_string(path) + " but " + std::to_string(r.left()) + " bytes follow");
    i.device_path = r.bytes(size_t(path), "DevicePath");
    return i;
}

bool is_stub_kernel_load(const ImageLoad& image) {
    // Media device path (type 4), vendor subtype (3), length 20, GUID 55c5d1f8-04cd-46b5-8a20-e56cbb3052d0.
    static const std::string vendor_media("\x04\x03\x14\x00"
                                          "\xf8\xd1\xc5\x55\xcd\x04\xb5\x46\x8a\x20\xe5\x6c\xbb\x30\x52\xd0",
                                          20);
    return image.device_path.compare(0, vendor_media.size(), vendor_media) == 0;
}

TaggedEvent parse_tagged_event(const Event& event) {
    const std::string what = event_where(event) + ": TCG_PCClientTaggedEvent";
    Reader r(event.data, what);
    TaggedEvent t;
    t.id = r.u32("taggedEventID");
    const uint32_t size = r.u32("taggedEventDataSize");
    if (size != r.left()) r.fault("taggedEventDataSize " + std::to_string(size) + " but " + std::to_string(r.left()) + " bytes follow");
    t.data = r.bytes(size, "taggedEventData");
    return t;
}

std::string event_text(const Event& event) {
    const std::string& d = event.data;
    // UTF-16LE when every second byte is zero (and there is at least one character).
    bool utf16 = d.size() >= 2 && d.size() % 2 == 0;
    for (size_t i = 1; utf16 && i < d.size(); i += 2)
        if (d[i] != '\0') utf16 = false;
    std::string text = utf16 ? utf16_to_text(d) : d;
    while (!text.empty() && text.back() == '\0') text.pop_back();
    return text;
}

}  // namespace cairn::attestation
