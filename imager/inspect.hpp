// `cairn inspect`: reads a disk image's GPT, lists the layout and slots, and re-verifies every
// slot's dm-verity tree in userspace against the root hash its partition UUIDs carry (and the
// build manifest's, when there is one).
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>

namespace cairn::imager {

struct InspectResult {
    nlohmann::json report;   // "kind": "image" (layout, slots, checks) or "bundle" (manifest, payloads, signature)
    bool ok = true;          // false on any mismatch
};

struct InspectOptions {
    // Images: a build manifest to compare with; unset: manifest.json beside the image, if present.
    std::optional<std::filesystem::path> manifest;
    // Bundles: check the signer against this trust anchor, a PEM file or a build folder (its
    // manifest.json's update.trust_anchor, the anchor its image holds); unset: the signature is
    // checked over the manifest, and its signer shown, but not whether a device would trust it.
    std::optional<std::filesystem::path> trust_anchor;
};

// `cairn inspect PATH`: a bundle (by its magic) or a disk image. Throws Error saying what is wrong
// with a path that is neither: missing, a directory (naming the image a build folder holds), an
// empty file, an image cut short (its size against the size its GPT header or manifest states),
// no GPT at all.
InspectResult inspect(const std::filesystem::path& path, const InspectOptions& options);

// A disk image: layout, name and version (from its build's manifest), slots re-verified.
InspectResult inspect_image(const std::filesystem::path& image, const std::optional<std::filesystem::path>& manifest);

// A bundle: its manifest (compatible, version, build id, payloads and their sizes), the payloads'
// sha256 checked, the signature checked over the manifest and its signers shown, and with a trust
// anchor whether a device holding it would accept the signer (the device's check).
InspectResult inspect_bundle(const std::filesystem::path& bundle, const std::optional<std::filesystem::path>& trust_anchor);

// Either report as text for a person.
std::string format_report(const nlohmann::json& report);

}  // namespace cairn::imager
