#include "imager/archive.hpp"

#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <vector>

#include "common/error.hpp"
#include "common/file.hpp"

namespace cairn::imager {

std::string archive_error(archive* a) {
    const char* message = archive_error_string(a);
    return message ? message : "unknown libarchive error";
}

ArchiveReader new_archive_reader() {
    ArchiveReader a(archive_read_new());
    if (!a) fail("libarchive: out of memory");
    // tar only (ustar, pax, GNU, v7), as a .deb's data member and a recipe's tar step hold:
    // every other format is code reading untrusted bytes for nothing, and mtree would read host
    // files named in the archive into the image. The compressions Debian and tar users use.
    archive_read_support_format_tar(a.get());
    for (auto support : {archive_read_support_filter_gzip, archive_read_support_filter_xz, archive_read_support_filter_zstd,
                         archive_read_support_filter_bzip2, archive_read_support_filter_lzma, archive_read_support_filter_lz4})
        if (support(a.get()) < ARCHIVE_WARN) fail("libarchive: " + archive_error(a.get()));
    return a;
}

ArchiveReader open_archive_file(const std::filesystem::path& file) {
    ArchiveReader a = new_archive_reader();
    if (archive_read_open_filename(a.get(), file.c_str(), 1 << 16) != ARCHIVE_OK)
        fail(file.string() + ": cannot read as an archive: " + archive_error(a.get()));
    return a;
}

namespace {

// "./usr/bin/ls" -> "usr/bin/ls"; "" for the archive root; throws on "..".
std::string normalise(const std::string& name, const std::string& what) {
    std::string out;
    size_t i = 0;
    while (i <= name.size()) {
        size_t j = name.find('/', i);
        if (j == std::string::npos) j = name.size();
        std::string part = name.substr(i, j - i);
        if (part == "..") fail(what + ": entry '" + name + "' climbs out of the archive with '..'");
        if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
        i = j + 1;
    }
    return out;
}

// True when `path` names a symbolic link in the tree that leads to a directory in the tree.
bool is_directory_symlink(const Tree& tree, const std::string& path, const std::string& what) {
    std::string canonical = tree.resolve(path, what);
    struct stat st {};
    if (::lstat(tree.host(canonical).c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return false;
    std::string target = tree.resolve(canonical + "/.", what);
    return ::lstat(tree.host(target).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

void copy_entry_data(archive* a, const std::filesystem::path& to, const std::string& what) {
    UniqueFd fd = open_file(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char> buffer(1 << 16);
    uint64_t offset = 0;
    for (;;) {
        la_ssize_t r = archive_read_data(a, buffer.data(), buffer.size());
        if (r < 0) fail(what + ": " + archive_error(a));
        if (r == 0) break;
        pwrite_exact(fd.get(), buffer.data(), static_cast<size_t>(r), offset, to.string());
        offset += static_cast<uint64_t>(r);
    }
}

size_t extract_into(archive* a, Tree& tree, const ExtractOptions& options, const std::string& what) {
    auto destination = [&](const std::string& name) -> std::optional<std::string> {
        if (options.map) return options.map(name);
        return image_join(options.dest, name, what);
    };
    size_t count = 0;
    archive_entry* entry = nullptr;
    for (;;) {
        int r = archive_read_next_header(a, &entry);
        if (r == ARCHIVE_EOF) break;
        if (r < ARCHIVE_WARN) fail(what + ": " + archive_error(a));
        std::string name = normalise(archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "", what);
        auto dest = destination(name);
        if (!dest) {
            if (options.divert) options.divert(name, a);
            continue;
        }
        std::string where = what + ": " + name;
        Meta meta{static_cast<uint32_t>(archive_entry_uid(entry)), static_cast<uint32_t>(archive_entry_gid(entry)),
                  static_cast<uint32_t>(archive_entry_mode(entry))};
        if (const char* link = archive_entry_hardlink(entry)) {
            auto existing = destination(normalise(link, what));
            if (!existing) fail(where + ": hard link to '" + std::string(link) + "', which this build skips");
            tree.add_hardlink(*dest, *existing, where);
            ++count;
            continue;
        }
        switch (archive_entry_filetype(entry)) {
            case AE_IFDIR:
                if (options.keep_directory_symlinks && is_directory_symlink(tree, *dest, where)) break;
                tree.add_directory(*dest, meta, where);
                break;
            case AE_IFLNK: {
                const char* target = archive_entry_symlink(entry);  // NULL for an empty link name
                if (!target || !*target) fail(where + ": symbolic link without a target");
                tree.add_symlink(*dest, target, meta, where);
                break;
            }
            case AE_IFREG: {
                tree.add_file(*dest, "", meta, where);
                copy_entry_data(a, tree.host(tree.resolve(*dest, where)), where);
                break;
            }
            default:
                fail(where + ": device nodes, FIFOs and sockets are not supported in the root tree (the kernel's devtmpfs provides /dev)");
        }
        ++count;
    }
    return count;
}

}  // namespace cairn::imager
