// Resolving and fetching Debian packages with apt's own solver in a private apt state.
//
// The state lives in CACHE/apt/<digest of the sources and architecture>/ and is used through a
// generated APT_CONFIG file (read before Dir::Etc::Parts, so the build host's apt.conf.d,
// preferences and installed packages never reach the solver: its dpkg status is empty).
// Release signatures are checked as apt checks them: Signed-By in the sources, else the host's
// trusted keyrings. A flock on the state serialises builds that share it. Downloaded .debs live
// in CACHE/debs, shared by every state, and are checked against the lock's SHA-256 whenever used.
//
// Resolving runs `apt-get update`, then `apt-get install -s` (the solver's choice) and
// `apt-get install --print-uris -o Acquire::ForceHash=SHA256` (where each file is and its hash).
// Fetching needs only the lock: apt's `apt-helper download-file URL FILE SHA256:...`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "imager/package_lock.hpp"

namespace cairn::imager {

// apt's solver's answer for the request: every package of the closure with its version, file,
// URL, size and SHA-256, sorted by name. Runs apt-get update first (needs the network).
// Errors are one line naming request.where, the package and what is missing:
//   "<where>: unknown package 'x' (...)", "<where>: package 'x' has no installation candidate (...)",
//   "<where>: apt cannot satisfy the dependencies: myapp : Depends: libfoo (>= 2) but it is not installable",
//   "<where>: conflicting packages: systemd-sysv : Conflicts: sysvinit-core but 3.06-4 is to be installed".
PackageLock resolve_packages(const PackageRequest& request, const fs::path& cache);

// The .deb of every locked package, in the lock's order: from CACHE/debs when a file with the
// locked SHA-256 is there, else downloaded from the locked URL (without apt's lists: a warm cache
// and a lock need no network); local packages are the request's local_debs, found by file name.
// Every file's SHA-256 is checked against the lock. A locked file that cannot be had fails with
// "<where>: locked package NAME VERSION cannot be had: ...".
std::vector<fs::path> fetch_packages(const PackageLock& lock, const PackageRequest& request, const fs::path& cache);

// A SHA-256 (hex) over everything in the request that decides the resolution: base, packages,
// the local .debs' file names, the architecture and the sources' text (the build host's when the
// request names none). A lock whose request digest differs was made for another request.
std::string request_digest(const PackageRequest& request);

// The apt-get arguments for the request: the base set as apt patterns (essential: ?essential,
// minbase/required: + ?priority(required), important: + ?priority(important)), usr-is-merged
// (Cairn makes the merged-/usr links itself; without it init-system-helpers pulls usrmerge and
// perl), the packages, then the local .debs as absolute paths. Throws Error for an unknown base.
std::vector<std::string> apt_arguments(const PackageRequest& request);

// --- the parsers, public for their tests ---

// `apt-get install -s` lines "Inst NAME (VERSION ARCHIVE... [ARCH]) [...]", in apt's order.
struct SimulatedInstall {
    std::string name, version, architecture;
};
std::vector<SimulatedInstall> parse_simulation(std::string_view output);

// `apt-get install --print-uris` lines "'URL' FILE SIZE SHA256:HEX" (local debs: 'file:...' and no hash).
struct PrintedUri {
    std::string url, filename, sha256;
    uint64_t size = 0;
};
std::vector<PrintedUri> parse_print_uris(std::string_view output);

// The one line that says why apt-get failed (from its standard output and error together),
// without the "<where>: " prefix.
std::string apt_failure(std::string_view output);

// Debian's file name for a package: NAME_VERSION_ARCH.deb with the epoch's ':' as "%3a", as apt
// stores it in its archives directory.
std::string deb_file_name(std::string_view name, std::string_view version, std::string_view architecture);

}  // namespace cairn::imager
