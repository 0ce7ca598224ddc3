// Image and bundle versions (docs/bundle.md, "Versions"): their order and their form. The updater
// refuses downgrades by it, the imager holds recipe versions to it and the verifier compares a
// booted image with its policy's minimum by it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace cairn {

// Compares versions (docs/bundle.md, "Versions"): dotted parts in turn, numbers by value
// ("1.10.2" > "1.9"), a version with more parts newer when the common parts are equal; a
// pre-release after `-` (semver) or `~` (Debian) comes before its release ("0.1.0-rc1" <
// "0.1.0~rc2" < "0.1.0" < "0.1.1-rc1"), its dotted parts ordered as semver orders them; build
// metadata after `+` is ignored. <0, 0, >0.
int compare_versions(std::string_view a, std::string_view b);

// Whether `version` is one compare_versions orders as docs/bundle.md describes: a release of
// dot-separated parts (letters and digits, the first starting with a digit), then optionally a
// pre-release after `-` or `~` and build metadata after `+`, each of dot-separated identifiers
// (letters, digits and `-`). Returns what is wrong ("it is empty", ...), or nothing. `cairn
// build` holds recipe versions and --image-version to it.
std::optional<std::string> version_problem(std::string_view version);

}  // namespace cairn
