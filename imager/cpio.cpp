#include "imager/cpio.hpp"

#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string_view>

#include "common/error.hpp"
#include "common/file.hpp"
#include "imager/tree.hpp"
#include "imager/archive.hpp"

namespace cairn::imager {
namespace {

struct ArchiveEntryDeleter {
    void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using ArchiveEntryPtr = std::unique_ptr<archive_entry, ArchiveEntryDeleter>;

constexpr uint64_t max_u32 = std::numeric_limits<uint32_t>::max();

// "lib/modules/x.ko" is fine; "", "/init", "a//b", "./a", "a/../b" and "a/" are not.
void check_path(const std::string& path, const std::string& what) {
    if (path.empty()) fail(what + ": an entry has an empty path");
    if (path.front() == '/') fail(what + ": entry '" + path + "' starts with '/' (paths in the archive are relative)");
    if (!is_clean_relative_path(path)) fail(what + ": entry '" + path + "' has an empty, '.' or '..' component");
}

std::string parent_of(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

std::string octal(uint32_t mode) {
    char text[16];
    std::snprintf(text, sizeof text, "0%o", mode);
    return text;
}

la_ssize_t append_to_string(archive*, void* client, const void* buffer, size_t length) {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buffer), length);
    return static_cast<la_ssize_t>(length);
}

void check(archive* a, int r, const std::string& what) {
    if (r < ARCHIVE_WARN) fail(what + ": " + archive_error(a));
}

void write_data(archive* a, const char* data, size_t size, const std::string& what) {
    while (size > 0) {
        la_ssize_t w = archive_write_data(a, data, size);
        if (w < 0) check(a, static_cast<int>(w), what);
        if (w <= 0) fail(what + ": libarchive accepted no data");
        data += w;
        size -= static_cast<size_t>(w);
    }
}

// Streams a host file into the current entry; its size must still be `size`.
void write_file_data(archive* a, const std::filesystem::path& source, uint64_t size, const std::string& what) {
    UniqueFd fd = open_file(source, O_RDONLY | O_CLOEXEC);
    std::vector<char> buffer(1 << 16);
    uint64_t done = 0;
    for (;;) {
        ssize_t r = ::read(fd.get(), buffer.data(), buffer.size());
        if (r < 0) {
            if (errno == EINTR) continue;
            fail_errno("reading " + source.string());
        }
        if (r == 0) break;
        done += static_cast<uint64_t>(r);
        if (done > size) break;
        write_data(a, buffer.data(), static_cast<size_t>(r), what);
    }
    if (done != size) fail(what + ": " + source.string() + " changed size while it was being archived");
}

}  // namespace

void write_initrd(const std::filesystem::path& out, std::vector<CpioEntry> entries, const std::string& compression,
                  int64_t epoch) {
    const std::string file = out.string();
    if (compression != "gzip" && compression != "zstd" && compression != "none")
        fail(file + ": unknown initrd compression '" + compression + "' (gzip, zstd or none)");
    if (epoch < 0 || static_cast<uint64_t>(epoch) > max_u32)
        fail(file + ": timestamp " + std::to_string(epoch) + " does not fit a newc cpio header (0 to 2^32-1)");

    // Sorted by path (byte order, so every directory comes before what it holds).
    std::map<std::string, CpioEntry> sorted;
    for (auto& e : entries) {
        check_path(e.path, file);
        const std::string what = file + ": entry '" + e.path + "'";
        switch (e.mode & S_IFMT) {
            case S_IFREG:
            case S_IFDIR:
                break;
            case S_IFLNK:
                if (e.target.empty()) fail(what + ": symlink without a target");
                break;
            case 0:
                fail(what + ": mode " + octal(e.mode) + " has no file type (S_IFREG, S_IFDIR or S_IFLNK)");
            default:
                fail(what + ": mode " + octal(e.mode) + " is not a regular file, directory or symlink");
        }
        std::string path = e.path;
        if (!sorted.emplace(path, std::move(e)).second) fail(what + ": the path is given twice");
    }
    // Parent directories the caller left out.
    std::vector<std::string> missing;
    for (const auto& [path, e] : sorted) {
        for (std::string dir = parent_of(path); !dir.empty(); dir = parent_of(dir)) {
            auto it = sorted.find(dir);
            if (it == sorted.end()) {
                missing.push_back(dir);
            } else {
                if ((it->second.mode & S_IFMT) != S_IFDIR)
                    fail(file + ": entry '" + path + "' lies under '" + dir + "', which is not a directory");
                break;
            }
        }
    }
    for (const auto& dir : missing) sorted.try_emplace(dir, CpioEntry{.path = dir, .mode = S_IFDIR | 0755});

    // `data` outlives the writer: archive_write_free flushes into it, also when a failure below
    // unwinds the stack (declared after the writer, it was appended to after its destruction).
    std::string data;
    ArchiveWriter a(archive_write_new());
    if (!a) fail(file + ": libarchive: out of memory");
    const std::string what = file;
    check(a.get(), archive_write_set_format_cpio_newc(a.get()), what);
    if (compression == "gzip") {
        check(a.get(), archive_write_add_filter_gzip(a.get()), what);
        // No modification time in the gzip header (libarchive stores none of the file name either).
        check(a.get(), archive_write_set_filter_option(a.get(), "gzip", "timestamp", nullptr), what);
    } else if (compression == "zstd") {
        check(a.get(), archive_write_add_filter_zstd(a.get()), what);
    } else {
        check(a.get(), archive_write_add_filter_none(a.get()), what);
    }
    check(a.get(), archive_write_set_bytes_in_last_block(a.get(), 1), what);  // no padding after the trailer
    check(a.get(), archive_write_open(a.get(), &data, nullptr, append_to_string, nullptr), what);

    int64_t inode = 0;
    for (const auto& [path, e] : sorted) {
        const std::string where = file + ": entry '" + path + "'";
        ArchiveEntryPtr entry(archive_entry_new());
        if (!entry) fail(where + ": libarchive: out of memory");
        archive_entry_copy_pathname(entry.get(), path.c_str());
        archive_entry_set_mode(entry.get(), e.mode);
        archive_entry_set_uid(entry.get(), e.uid);
        archive_entry_set_gid(entry.get(), e.gid);
        archive_entry_set_mtime(entry.get(), epoch, 0);
        archive_entry_set_ino64(entry.get(), ++inode);
        archive_entry_set_dev(entry.get(), 0);
        archive_entry_set_rdev(entry.get(), 0);
        const bool directory = (e.mode & S_IFMT) == S_IFDIR;
        archive_entry_set_nlink(entry.get(), directory ? 2 : 1);  // 1: the kernel treats nlink >= 2 files as links
        uint64_t size = 0;
        if ((e.mode & S_IFMT) == S_IFREG) {
            if (!e.source.empty()) {
                struct stat st {};
                if (::stat(e.source.c_str(), &st) != 0) fail_errno(where + ": " + e.source.string());
                if (!S_ISREG(st.st_mode)) fail(where + ": " + e.source.string() + " is not a regular file");
                size = static_cast<uint64_t>(st.st_size);
            } else {
                size = e.content.size();
            }
            if (size > max_u32) fail(where + ": " + std::to_string(size) + " bytes is too large for a newc cpio");
        } else if ((e.mode & S_IFMT) == S_IFLNK) {
            archive_entry_copy_symlink(entry.get(), e.target.c_str());
        }
        archive_entry_set_size(entry.get(), static_cast<la_int64_t>(size));
        check(a.get(), archive_write_header(a.get(), entry.get()), where);
        if ((e.mode & S_IFMT) == S_IFREG) {
            if (!e.source.empty())
                write_file_data(a.get(), e.source, size, where);
            else
                write_data(a.get(), e.content.data(), e.content.size(), where);
        }
        check(a.get(), archive_write_finish_entry(a.get()), where);
    }
    check(a.get(), archive_write_close(a.get()), what);
    a.reset();
    write_file_atomic(out, data, 0644);
}

}  // namespace cairn::imager
