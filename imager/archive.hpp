// Reading tar archives with libarchive (gzip, xz, zstd, bzip2, lzma, lz4 or none) into the root tree, and the
// RAII writer handle for the archives Cairn writes (imager/cpio.hpp).
#pragma once

#include <archive.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "imager/tree.hpp"

namespace cairn::imager {

struct ArchiveReadDeleter {
    void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadDeleter>;

struct ArchiveWriteDeleter {
    void operator()(archive* a) const { archive_write_free(a); }
};
// A libarchive writer (archive_write_new); archive_write_free closes it if still open.
using ArchiveWriter = std::unique_ptr<archive, ArchiveWriteDeleter>;

// libarchive's message for the last failure of `a`; it may have none (a NULL string), e.g. for a
// truncated compressed stream: then "unknown libarchive error".
std::string archive_error(archive* a);

// A reader of tar in any of its dialects, compressed with any of the above; nothing else.
ArchiveReader new_archive_reader();

// Opens an archive file; throws Error naming the file.
ArchiveReader open_archive_file(const std::filesystem::path& file);

struct ExtractOptions {
    std::string dest = "/";  // image directory the archive's root lands in
    // Maps an entry's normalised name ("usr/bin/ls") to where it goes in the image, or nullopt
    // to skip it. Unset: dest + name.
    std::function<std::optional<std::string>(const std::string& name)> map;
    // Receives entries the map sent elsewhere: called with the entry name and a reader of its data.
    std::function<void(const std::string& name, archive* a)> divert;
    // A directory entry whose path is a symbolic link to a directory in the tree leaves the link
    // in place (GNU tar's --keep-directory-symlink): a Debian package's ./bin/ must not replace
    // the merged-/usr link /bin -> usr/bin. Off: the link is replaced by a directory.
    bool keep_directory_symlinks = false;
};

// Extracts every entry of an opened archive into the tree with the owner, group and mode the
// archive records. `what` names the archive in errors. Returns the number of entries added.
size_t extract_into(archive* a, Tree& tree, const ExtractOptions& options, const std::string& what);

// Writes the data of the current entry to a host file.
void copy_entry_data(archive* a, const std::filesystem::path& to, const std::string& what);

}  // namespace cairn::imager
