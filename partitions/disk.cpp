#include "partitions/disk.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/text.hpp"

namespace cairn::partitions {

namespace fs = std::filesystem;

namespace {

uint32_t crc32(const uint8_t* p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; ++i) {
        c ^= p[i];
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

// GUIDs on disk: the first three fields little endian, the rest as written.
Uuid guid_at(const uint8_t* p) {
    uint8_t b[16] = {p[3], p[2], p[1], p[0], p[5], p[4], p[7], p[6]};
    std::memcpy(b + 8, p + 8, 8);
    return Uuid::from_bytes(b);
}

// A GPT partition name: up to 36 UTF-16LE units, NUL-terminated when shorter; to UTF-8.
std::string utf16_name(const uint8_t* p) {
    std::string out;
    for (size_t i = 0; i < 36; ++i) {
        uint32_t u = uint32_t(p[2 * i]) | uint32_t(p[2 * i + 1]) << 8;
        if (u == 0) break;
        if (u >= 0xd800 && u <= 0xdfff) u = 0xfffd;  // surrogates: not a name Cairn writes
        if (u < 0x80) out += char(u);
        else if (u < 0x800) {
            out += char(0xc0 | u >> 6);
            out += char(0x80 | (u & 0x3f));
        } else {
            out += char(0xe0 | u >> 12);
            out += char(0x80 | ((u >> 6) & 0x3f));
            out += char(0x80 | (u & 0x3f));
        }
    }
    return out;
}

std::string read_line(const fs::path& file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    return line;
}

std::string uevent_value(const fs::path& dir, const std::string& key) {
    std::ifstream in(dir / "uevent");
    std::string line;
    while (std::getline(in, line))
        if (line.starts_with(key + "=")) return line.substr(key.size() + 1);
    return "";
}

bool is_cairn_label(const std::string& label) {
    for (Role role : {Role::Esp, Role::Root, Role::RootVerity})
        for (char slot : {'a', 'b'})
            if (label == label_for(role, slot)) return true;
    return label == label_for(Role::Data) || label == label_for(Role::Log);
}

}  // namespace

DiskTable disk_table(const GptTable& table) {
    DiskTable out;
    out.disk_guid = table.disk_guid;
    for (size_t i = 0; i < table.entries.size(); ++i) out.partitions.push_back({table.entries[i], static_cast<uint32_t>(i + 1)});
    return out;
}

DiskTable parse_primary_gpt(const uint8_t* head, size_t size, uint64_t sector_size, const std::string& what) {
    if (sector_size < 512 || sector_size > 65536 || (sector_size & (sector_size - 1)))
        fail(what + ": unsupported sector size " + std::to_string(sector_size));
    if (size < 2 * sector_size) fail(what + ": too small to hold a GPT");
    const uint8_t* h = head + sector_size;
    if (std::memcmp(h, "EFI PART", 8) != 0) fail(what + ": no GPT (no 'EFI PART' signature at LBA 1)");
    const uint32_t header_size = le32(h + 12);
    if (header_size < 92 || header_size > sector_size) fail(what + ": GPT header size " + std::to_string(header_size) + " is invalid");
    std::vector<uint8_t> copy(h, h + header_size);
    std::memset(copy.data() + 16, 0, 4);
    if (crc32(copy.data(), copy.size()) != le32(h + 16)) fail(what + ": GPT header checksum mismatch (damaged primary GPT)");
    if (le64(h + 24) != 1) fail(what + ": the primary GPT header does not say it is at LBA 1");
    const uint64_t entries_lba = le64(h + 72);
    const uint32_t count = le32(h + 80), entry_size = le32(h + 84);
    if (entry_size < 128 || entry_size > 4096 || entry_size % 8 != 0) fail(what + ": GPT entry size " + std::to_string(entry_size) + " is invalid");
    if (count == 0 || count > 1024) fail(what + ": GPT entry count " + std::to_string(count) + " is out of range");
    if (entries_lba < 2 || entries_lba > 1024) fail(what + ": GPT entry array at LBA " + std::to_string(entries_lba) + " is out of range");
    const uint64_t start = entries_lba * sector_size, bytes = uint64_t(count) * entry_size;
    if (start + bytes > size) fail(what + ": GPT entry array lies beyond the bytes read");
    const uint8_t* e = head + start;
    if (crc32(e, bytes) != le32(h + 88)) fail(what + ": GPT entry array checksum mismatch (damaged primary GPT)");
    const uint64_t first_usable = le64(h + 40), last_usable = le64(h + 48);

    DiskTable out;
    out.disk_guid = guid_at(h + 56);
    out.sector_size = sector_size;
    for (uint32_t i = 0; i < count; ++i) {
        const uint8_t* p = e + uint64_t(i) * entry_size;
        Uuid type = guid_at(p);
        if (type == Uuid{}) continue;
        const uint64_t first = le64(p + 32), last = le64(p + 40);
        if (first > last || first < first_usable || last > last_usable)
            fail(what + ": GPT entry " + std::to_string(i + 1) + " lies outside the usable area");
        GptEntry entry;
        entry.type = type;
        entry.uuid = guid_at(p + 16);
        entry.offset = first * sector_size;
        entry.size = (last - first + 1) * sector_size;
        entry.attributes = le64(p + 48);
        entry.label = utf16_name(p + 56);
        out.partitions.push_back({entry, i + 1});
    }
    return out;
}

DiskTable read_primary_gpt(const fs::path& device, uint64_t sector_size) {
    UniqueFd fd = open_file(device, O_RDONLY | O_CLOEXEC);
    // LBA 0, the header, and the standard 128 x 128-byte entry array; a larger array is read on demand.
    std::vector<uint8_t> head(sector_size * 2 + 128 * 128);
    pread_exact(fd.get(), head.data(), head.size(), 0, device.string());
    const uint8_t* h = head.data() + sector_size;
    if (std::memcmp(h, "EFI PART", 8) == 0) {
        uint64_t need = le64(h + 72) * sector_size + uint64_t(le32(h + 80)) * le32(h + 84);
        if (need > head.size() && need <= 4 * MiB) {
            head.resize(need);
            pread_exact(fd.get(), head.data(), head.size(), 0, device.string());
        }
    }
    return parse_primary_gpt(head.data(), head.size(), sector_size, device.string());
}

std::optional<FoundPartition> find_role(const DiskTable& table, Role role, char slot, const std::string& disk) {
    const std::string label = label_for(role, slot);
    const Uuid type = type_for(role);
    std::optional<FoundPartition> found;
    for (const auto& p : table.partitions) {
        if (p.entry.label != label) continue;
        if (found) fail(disk + ": two partitions are labelled " + label + " (" + std::to_string(found->number) + " and " + std::to_string(p.number) + ")");
        if (!(p.entry.type == type))
            fail(disk + ": partition " + std::to_string(p.number) + " is labelled " + label + " but has type " + p.entry.type.str() +
                 ", not " + std::string(role_name(role)) + "'s " + type.str());
        found = p;
    }
    return found;
}

FoundPartition get_role(const DiskTable& table, Role role, char slot, const std::string& disk) {
    if (auto p = find_role(table, role, slot, disk)) return *p;
    fail(disk + ": no partition labelled " + label_for(role, slot));
}

std::vector<BlockDisk> scan_disks(const BlockDevices& where) {
    std::vector<BlockDisk> out;
    std::error_code ec;
    std::vector<fs::path> entries;
    for (const auto& entry : fs::directory_iterator(where.sys_class_block, ec)) entries.push_back(entry.path());
    std::sort(entries.begin(), entries.end());
    for (const fs::path& dir : entries) {
        if (fs::exists(dir / "partition")) continue;
        std::string name = uevent_value(dir, "DEVNAME");
        if (name.empty()) name = dir.filename().string();
        if (trim(read_line(dir / "size")) == "0") continue;  // an empty drive or unused loop device
        uint64_t sector_bytes = 512;
        try {
            std::string s = trim(read_line(dir / "queue/logical_block_size"));
            if (!s.empty()) sector_bytes = std::stoull(s);
        } catch (const std::exception&) {
        }
        try {
            BlockDisk d{name, where.dev_dir / name, read_primary_gpt(where.dev_dir / name, sector_bytes)};
            out.push_back(std::move(d));
        } catch (const Error&) {
            // No GPT, or an unreadable device: nothing of Cairn's is on it.
        }
    }
    return out;
}

std::optional<BootDisk> find_boot_disk(const BlockDevices& where, const Uuid& disk_guid, const std::optional<Uuid>& booted_esp) {
    std::vector<BlockDisk> disks = scan_disks(where);
    std::vector<const BlockDisk*> matches;
    for (const auto& d : disks)
        if (d.table.disk_guid == disk_guid) matches.push_back(&d);
    if (booted_esp) {
        for (const auto& d : disks)
            for (const auto& p : d.table.partitions)
                if (p.entry.uuid == *booted_esp && !(d.table.disk_guid == disk_guid))
                    fail("the firmware started this slot from " + d.name + ", whose disk GUID " + d.table.disk_guid.str() +
                         " is not the signed one (" + disk_guid.str() + ")");
        std::erase_if(matches, [&](const BlockDisk* d) {
            return std::none_of(d->table.partitions.begin(), d->table.partitions.end(), [&](const FoundPartition& p) { return p.entry.uuid == *booted_esp; });
        });
    }
    if (matches.empty()) return std::nullopt;
    if (matches.size() > 1)
        fail("disks " + matches[0]->name + " and " + matches[1]->name + " both carry the signed disk GUID " + disk_guid.str() +
             (booted_esp ? " and the booted ESP" : "") + ": refusing to guess which one is this device's");
    BootDisk out{*matches[0], {}};
    for (const auto& d : disks) {
        if (d.name == out.disk.name) continue;
        std::vector<std::string> ours;
        for (const auto& p : d.table.partitions)
            if (is_cairn_label(p.entry.label)) ours.push_back(p.entry.label);
        if (ours.empty()) continue;
        std::string line = d.name + " (disk GUID " + d.table.disk_guid.str() + ", not the signed one) has ";
        for (size_t i = 0; i < ours.size(); ++i) line += (i ? ", " : "") + ours[i];
        out.ignored.push_back(line + ": ignored");
    }
    return out;
}

fs::path partition_device(const BlockDevices& where, const std::string& disk_name, uint32_t number) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(where.sys_class_block / disk_name, ec)) {
        if (!fs::exists(entry.path() / "partition")) continue;
        if (trim(read_line(entry.path() / "partition")) != std::to_string(number)) continue;
        std::string name = uevent_value(entry.path(), "DEVNAME");
        if (name.empty()) name = entry.path().filename().string();
        return where.dev_dir / name;
    }
    fail(disk_name + ": partition " + std::to_string(number) + " is not known to the kernel");
}

}  // namespace cairn::partitions
