// `cairn build`: recipe -> root tree -> root filesystem -> verity per slot -> ESPs -> disk.raw,
// manifest.json and the per-slot artifacts update bundles are made from.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "imager/disk_formats.hpp"

namespace cairn::imager {

struct BuildOptions {
    std::filesystem::path recipe;
    std::filesystem::path out_dir;
    std::filesystem::path cache;            // .deb cache; empty: default_cache_dir()
    std::optional<int64_t> epoch;           // timestamps; unset: $SOURCE_DATE_EPOCH, else now
    bool progress = true;
    bool debug = false;                     // force [boot] debug: cairn-init and init give a console shell
    std::optional<std::string> version;     // replaces the recipe's version (e.g. a CI build number); checked as recipe versions are
    std::optional<std::filesystem::path> lock;  // the package lock to install; unset: the recipe's (<recipe>.lock) when there is one
    std::vector<DiskFormat> formats = {DiskFormat::Raw};  // disk.raw, and disk.qcow2 etc. converted from it (imager/disk_formats.hpp)
};

// Builds the image. Everything is written under temporary names inside out_dir and renamed at the
// end, manifest.json last, so a failed build leaves nothing that looks finished. Returns the
// manifest.
//
// Cleaning up: the build holds an exclusive lock on out_dir/.cairn-build.lock (flock; the file
// is removed at the end) while it runs, so a second build into the same folder fails at once
// (Error naming the folder); under
// the lock, `.cairn-build-*` folders left by a build that was killed outright (SIGKILL, a power
// cut) are removed first. The work itself runs in a child process in its own process group: on
// SIGINT, SIGTERM or SIGHUP that group (the child and every program it started: mkfs, depmod, ...) is
// killed, the temporary folder removed, and BuildInterrupted thrown.
nlohmann::json build_image(const BuildOptions& options);

// A build stopped by SIGINT, SIGTERM or SIGHUP, after cleaning up; what() is "build interrupted,
// removed <temporary folder>". A program exits 128 + signal().
class BuildInterrupted : public Error {
public:
    BuildInterrupted(const std::string& message, int signal) : Error(message), signal_(signal) {}
    int signal() const { return signal_; }

private:
    int signal_;
};

// The lock file a build holds in its output folder.
inline constexpr const char* build_lock = ".cairn-build.lock";

// Names of the files a build writes into out_dir.
namespace outputs {
inline constexpr const char* disk = "disk.raw";
inline constexpr const char* manifest = "manifest.json";
inline constexpr const char* rootfs = "rootfs.img";
inline constexpr const char* vmlinuz = "vmlinuz";
inline constexpr const char* initrd = "initrd.img";
inline constexpr const char* reference = "reference.json";          // [attestation]: the reference document
inline constexpr const char* reference_sig = "reference.json.sig";  // and its detached CMS signature (DER)
}  // namespace outputs

}  // namespace cairn::imager
