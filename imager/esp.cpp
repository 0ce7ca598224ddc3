#include "imager/esp.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <string_view>

#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "imager/filesystem.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {
namespace {

namespace fs = std::filesystem;

// The times a FAT directory entry can hold: 1980-01-01 00:00:00 to 2107-12-31 23:59:58 (2-second steps).
// mtools wraps times outside this range (an epoch of 0 comes out as 2098).
constexpr int64_t fat_first_time = 315532800;
constexpr int64_t fat_last_time = 4354819198;

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    return text;
}

// "EFI/BOOT/BOOTX64.EFI": relative, no empty, "." or ".." components, no characters FAT forbids.
void check_destination(const std::string& path, const std::string& what) {
    if (path.empty()) fail(what + ": a file has an empty destination path");
    if (path.front() == '/')
        fail(what + ": destination '" + path + "' starts with '/' (paths in the ESP are relative)");
    for (unsigned char c : path)
        if (c < 0x20 || std::string_view("\"*:<>?\\|").find(static_cast<char>(c)) != std::string_view::npos)
            fail(what + ": destination '" + path + "' has a character FAT does not allow");
    if (!is_clean_relative_path(path)) fail(what + ": destination '" + path + "' has an empty, '.' or '..' component");
}

}  // namespace

void make_esp(const fs::path& image, uint64_t size, const std::string& label, uint32_t volume_id,
              const std::vector<std::pair<std::string, fs::path>>& files, int64_t epoch) {
    const std::string what = image.string();
    if (size == 0 || size % 1024 != 0)
        fail(what + ": FAT image size " + std::to_string(size) + " is not a positive multiple of 1024");

    // Files by destination, compared as FAT does (case-insensitively); sorted, so the order of `files` does not matter.
    std::map<std::string, std::pair<std::string, fs::path>> sorted;
    std::map<std::string, std::string> directories;  // lower-case path -> path as first spelled; parents sort first
    uint64_t total = 0;
    for (const auto& [dest, host] : files) {
        check_destination(dest, what);
        std::error_code ec;
        if (!fs::is_regular_file(host, ec))
            fail(what + ": " + host.string() + " (for " + dest + ") is not a regular file");
        uint64_t bytes = fs::file_size(host, ec);
        if (ec) fail(what + ": " + host.string() + ": " + ec.message());
        total += bytes;
        if (bytes > size || total > size)
            fail(what + ": " + dest + " (" + host.string() + ", " + std::to_string(bytes) +
                 " bytes) does not fit in the " + std::to_string(size) + "-byte FAT filesystem" +
                 (bytes > size ? std::string()
                               : " with the files before it (" + std::to_string(total) + " bytes in all)"));
        if (!sorted.emplace(lower(dest), std::pair{dest, host}).second)
            fail(what + ": destination '" + dest + "' is given twice (FAT names ignore case)");
        for (size_t slash = dest.find('/'); slash != std::string::npos; slash = dest.find('/', slash + 1))
            directories.try_emplace(lower(dest.substr(0, slash)), dest.substr(0, slash));
    }
    for (const auto& [key, dir] : directories)
        if (sorted.count(key)) fail(what + ": '" + dir + "' is both a file and a directory");

    const int64_t stamp = std::clamp(epoch, fat_first_time, fat_last_time);
    const RunOptions mtools{
        .extra_env = {"MTOOLS_SKIP_CHECK=1", "SOURCE_DATE_EPOCH=" + std::to_string(stamp), "TZ=UTC0"}};

    fs::path building = image;
    building += ".tmp-" + std::to_string(::getpid());
    try {
        try {
            make_vfat(building, size, label, volume_id);
        } catch (const Error& e) {
            fail(what + ": cannot make a " + std::to_string(size) + "-byte FAT filesystem labelled '" + label +
                 "': " + e.what());
        }
        if (!directories.empty()) {
            std::vector<std::string> argv = {"mmd", "-i", building.string()};
            for (const auto& [key, dir] : directories) argv.push_back("::/" + dir);
            try {
                run_checked(argv, mtools);
            } catch (const Error& e) {
                fail(what + ": cannot make the directories: " + e.what());
            }
        }
        for (const auto& [key, file] : sorted) {
            const auto& [dest, host] = file;
            try {
                run_checked({"mcopy", "-i", building.string(), host.string(), "::/" + dest}, mtools);
            } catch (const Error& e) {
                std::string message = e.what();
                if (message.find("Disk full") != std::string::npos)
                    fail(what + ": " + dest + " (" + host.string() + ", " + std::to_string(fs::file_size(host)) +
                         " bytes) does not fit in the " + std::to_string(size) + "-byte FAT filesystem");
                fail(what + ": cannot copy " + host.string() + " to " + dest + ": " + message);
            }
        }
        if (::rename(building.c_str(), image.c_str()) != 0) fail_errno("renaming " + building.string() + " to " + what);
    } catch (...) {
        std::error_code ec;
        fs::remove(building, ec);
        throw;
    }
}

}  // namespace cairn::imager
