// What [update] and [firewall] put into an image, and `cairn bundle`: a signed update bundle from a build.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "imager/recipe.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

// Image paths of the update files.
namespace update_paths {
inline constexpr const char* release = "/usr/lib/cairn/release.json";
inline constexpr const char* trust_anchor = "/usr/share/cairn/update-ca.pem";
inline constexpr const char* updated = "/usr/sbin/cairn-updated";
inline constexpr const char* firewall = "/usr/sbin/cairn-firewall";  // [firewall]
inline constexpr const char* cairnctl = "/usr/bin/cairnctl";
inline constexpr const char* dbus_daemon = "/usr/bin/dbus-daemon";
inline constexpr const char* dbus_config = "/usr/share/cairn/dbus-system.conf";
inline constexpr const char* dbus_policy = "/usr/share/dbus-1/system.d/org.cairn.Updater1.conf";
}  // namespace update_paths

// The image's D-Bus system bus configuration, and the updater's policy (only root may install or
// mark slots; anyone may read the status).
std::string dbus_system_config();
std::string updater_dbus_policy();

// Adds cairn-updated, cairnctl, dbus-daemon (with their libraries), the D-Bus configuration, the
// trust anchor and release.json (compatible, version, build id, `created` (the build's epoch: the
// updater checks certificates at no earlier time), health check, the digests of the tree's /etc
// files) to the tree. Returns release.json's content.
nlohmann::json add_update_files(Tree& tree, const Recipe& recipe, const std::string& build_id, int64_t created);

// Adds cairn-firewall (with its libraries) and /etc/cairn/firewall.toml: the recipe's policy,
// checked with `cairn-firewall check` first (the imager does not link libnftnl), or a file that
// states the defaults.
void add_firewall_files(Tree& tree, const Recipe& recipe);

struct BundleOptions {
    std::filesystem::path build_dir;   // a `cairn build` output with [update] in its recipe
    std::filesystem::path out;         // the bundle file
    std::filesystem::path key, cert;   // PEM signing key and certificate (+ intermediates)
    std::string key_passphrase;
    bool allow_debug = false;          // bundle a --debug build (a root shell on the console) all the same
    bool no_chunk_index = false;       // leave the ESPs' chunk index out, for devices whose updater
                                       // predates it (they refuse a manifest field they do not know)
};

// Whether the build whose manifest.json this is was made with --debug: its "debug", or for a
// manifest from before that was recorded, the kernel command line's cairn.debug=shell.
bool is_debug_build(const nlohmann::json& build_manifest);

// Writes the bundle under a temporary name beside `out` and renames it into place. Returns the
// bundle's manifest as JSON. Before any work it refuses what devices would refuse or should never
// get: a certificate without the bundle-signing usage, a signer that does not chain to the build's
// trust anchor (the image's update-ca.pem, recorded in manifest.json as update.trust_anchor; the
// device's message), and a debug build unless allow_debug.
nlohmann::json make_bundle(const BundleOptions& options);

}  // namespace cairn::imager
