// A Debian package request (a recipe's base set, package names, local .debs and sources) and the
// lock file that pins what apt resolved it to: every package with version, architecture, file,
// download URL, size and SHA-256. The lock is JSON, one package per line, sorted by name, so that
// a `cairn lock --update` reads as a short diff.
//
//   {
//     "format": 1,
//     "request": "<sha256 of the request>",
//     "packages": [
//       {"name": "base-files", "version": "12.4+deb12u15", "architecture": "amd64", "size": 70820, "sha256": "...", "filename": "base-files_12.4+deb12u15_amd64.deb", "url": "http://deb.debian.org/debian/pool/...", "local": false},
//       ...
//     ]
//   }
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::imager {

namespace fs = std::filesystem;

struct PackageRequest {
    // "" or "essential": Debian's Essential:yes set (always part of a package install: dpkg and the
    // shell the maintainer scripts run in come from it); "minbase" or "required": plus
    // Priority: required; "important": plus Priority: important.
    std::string base;
    std::vector<std::string> packages;   // apt names, "name=version" pins a version
    std::vector<fs::path> local_debs;    // the user's own .debs; their dependencies come from the sources
    fs::path sources;                    // a deb822 .sources or one-line .list file; empty: the build host's /etc/apt sources
    std::string architecture = "amd64";
    std::string where;                   // names the recipe key in errors: "recipes/x.toml: rootfs.packages"
};

struct LockedPackage {
    std::string name, version, architecture;
    std::string filename;   // the .deb's file name in the cache ("libcap2_1%3a2.66-4_amd64.deb")
    std::string url;        // where apt fetches it ("" for a local .deb)
    std::string sha256;     // hex
    uint64_t size = 0;
    bool local = false;     // one of the request's local_debs, found by file name
};

struct PackageLock {
    int format = 1;
    std::string request_digest;            // request_digest() of the request it was resolved from
    std::vector<LockedPackage> packages;   // sorted by name
};

// The lock as JSON text (stable: the same lock gives the same bytes).
std::string lock_text(const PackageLock& lock);

// Parses lock_text()'s format. Throws Error "<file>: ..." naming the file and what is wrong.
PackageLock parse_lock(std::string_view text, const fs::path& file);

// The lock's entry for `name`, or nullptr.
const LockedPackage* find_locked(const PackageLock& lock, std::string_view name);

}  // namespace cairn::imager
