// `cairn inspect`: reads a disk image's GPT, lists the layout and slots, and re-verifies every
// slot's dm-verity tree in userspace against the root hash its partition UUIDs carry (and the
// build manifest's, when there is one).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>

namespace cairn::imager {

struct InspectResult {
    nlohmann::json report;   // layout, slots, checks
    bool ok = true;          // false on any mismatch
};

// manifest: a build manifest to compare with; unset: manifest.json beside the image, if present.
InspectResult inspect_image(const std::filesystem::path& image, const std::optional<std::filesystem::path>& manifest);

// The report as text for a person.
std::string format_report(const nlohmann::json& report);

}  // namespace cairn::imager
