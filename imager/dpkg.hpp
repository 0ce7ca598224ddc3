// Installing a locked Debian package set into a staging tree as Debian installs it, without
// touching the build host:
//   1. the merged-/usr links (/bin -> usr/bin, /sbin, /lib, /lib64) and an empty dpkg database;
//   2. the data of the Essential closure unpacked with libarchive (directory links kept);
//   3. `dpkg --install --force-depends` of that closure in a bubblewrap sandbox rooted at the
//      staging tree (its preinsts make /etc/passwd and friends before anything else configures);
//   4. the rest through the host's apt with a private configuration that knows only the given
//      .deb files (no sources, no network) and the staging tree's dpkg status, its Dir::Bin::dpkg
//      being that same sandbox: apt orders Pre-Depends and runs the triggers.
// In the sandbox: no network, own PID/IPC/UTS namespaces, a cleared environment with
// SOURCE_DATE_EPOCH, DEBIAN_FRONTEND=noninteractive, a policy-rc.d that forbids starting services
// (removed afterwards), dpkg --force-unsafe-io. Its bind mounts live under the sandbox's /tmp
// (a tmpfs), so no mount-point directory is left in the tree. Needs root.
// Afterwards what maintainer scripts write that differs from run to run goes (ssh host keys,
// machine-ids, logs, caches, *-old backups): two installs of one lock with one epoch give the
// same tree (content, modes, owners; times are set later by the build).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "imager/deb.hpp"
#include "imager/package_lock.hpp"

namespace cairn::imager {

struct InstalledPackage {
    std::string name, version, architecture;
    std::string sha256;   // of the .deb it came from (the lock's)
    uint64_t size = 0;    // of that .deb
    bool local = false;
};

struct InstallOptions {
    int64_t epoch = 0;                  // SOURCE_DATE_EPOCH for the maintainer scripts, and the unpacked files' times
    std::string architecture = "amd64"; // dpkg's native architecture in the tree
    std::string where;                  // names the recipe key in errors
};

// Installs the lock's packages from `debs` (fetch_packages' answer: one file per locked package,
// in the lock's order) into `staging`, an empty or missing directory. Returns what the tree's
// dpkg database then says is installed, sorted by name; it must be exactly the lock, else Error.
// Errors name options.where and the failing step with the last lines dpkg or apt printed.
std::vector<InstalledPackage> install_packages(const fs::path& staging, const PackageLock& lock, const std::vector<fs::path>& debs,
                                               const InstallOptions& options);

// --- public for their tests ---

// The packages (names, sorted) that are Essential: yes, and what they Depend or Pre-Depend on,
// transitively, among `debs` only: of alternatives "a | b" the first one present (by name or a
// Provides) is taken, as the whole set was already resolved by apt.
std::vector<std::string> essential_closure(const std::vector<DebInfo>& debs);

// dpkg's status file: the one parser of it (the install's check and the SBOM use it). Every
// package paragraph, in the file's order, with Source ("src (ver)" split), Maintainer, and
// Pre-Depends/Depends resolved against the installed packages (alternatives: the first installed
// one; virtual names through Provides; itself left out). The text is untrusted: lenient about
// lines; throws Error naming `what` for a text over max_status_bytes, a paragraph without
// Package, an installed one without Version.
inline constexpr size_t max_status_bytes = 64 << 20;
struct StatusEntry {
    std::string name, version, architecture;
    std::string status;                // "install ok installed", "deinstall ok config-files", ...
    std::string source;                // source package name; empty when the same as name
    std::string source_version;        // empty when the same as version
    std::string maintainer;
    std::vector<std::string> depends;  // installed packages it needs, sorted
    bool installed() const;            // its files are in place: the status ends in "installed"
    bool configured() const { return status == "install ok installed"; }  // wanted, and all done
};
std::vector<StatusEntry> parse_dpkg_status(std::string_view text, const std::string& what);

// Removes or empties what maintainer scripts write differently on every run (see above).
void tame_installed_tree(const fs::path& staging);

}  // namespace cairn::imager
