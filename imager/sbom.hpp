// The image's software bill of materials: every Debian package (name, version, architecture, the
// .deb's sha256, its licence where Debian's machine-readable copyright file states it), Cairn's own
// programs and the recipe's other input files, written as CycloneDX 1.5 JSON (`sbom.cdx.json`).
//
// Why CycloneDX 1.5 and not SPDX 2.3: a format is only as good as the check that a document really
// is one, and that check must not be ours. CycloneDX's own project publishes its validator as an
// npm package (@cyclonedx/cyclonedx-library, Validation.JsonStrictValidator: the official JSON
// schemas for 1.2-1.6 shipped inside it, checked with ajv, including the SPDX licence-id list), which
// installs from the npm registry on a fresh Debian 12 and runs on Debian's node 18. For SPDX 2.3 the
// validators (the SPDX project's tools-python and tools-java) are in neither Debian 12 nor npm;
// the npm spdx-* packages only parse licence expressions. scripts/install-deps installs the
// validator; tests/imager/sbom_test.cpp runs it on SBOMs made here (scripts/cyclonedx-validate).
//
// Deterministic: the same input gives the same bytes. The serial number is derived from the
// build id (no random UUID), the timestamp is the build's SOURCE_DATE_EPOCH, packages are sorted.
//
// Relationships: the image is metadata.component (what the BOM describes); the top-level
// components are what it contains; `dependencies` has the image depending on everything it
// contains and each package on the packages its Depends/Pre-Depends resolve to (when known).
//
// Licences (read from STAGE/usr/share/doc/PKG/copyright, which comes from the package and is
// untrusted input: sizes are capped, nothing in it can crash the parser, symlinks stay inside the
// staged tree): a DEP-5 file ("Format: .../copyright-format/1.0/") gives each Files paragraph's
// License expression; Debian short names map to SPDX ids where they mean the same licence
// (GPL-2+ -> GPL-2.0-or-later, Expat -> MIT, BSD-3-clause -> BSD-3-Clause, ...); other names become
// LicenseRef-<name> (with the text of the file's stand-alone License paragraph, when it has one).
// A file that is not DEP-5, or that cannot be read or parsed, gives no licence (SPDX's NOASSERTION:
// CycloneDX says it by leaving `licenses` out).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::imager::sbom {

namespace fs = std::filesystem;

// The file a build writes beside manifest.json.
inline constexpr const char* output_name = "sbom.cdx.json";

// Limits on untrusted input: a larger copyright file gives NOASSERTION (a larger status file an
// Error: max_status_bytes, imager/dpkg.hpp).
inline constexpr size_t max_copyright_bytes = 1 << 20;
inline constexpr size_t max_license_text_bytes = 64 << 10;  // longer LicenseRef texts are left out

// One licence named by a copyright file.
struct LicenseTerm {
    std::string debian;   // the name as the file writes it: "GPL-2+", "public-domain"
    std::string spdx;     // its SPDX id ("GPL-2.0-or-later") or LicenseRef-... ("LicenseRef-public-domain")
    bool is_spdx_id = false;  // spdx is on SPDX's licence list (not a LicenseRef)
    std::string text;     // for a LicenseRef: the text from the file's License paragraph, if any
};

// What a package's copyright file says about its licence.
struct LicenseInfo {
    // An SPDX licence expression over the whole package (the Files paragraphs' licences joined
    // with AND); nullopt is NOASSERTION.
    std::optional<std::string> expression;
    // The distinct licences in it, in order of appearance.
    std::vector<LicenseTerm> terms;
    // The expression is only terms joined by AND (no OR, no WITH): the licences can be listed one by one.
    bool conjunction = false;
    // Why there is no expression ("not a machine-readable copyright file", ...); empty when there is.
    std::string reason;
};

// Parses a copyright file's text. Never throws for bad input: a file that is not DEP-5, or a
// License field that does not parse, gives NOASSERTION with the reason.
LicenseInfo parse_copyright(std::string_view text);

// Reads ROOT/usr/share/doc/PACKAGE/copyright, resolving symlinks inside root (as a chroot would:
// an absolute or ../ link cannot leave it). A missing, unreadable or too large file gives
// NOASSERTION with the reason; never throws for what the tree holds.
LicenseInfo read_package_license(const fs::path& root, const std::string& package);

// The SPDX id of a Debian short licence name where both name the same licence ("GPL-2+" ->
// "GPL-2.0-or-later", "Expat" -> "MIT", "bsd-3-clause" -> "BSD-3-Clause"); nullopt otherwise.
std::optional<std::string> spdx_license_id(std::string_view debian_name);

// "LicenseRef-" + the name with every character outside [A-Za-z0-9.-] replaced ('+' as "-plus").
std::string license_ref(std::string_view debian_name);

// A Debian package in the image.
struct DebPackage {
    std::string name;
    std::string version;         // Debian version, epoch included: "1:2.38.1-5+deb12u1"
    std::string architecture;    // "amd64", "all"
    std::string sha256;          // the .deb's sha256 (hex); empty when not known
    std::string source;          // source package name; empty when the same as name
    std::string source_version;  // empty when the same as version
    std::string maintainer;      // empty when not known
    std::vector<std::string> depends;  // names of installed packages it depends on (resolved)
    LicenseInfo license;
};

// One of Cairn's own programs in the image (cairn-init, cairn-updated, ...).
struct Program {
    std::string name;
    std::string path;      // in the image: "/usr/lib/cairn/cairn-updated"
    std::string version;
    std::string sha256;    // of the file in the image (hex)
};

// Another input of the build: a file the recipe adds.
struct InputFile {
    std::string path;      // in the image
    std::string sha256;    // hex
};

struct Image {
    std::string name;
    std::string version;
    std::string build_id;          // the build's id (manifest.json's update.build_id); seeds the serial number
    int64_t epoch = 0;             // SOURCE_DATE_EPOCH: the BOM's timestamp
    std::string cairn_version;     // the tool that made it
    std::string distro;            // purl distro qualifier ("debian-12"); empty: none
};

struct Bom {
    Image image;
    std::vector<DebPackage> packages;
    std::vector<Program> programs;
    std::vector<InputFile> files;
};

// The package URL: pkg:deb/debian/NAME@VERSION?arch=ARCH[&distro=D] (version percent-encoded,
// so 1:2.0+b1 is 1%3A2.0%2Bb1).
std::string purl(const DebPackage& package, std::string_view distro = {});

// The CycloneDX 1.5 document. Throws Error for input that would make a wrong BOM: an empty name
// or version, a sha256 that is not 64 hex digits, two packages with the same name and architecture.
nlohmann::json to_cyclonedx(const Bom& bom);

// The document as written to the file (2-space indent, trailing newline). Strings from packages
// (names, maintainers, licence texts) need not be valid UTF-8: dump to_cyclonedx()'s json with
// error_handler_t::replace, as this does, or it throws.
std::string to_cyclonedx_text(const Bom& bom);

// The installed packages (StatusEntry::installed()) of ROOT/var/lib/dpkg/status, read with
// parse_dpkg_status (imager/dpkg.hpp), in the file's order, each with its licence from
// read_package_license(root, name); sha256 empty. Throws Error naming the file when it is missing or too large.
std::vector<DebPackage> read_installed_packages(const fs::path& root);

}  // namespace cairn::imager::sbom
