#include "imager/disk_formats.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "common/units.hpp"
#include "common/uuid.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string valid_names() {
    std::string out;
    for (DiskFormat f : all_disk_formats) out += (out.empty() ? "" : ", ") + std::string(disk_format_name(f));
    return out;
}

// The subformat qemu-img is asked for ("" for none), see disk_formats.hpp.
std::string subformat(DiskFormat format) {
    switch (format) {
        case DiskFormat::Vhdx: return "dynamic";
        case DiskFormat::Vmdk: return "streamOptimized";
        default: return "";
    }
}

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }
void put_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_le64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// CRC-32C (Castagnoli), as VHDX checksums its headers.
uint32_t crc32c(const uint8_t* p, size_t n) {
    static const auto table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

// A GUID as VHDX stores it (the first three fields little-endian), from a derived UUID.
std::array<uint8_t, 16> guid_bytes(const Uuid& u) {
    const auto& b = u.bytes;
    return {b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]};
}

bool all_zero(const uint8_t* p, size_t n) { return std::all_of(p, p + n, [](uint8_t c) { return c == 0; }); }

// VHDX (Microsoft's VHDX format specification 1.0): the file identifier at 0, two 4 KiB headers
// at 64 KiB and 128 KiB, the region table at 192 KiB naming the metadata region.
constexpr uint64_t vhdx_header_at[2] = {64 * KiB, 128 * KiB};
constexpr size_t vhdx_header_size = 4 * KiB;
constexpr uint64_t vhdx_region_table_at = 192 * KiB;
constexpr size_t vhdx_table_size = 64 * KiB;
// {8B7CA206-4790-4B9A-B8FE-575F050F886E} and {BECA12AB-B2E6-4523-93EF-C309E000C746}, as stored.
constexpr uint8_t vhdx_metadata_region[16] = {0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e};
constexpr uint8_t vhdx_page83_item[16] = {0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46};
// Header fields.
constexpr size_t h_checksum = 4, h_sequence = 8, h_file_write_guid = 16, h_data_write_guid = 32, h_log_guid = 48, h_log_length = 68,
                 h_log_offset = 72;

void seal_vhdx_header(std::vector<uint8_t>& h) {
    put_le32(h.data() + h_checksum, 0);
    put_le32(h.data() + h_checksum, crc32c(h.data(), h.size()));
}

// Replaces qemu-img's random identities in a VHDX with ones derived from its content.
void normalise_vhdx(const fs::path& path) {
    const std::string what = path.string();
    UniqueFd fd = open_file(path, O_RDWR);
    const uint64_t file_size = fs::file_size(path);
    char id[8];
    pread_exact(fd.get(), id, sizeof id, 0, what);
    if (std::memcmp(id, "vhdxfile", 8) != 0) fail(what + ": qemu-img wrote no VHDX file identifier");

    std::array<std::vector<uint8_t>, 2> headers;
    for (int i = 0; i < 2; ++i) {
        auto& h = headers[i];
        h.resize(vhdx_header_size);
        pread_exact(fd.get(), h.data(), h.size(), vhdx_header_at[i], what);
        const uint32_t stored = le32(h.data() + h_checksum);
        put_le32(h.data() + h_checksum, 0);
        if (std::memcmp(h.data(), "head", 4) != 0 || crc32c(h.data(), h.size()) != stored)
            fail(what + ": VHDX header " + std::to_string(i + 1) + " is not valid as qemu-img wrote it");
        // A log GUID means the log holds writes to replay: never the case after a clean conversion.
        if (!all_zero(h.data() + h_log_guid, 16)) fail(what + ": VHDX header " + std::to_string(i + 1) + " has a log to replay");
    }

    // The log is empty (LogGuid zero), but qemu-img leaves its last entries, with their random log
    // GUID, in the log region: zeros instead, which readers ignore as they ignore the old entries.
    const uint64_t log_offset = le64(headers[0].data() + h_log_offset);
    const uint32_t log_length = le32(headers[0].data() + h_log_length);
    if (log_offset % MiB != 0 || log_length % MiB != 0 || log_offset + log_length > file_size)
        fail(what + ": VHDX log region at " + std::to_string(log_offset) + " (" + std::to_string(log_length) + " bytes) is not in the file");
    const std::vector<uint8_t> zeros(MiB, 0);
    for (uint64_t at = 0; at < log_length; at += MiB) pwrite_exact(fd.get(), zeros.data(), MiB, log_offset + at, what);

    // The virtual disk id: the Page 83 metadata item, found through the region table.
    std::vector<uint8_t> table(vhdx_table_size);
    pread_exact(fd.get(), table.data(), table.size(), vhdx_region_table_at, what);
    if (std::memcmp(table.data(), "regi", 4) != 0) fail(what + ": no VHDX region table");
    uint64_t metadata_at = 0;
    for (uint32_t i = 0, n = std::min<uint32_t>(le32(table.data() + 8), 2047); i < n; ++i) {
        const uint8_t* e = table.data() + 16 + 32 * i;
        if (std::memcmp(e, vhdx_metadata_region, 16) == 0) metadata_at = le64(e + 16);
    }
    if (metadata_at == 0 || metadata_at + vhdx_table_size > file_size) fail(what + ": no VHDX metadata region");
    pread_exact(fd.get(), table.data(), table.size(), metadata_at, what);
    if (std::memcmp(table.data(), "metadata", 8) != 0) fail(what + ": no VHDX metadata table");
    uint64_t page83_at = 0;
    for (uint32_t i = 0, n = std::min<uint32_t>(uint32_t(table[10]) | uint32_t(table[11]) << 8, 2047); i < n; ++i) {
        const uint8_t* e = table.data() + 32 + 32 * i;
        if (std::memcmp(e, vhdx_page83_item, 16) == 0 && le32(e + 20) == 16) page83_at = metadata_at + le32(e + 16);
    }
    if (page83_at == 0 || page83_at + 16 > file_size) fail(what + ": no VHDX virtual disk id (Page 83 metadata)");

    // Identities zeroed, sequence numbers from 1 (their order kept: the newer header stays newer).
    const uint64_t first = std::min(le64(headers[0].data() + h_sequence), le64(headers[1].data() + h_sequence));
    for (auto& h : headers) {
        put_le64(h.data() + h_sequence, 1 + (le64(h.data() + h_sequence) - first));
        std::memset(h.data() + h_file_write_guid, 0, 32);  // FileWriteGuid, DataWriteGuid
    }
    const uint8_t none[16] = {};
    auto write_ids = [&] {
        for (int i = 0; i < 2; ++i) {
            seal_vhdx_header(headers[i]);
            pwrite_exact(fd.get(), headers[i].data(), headers[i].size(), vhdx_header_at[i], what);
        }
    };
    pwrite_exact(fd.get(), none, 16, page83_at, what);
    write_ids();

    // Then identities derived from the content with them zeroed.
    const std::string content = sha256_file_hex(path);
    const auto file_write = guid_bytes(Uuid::derive(content, "cairn:vhdx:file-write-guid"));
    const auto data_write = guid_bytes(Uuid::derive(content, "cairn:vhdx:data-write-guid"));
    const auto disk_id = guid_bytes(Uuid::derive(content, "cairn:vhdx:virtual-disk-id"));
    for (auto& h : headers) {
        std::memcpy(h.data() + h_file_write_guid, file_write.data(), 16);
        std::memcpy(h.data() + h_data_write_guid, data_write.data(), 16);
    }
    pwrite_exact(fd.get(), disk_id.data(), 16, page83_at, what);
    write_ids();
    if (::fsync(fd.get()) != 0) fail_errno("syncing " + what);
}

// Replaces qemu-img's random content id (CID) in a VMDK's descriptor with one derived from its content.
void normalise_vmdk(const fs::path& path) {
    const std::string what = path.string();
    UniqueFd fd = open_file(path, O_RDWR);
    uint8_t header[512];
    pread_exact(fd.get(), header, sizeof header, 0, what);
    if (std::memcmp(header, "KDMV", 4) != 0) fail(what + ": qemu-img wrote no VMDK sparse header");
    const uint64_t at = le64(header + 28) * 512, size = le64(header + 36) * 512;
    if (size == 0 || size > MiB || at + size > fs::file_size(path)) fail(what + ": VMDK descriptor is not in the file");
    std::string area(size, '\0');
    pread_exact(fd.get(), area.data(), size, at, what);
    const std::string text = area.substr(0, area.find('\0'));
    size_t line = 0;
    if (!text.starts_with("CID=")) {
        line = text.find("\nCID=");
        if (line == std::string::npos) fail(what + ": VMDK descriptor has no CID");
        ++line;
    }
    const size_t value = line + 4, end = std::min(text.find('\n', value), text.size());
    auto write_cid = [&](uint32_t cid) {
        char hex[9];
        std::snprintf(hex, sizeof hex, "%08x", cid);
        std::string updated = text.substr(0, value) + hex + text.substr(end);
        if (updated.size() >= size) fail(what + ": VMDK descriptor has no room for its CID");
        updated.resize(size, '\0');
        pwrite_exact(fd.get(), updated.data(), updated.size(), at, what);
    };
    write_cid(0);
    const Digest d = hmac_sha256(sha256_file_hex(path), "cairn:vmdk:cid");
    uint32_t cid = le32(d.data());
    if (cid == 0 || cid == 0xffffffffu) cid = 1;  // ffffffff means "no parent" in parentCID
    write_cid(cid);
    if (::fsync(fd.get()) != 0) fail_errno("syncing " + what);
}

// Runs qemu-img; a failure is an Error naming `file` and qemu-img's last words.
std::string qemu_img(const std::vector<std::string>& argv, const fs::path& file, const std::string& doing) {
    std::vector<std::string> full = {"qemu-img"};
    full.insert(full.end(), argv.begin(), argv.end());
    RunResult r = run(full);
    if (r.exit_code != 0) {
        std::string said = last_lines(r.err.empty() ? r.out : r.err, 3);
        fail(file.string() + ": qemu-img " + doing + " failed (exit " + std::to_string(r.exit_code) + ")" + (said.empty() ? "" : ": " + said));
    }
    return r.out;
}

json convert(const fs::path& raw, DiskFormat format, const fs::path& out) {
    const std::string name(disk_format_name(format));
    const std::string sub = subformat(format);
    std::vector<std::string> argv = {"convert", "-q", "-f", "raw", "-O", name};
    if (!sub.empty()) argv.insert(argv.end(), {"-o", "subformat=" + sub});
    argv.insert(argv.end(), {raw.string(), out.string()});
    qemu_img(argv, out, "convert");
    if (format == DiskFormat::Vhdx) normalise_vhdx(out);
    if (format == DiskFormat::Vmdk) normalise_vmdk(out);
    qemu_img({"check", "-q", "-f", name, out.string()}, out, "check");
    json info;
    try {
        info = json::parse(qemu_img({"info", "--output=json", "-f", name, out.string()}, out, "info"));
    } catch (const json::exception& e) {
        fail(out.string() + ": qemu-img info printed no JSON: " + e.what());
    }
    const uint64_t raw_size = fs::file_size(raw);
    if (info.value("format", "") != name || info.value("virtual-size", uint64_t(0)) != raw_size)
        fail(out.string() + ": qemu-img info says " + info.value("format", "?") + " of " + std::to_string(info.value("virtual-size", uint64_t(0))) +
             " bytes, not " + name + " of " + std::to_string(raw_size) + " bytes");
    json entry = {{"file", out.filename().string()}, {"format", name}};
    if (!sub.empty()) entry["subformat"] = sub;
    entry["size"] = fs::file_size(out);
    entry["virtual_size"] = raw_size;
    entry["sha256"] = sha256_file_hex(out);
    return entry;
}

}  // namespace

std::string_view disk_format_name(DiskFormat format) {
    switch (format) {
        case DiskFormat::Raw: return "raw";
        case DiskFormat::Qcow2: return "qcow2";
        case DiskFormat::Vhdx: return "vhdx";
        case DiskFormat::Vmdk: return "vmdk";
    }
    return "?";
}

std::vector<DiskFormat> parse_disk_formats(std::string_view list, const std::string& where) {
    std::vector<bool> wanted(std::size(all_disk_formats), false);
    wanted[0] = true;  // raw: always
    size_t pos = 0;
    for (;;) {
        const size_t comma = list.find(',', pos);
        std::string item = trim(list.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
        std::transform(item.begin(), item.end(), item.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (item.empty()) fail(where + ": an empty format name in '" + std::string(list) + "' (valid: " + valid_names() + ")");
        bool known = false;
        for (size_t i = 0; i < std::size(all_disk_formats); ++i)
            if (item == disk_format_name(all_disk_formats[i])) known = wanted[i] = true;
        if (!known) fail(where + ": '" + item + "' is not a disk format (valid: " + valid_names() + ")");
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
    }
    std::vector<DiskFormat> out;
    for (size_t i = 0; i < std::size(all_disk_formats); ++i)
        if (wanted[i]) out.push_back(all_disk_formats[i]);
    return out;
}

bool needs_qemu_img(const std::vector<DiskFormat>& formats) {
    return std::any_of(formats.begin(), formats.end(), [](DiskFormat f) { return f != DiskFormat::Raw; });
}

void require_disk_format_tools(const std::vector<DiskFormat>& formats) {
    if (needs_qemu_img(formats) && !find_program("qemu-img"))
        fail("--format: qemu-img is not installed (Debian package qemu-utils); it writes the qcow2, vhdx and vmdk disks");
}

json write_disk_formats(const fs::path& disk_raw, const std::vector<DiskFormat>& formats, const fs::path& work_dir,
                        const std::function<void(const std::string&)>& note) {
    json entries = json::array();
    if (!needs_qemu_img(formats)) return entries;
    require_disk_format_tools(formats);
    const fs::path raw = fs::absolute(disk_raw);  // an absolute path: qemu-img never reads "name:" as a protocol
    std::vector<fs::path> written;
    try {
        for (DiskFormat f : all_disk_formats) {
            if (f == DiskFormat::Raw || std::find(formats.begin(), formats.end(), f) == formats.end()) continue;
            const fs::path out = fs::absolute(work_dir / (raw.stem().string() + "." + std::string(disk_format_name(f))));
            written.push_back(out);
            json entry = convert(raw, f, out);
            if (note) note(entry["file"].get<std::string>() + ": " + format_size(entry["size"]) + " (" + std::string(disk_format_name(f)) +
                           (entry.contains("subformat") ? " " + entry["subformat"].get<std::string>() : "") + ")");
            entries.push_back(std::move(entry));
        }
    } catch (...) {
        std::error_code ec;
        for (const auto& p : written)
            if (fs::is_regular_file(p, ec)) fs::remove(p, ec);
        throw;
    }
    return entries;
}

}  // namespace cairn::imager
