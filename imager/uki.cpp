#include "imager/uki.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"

namespace cairn::imager {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t page_size = 4096;

struct PeSection {
    std::string name;
    uint32_t virtual_size = 0, virtual_address = 0, raw_size = 0, raw_offset = 0;
};

struct PeImage {
    uint32_t timestamp = 0;          // COFF TimeDateStamp
    uint32_t section_alignment = 0;  // optional header SectionAlignment
    std::vector<PeSection> sections;
};

uint32_t le16(const uint8_t* p) { return static_cast<uint32_t>(p[0] | p[1] << 8); }
uint32_t le32(const uint8_t* p) { return le16(p) | le16(p + 2) << 16; }

// Reads the COFF header, the optional header's SectionAlignment and the section table of a PE image.
PeImage read_pe(const fs::path& file) {
    const std::string what = file.string();
    UniqueFd fd = open_file(file, O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail_errno(what);
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    auto read_at = [&](uint64_t offset, size_t length, const char* part) {
        if (offset > size || length > size - offset) fail(what + ": not a PE image (truncated " + part + ")");
        std::vector<uint8_t> bytes(length);
        pread_exact(fd.get(), bytes.data(), length, offset, what);
        return bytes;
    };
    auto dos = read_at(0, 64, "DOS header");
    if (dos[0] != 'M' || dos[1] != 'Z') fail(what + ": not a PE image (no MZ signature)");
    const uint64_t pe_offset = le32(&dos[0x3c]);
    auto coff = read_at(pe_offset, 24, "COFF header");
    if (coff[0] != 'P' || coff[1] != 'E' || coff[2] != 0 || coff[3] != 0)
        fail(what + ": not a PE image (no PE signature at offset " + std::to_string(pe_offset) + ")");
    const uint32_t count = le16(&coff[6]);
    PeImage image;
    image.timestamp = le32(&coff[8]);
    const uint32_t symbol_table = le32(&coff[12]), symbols = le32(&coff[16]);
    const uint32_t optional_size = le16(&coff[20]);
    if (optional_size < 40)
        fail(what + ": not a PE image (optional header of " + std::to_string(optional_size) + " bytes)");
    auto optional = read_at(pe_offset + 24, optional_size, "optional header");
    const uint32_t magic = le16(&optional[0]);
    if (magic != 0x10b && magic != 0x20b)
        fail(what + ": not a PE32 or PE32+ image (optional header magic " + std::to_string(magic) + ")");
    image.section_alignment = le32(&optional[32]);
    auto table = read_at(pe_offset + 24 + optional_size, size_t{count} * 40, "section table");
    for (uint32_t i = 0; i < count; ++i) {
        const uint8_t* s = &table[size_t{i} * 40];
        PeSection section;
        section.name.assign(reinterpret_cast<const char*>(s), strnlen(reinterpret_cast<const char*>(s), 8));
        // "/123": a long name at that offset in the COFF string table (after the symbol table).
        if (section.name.size() > 1 && section.name[0] == '/' && symbol_table != 0 &&
            std::all_of(section.name.begin() + 1, section.name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
            uint64_t at = uint64_t{symbol_table} + uint64_t{symbols} * 18 + std::stoull(section.name.substr(1));
            if (at < size) {
                auto bytes = read_at(at, static_cast<size_t>(std::min<uint64_t>(256, size - at)), "string table");
                section.name.assign(reinterpret_cast<const char*>(bytes.data()),
                                    strnlen(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
            }
        }
        section.virtual_size = le32(s + 8);
        section.virtual_address = le32(s + 12);
        section.raw_size = le32(s + 16);
        section.raw_offset = le32(s + 20);
        image.sections.push_back(std::move(section));
    }
    return image;
}

uint64_t align_up(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

std::string hex(uint64_t value) {
    char text[32];
    std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
    return text;
}

void require_file(const fs::path& file, const std::string& role) {
    std::error_code ec;
    auto status = fs::status(file, ec);
    if (file.empty()) fail(role + ": no file given");
    if (!fs::exists(status)) fail(file.string() + ": " + role + " not found");
    if (!fs::is_regular_file(status)) fail(file.string() + ": " + role + " is not a regular file");
    if (::access(file.c_str(), R_OK) != 0) fail_errno(file.string() + ": " + role);
}

// fsyncs `from`, renames it over `to` and fsyncs the directory.
void commit(const fs::path& from, const fs::path& to) {
    {
        UniqueFd fd = open_file(from, O_RDONLY | O_CLOEXEC);
        if (::fsync(fd.get()) != 0) fail_errno("syncing " + from.string());
    }
    if (::rename(from.c_str(), to.c_str()) != 0) fail_errno("renaming " + from.string() + " to " + to.string());
    fsync_directory(fs::absolute(to).parent_path());
}

}  // namespace

std::vector<std::pair<std::string, uint64_t>> pe_sections(const fs::path& pe) {
    std::vector<std::pair<std::string, uint64_t>> result;
    for (const auto& s : read_pe(pe).sections) result.emplace_back(s.name, s.virtual_size);
    return result;
}

std::map<std::string, std::string> pe_section_contents(const fs::path& pe, const std::vector<std::string>& names) {
    const std::string what = pe.string();
    const PeImage image = read_pe(pe);
    UniqueFd fd = open_file(pe, O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail_errno(what);
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    std::map<std::string, std::string> contents;
    for (const auto& s : image.sections) {
        if (std::find(names.begin(), names.end(), s.name) == names.end()) continue;
        if (contents.count(s.name)) fail(what + ": two PE sections named " + s.name);
        const uint64_t from_file = std::min(s.virtual_size, s.raw_size);
        if (s.raw_offset > size || from_file > size - s.raw_offset)
            fail(what + ": PE section " + s.name + " lies past the end of the file");
        std::string bytes(s.virtual_size, '\0');
        if (from_file) pread_exact(fd.get(), bytes.data(), static_cast<size_t>(from_file), s.raw_offset, what);
        contents.emplace(s.name, std::move(bytes));
    }
    return contents;
}

void assemble_uki(const UkiParts& parts, const fs::path& out) {
    const std::string what = out.string();
    require_file(parts.stub, "systemd-stub (package systemd-boot-efi)");
    require_file(parts.kernel, "kernel");
    require_file(parts.initrd, "initrd");
    if (parts.cmdline.empty())
        fail(what +
             ": the kernel command line is empty (without a .cmdline section systemd-stub would take the "
             "firmware's load options, even under Secure Boot)");

    const PeImage stub = read_pe(parts.stub);
    if (stub.sections.empty()) fail(parts.stub.string() + ": PE image without sections");
    uint64_t end = 0;
    for (const auto& s : stub.sections)
        end = std::max<uint64_t>(end, uint64_t{s.virtual_address} + std::max(s.virtual_size, s.raw_size));
    const uint64_t alignment = std::max<uint64_t>(page_size, stub.section_alignment);

    const fs::path dir = fs::absolute(out).parent_path();
    TempDir work(dir, ".cairn-uki-");
    struct Added {
        std::string name;
        fs::path file;
        uint64_t size = 0, address = 0;
    };
    std::vector<Added> added;
    auto add_text = [&](const std::string& name, const std::string& text) {
        if (text.empty()) return;
        fs::path file = work.path() / name.substr(1);
        write_file_atomic(file, text);
        added.push_back({name, file, text.size()});
    };
    add_text(".osrel", parts.os_release);
    add_text(".cmdline", parts.cmdline);
    add_text(".uname", parts.uname);
    for (const auto& [name, file] : {std::pair{".initrd", parts.initrd}, std::pair{".linux", parts.kernel}}) {
        uint64_t size = fs::file_size(file);
        if (size == 0) fail(file.string() + ": empty " + (name == std::string(".linux") ? "kernel" : "initrd"));
        added.push_back({name, file, size});
    }

    // -p keeps the stub's COFF TimeDateStamp; without it objcopy stamps the wall clock (SOURCE_DATE_EPOCH is
    // ignored by binutils 2.40 for PE).
    std::vector<std::string> argv = {"objcopy", "-p"};
    uint64_t address = align_up(end, alignment);
    for (auto& a : added) {
        a.address = address;
        address = align_up(address + a.size, alignment);
        argv.push_back("--add-section");
        argv.push_back(a.name + "=" + a.file.string());
        argv.push_back("--change-section-vma");
        argv.push_back(a.name + "=" + hex(a.address));
    }
    if (address > UINT32_MAX) fail(what + ": the kernel, initrd and stub do not fit in a 4 GiB PE image");
    const fs::path built = work.path() / "uki.efi";
    argv.push_back(parts.stub.string());
    argv.push_back(built.string());
    try {
        run_checked(argv);
    } catch (const Error& e) {
        fail(what + ": objcopy could not add the UKI sections to " + parts.stub.string() + ": " + e.what());
    }

    const PeImage uki = read_pe(built);
    if (uki.timestamp != stub.timestamp)
        fail(what + ": objcopy set the PE timestamp to " + std::to_string(uki.timestamp) + " instead of the stub's " +
             std::to_string(stub.timestamp));
    for (const auto& a : added) {
        auto it =
            std::find_if(uki.sections.begin(), uki.sections.end(), [&](const auto& s) { return s.name == a.name; });
        if (it == uki.sections.end() || it->virtual_address != a.address || it->virtual_size != a.size)
            fail(what + ": objcopy did not place section " + a.name + " at " + hex(a.address) + " with " +
                 std::to_string(a.size) + " bytes");
    }
    // -p also copied the stub's mode and file times.
    if (::chmod(built.c_str(), 0644) != 0 || ::utimensat(AT_FDCWD, built.c_str(), nullptr, 0) != 0)
        fail_errno(built.string());
    commit(built, out);
}

}  // namespace cairn::imager
