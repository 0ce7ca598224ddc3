// Filesystems the imager makes, all on plain files (no loop devices, no mounts):
// the read-only root (mkfs.erofs or mkfs.ext4 -d) and FAT for the EFI System Partitions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/uuid.hpp"

namespace cairn::imager {

struct RootfsOptions {
    std::string filesystem = "erofs";     // erofs or ext4
    std::string compression = "none";     // erofs: none, lz4, lz4hc
    Uuid uuid;                            // filesystem UUID
    int64_t epoch = 0;                    // every timestamp in the filesystem
    uint64_t max_size = 0;                // the root partition's size
    std::string partition;                // its label, for errors
    std::string where;                    // the recipe, for errors
    std::vector<std::string> runner;      // argv prefix that shows the tree's owners (Tree::apply_metadata)
    std::vector<std::string> directories; // every directory in the tree (ext4: the times of what they hold are set to `epoch`)
};

// Makes the filesystem image from the staging tree; returns its size (a multiple of 4096, as
// small as the content allows). Throws Error when it does not fit in max_size.
uint64_t make_root_filesystem(const std::filesystem::path& tree, const std::filesystem::path& image, const RootfsOptions& options);

// Makes an empty FAT filesystem of `size` bytes in a new file, reproducibly.
void make_vfat(const std::filesystem::path& image, uint64_t size, const std::string& label, uint32_t volume_id);

}  // namespace cairn::imager
