// The initrd archive: a newc ("070701") cpio, the format the Linux kernel unpacks into its initramfs,
// written with libarchive, compressed, and reproducible byte for byte.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cairn::imager {

struct CpioEntry {
    std::string path;   // in the archive, no leading slash: "init", "lib/modules/6.1.0/kernel/x.ko"
    uint32_t mode = 0;  // full st_mode (type + permission bits): regular file, directory or symlink
    uint32_t uid = 0, gid = 0;
    std::filesystem::path source;  // regular file: host file with the content ...
    std::string content;           // ... or the content itself (when source is empty)
    std::string target;            // symlink target
};

// Writes a newc cpio with libarchive, compressed with "gzip" (default), "zstd" or "none". Deterministic: entries
// sorted by path, every parent directory added (0755 root) when missing, mtime = epoch, sequential inode numbers,
// no gzip timestamp/name; same inputs -> same bytes. Throws Error naming the file on failure; no partial output file.
void write_initrd(const std::filesystem::path& out, std::vector<CpioEntry> entries, const std::string& compression,
                  int64_t epoch);

}  // namespace cairn::imager
