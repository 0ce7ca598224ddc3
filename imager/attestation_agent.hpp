// What [attestation] puts into an image besides the signed reference document: the device's
// attestation agent (cairn-attestd), `cairnctl attest` (cairnctl-attest), the TPM's device TCTI
// they load at run time, the start script and, when the recipe gives one, the agent's
// configuration. `agent = false` in [attestation] leaves them out (the image still carries its
// signed reference values, for a verifier fed by another agent).
#pragma once

#include "imager/recipe.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

namespace attestation_paths {
inline constexpr const char* agent = "/usr/sbin/cairn-attestd";
inline constexpr const char* cli = "/usr/lib/cairn/cairnctl-attest";  // `cairnctl attest` starts it
inline constexpr const char* run = "/usr/lib/cairn/attestd-run";      // what a service starts
inline constexpr const char* config = "/etc/cairn/attestation.toml";
}  // namespace attestation_paths

// The start script: waits for /etc/cairn/attestation.toml (the device is enrolled at a verifier
// first), loads the modules the ESP's read needs where the kernel cannot, waits up to a minute for
// a default route, then runs cairn-attestd. When the agent exits (a config it refuses, no TPM) it
// says so and starts it again a minute later: a bad attestation config never stops the device's
// other services or fails an update's trial boot.
std::string attestd_run_script();

// Adds the agent, cairnctl-attest and cairnctl (when the image has none yet), the device TCTI,
// the start script and the configuration ([attestation] config, checked for TOML syntax here; the
// agent checks its keys when it starts).
void add_attestation_agent_files(Tree& tree, const Recipe& recipe);

}  // namespace cairn::imager
