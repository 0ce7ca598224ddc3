// Debian packages: fetching by name with `apt-get download` into a cache, and unpacking the data
// archive of a .deb into the root tree with libarchive. Maintainer scripts never run.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "imager/archive.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

// Control-file (deb822) text: dpkg's status file, copyright files. One field of a paragraph.
struct ControlField {
    std::string name;                // as written
    std::string first;               // the value on the field's own line, trimmed
    std::vector<std::string> more;   // continuation lines, without their leading blank
};
using ControlParagraph = std::vector<ControlField>;

// Splits deb822 text into paragraphs. Lenient, as the input is untrusted: a line that is neither
// a field nor a continuation is skipped, and `#` comment lines are ignored.
std::vector<ControlParagraph> control_paragraphs(std::string_view text);

// The paragraph's field of that name (case-insensitive), or nullptr.
const ControlField* find_field(const ControlParagraph& p, std::string_view name);

struct DebInfo {
    std::string package;
    std::string version;
    std::string architecture;
    std::string depends;       // the Depends field as written
    std::string pre_depends;   // Pre-Depends, as written
    std::string provides;      // Provides, as written
    bool essential = false;    // Essential: yes
    std::filesystem::path file;
};

// What apt knows of a package (apt-cache show, candidate version). Throws Error
// "<what>: unknown Debian package 'NAME'" when apt has none.
struct AptPackage {
    std::string name, version, architecture, filename, sha256, depends;
};
AptPackage apt_show(const std::string& package, const std::string& what);

// Returns the package's .deb in `cache`, downloading it with `apt-get download` unless a file
// with the SHA-256 apt expects is already there.
std::filesystem::path fetch_deb(const std::string& package, const std::filesystem::path& cache, const std::string& what);

// Reads the control file of a .deb.
DebInfo read_deb_info(const std::filesystem::path& deb);

// Unpacks the data archive of a .deb into the tree; returns the control information.
DebInfo extract_deb(const std::filesystem::path& deb, Tree& tree, const ExtractOptions& options);

// The default cache: $CAIRN_CACHE, else $XDG_CACHE_HOME/cairn, else ~/.cache/cairn.
std::filesystem::path default_cache_dir();

}  // namespace cairn::imager
