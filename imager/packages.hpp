// A recipe's Debian packages: the request apt resolves (the recipe's base, packages, .debs and
// sources, plus what Cairn's own programs need in the image), and its lock file.
//
// The lock: `cairn lock RECIPE` writes RECIPE's lock (<recipe without .toml>.lock beside it, or
// --lock FILE); a build reads it when it is there and installs exactly what it names, failing
// when it was made for another request (the recipe's packages changed: run `cairn lock` again).
// Without one, a build resolves afresh and leaves the lock it used in its output folder
// (packages.lock).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "imager/package_lock.hpp"
#include "imager/recipe.hpp"

namespace cairn::imager {

// The Debian packages Cairn's own programs need for what the recipe enables: the ones that hold
// their shared libraries on the build host (dpkg-query -S), dbus for [update], openssh-server for
// [ssh], iproute2 for [provisioning]. Sorted, unique.
std::vector<std::string> cairn_packages(const Recipe& recipe);

// The request for the recipe: its [rootfs] packages plus cairn_packages().
PackageRequest package_request(const Recipe& recipe);

// What `cairn lock` did.
struct LockResult {
    PackageLock lock;
    std::filesystem::path file;
    enum class Change { created, updated, unchanged } change = Change::unchanged;
};

// `cairn lock`: resolves the recipe's request and writes the lock file (`lock_file`, default
// recipe.rootfs.packages.lock) atomically, unless a lock made for the same request is already
// there and `update` is false. Throws Error when the recipe installs no packages.
LockResult lock_recipe(const Recipe& recipe, const std::filesystem::path& cache, const std::optional<std::filesystem::path>& lock_file,
                       bool update);

// The lock a build installs: the lock file when there is one (it must have been made for this
// request), else a fresh resolution. `lock_file` overrides the recipe's default path.
PackageLock lock_for_build(const Recipe& recipe, const PackageRequest& request, const std::filesystem::path& cache,
                           const std::optional<std::filesystem::path>& lock_file, bool* from_file);

}  // namespace cairn::imager
