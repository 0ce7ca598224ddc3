// EFI System Partition images: a FAT filesystem in a plain file, filled with mtools (no loop device, no mount).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace cairn::imager {

// Makes a FAT image of `size` bytes (a multiple of 1024; mkfs.vfat --invariant with the volume id and label) holding
// `files` (destination path inside the FAT, e.g. "EFI/BOOT/BOOTX64.EFI", -> host file), directories created as
// needed, with mmd and mcopy. Reproducible: every file and directory time is `epoch` (through mtools'
// SOURCE_DATE_EPOCH, in UTC; FAT cannot hold times before 1980 or after 2107, so the epoch is clamped to that
// range); the host files' own times do not matter. Same inputs -> same bytes.
// Throws Error naming the image (and the file that does not fit); no partial image is left behind.
void make_esp(const std::filesystem::path& image, uint64_t size, const std::string& label, uint32_t volume_id,
              const std::vector<std::pair<std::string, std::filesystem::path>>& files, int64_t epoch);

}  // namespace cairn::imager
