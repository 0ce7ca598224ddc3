// `cairn build`: recipe -> root tree -> root filesystem -> verity per slot -> ESPs -> disk.raw,
// manifest.json and the per-slot artifacts update bundles are made from.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>

namespace cairn::imager {

struct BuildOptions {
    std::filesystem::path recipe;
    std::filesystem::path out_dir;
    std::filesystem::path cache;            // .deb cache; empty: default_cache_dir()
    std::optional<int64_t> epoch;           // timestamps; unset: $SOURCE_DATE_EPOCH, else now
    bool progress = true;
    bool debug = false;                     // force [boot] debug: cairn-init and init give a console shell
    std::string version;                    // replaces the recipe's version (e.g. a CI build number)
};

// Builds the image. Everything is written under temporary names inside out_dir and renamed at the
// end, manifest.json last, so a failed build leaves nothing that looks finished. Returns the
// manifest.
nlohmann::json build_image(const BuildOptions& options);

// Names of the files a build writes into out_dir.
namespace outputs {
inline constexpr const char* disk = "disk.raw";
inline constexpr const char* manifest = "manifest.json";
inline constexpr const char* rootfs = "rootfs.img";
inline constexpr const char* vmlinuz = "vmlinuz";
inline constexpr const char* initrd = "initrd.img";
}  // namespace outputs

}  // namespace cairn::imager
