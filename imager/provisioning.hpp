// What [provisioning] puts into an image: the provisioning agent (cairn-provisiond), the TPM's
// device TCTI it loads at run time, cairnctl, and optionally the device's config.toml.
#pragma once

#include "imager/recipe.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

namespace provisioning_paths {
inline constexpr const char* agent = "/usr/sbin/cairn-provisiond";
inline constexpr const char* cli = "/usr/lib/cairn/cairnctl-provision";  // `cairnctl provision` starts it
inline constexpr const char* run = "/usr/lib/cairn/provisiond-run";   // what a service starts
inline constexpr const char* config = "/etc/cairn/config.toml";
inline constexpr const char* pid_file = "/run/cairn/provisiond.pid";  // `cairnctl config apply` signals it
}  // namespace provisioning_paths

// The start script: provisions at start (once the network has a default route, for up to a
// minute) and again on SIGHUP, which `cairnctl config apply` sends after it installed a config.
std::string provisiond_run_script();

// Adds cairn-provisiond with its libraries and the device TCTI (libtss2-tctildr loads it with
// dlopen, so no ELF closure finds it), cairnctl when the image has none yet, cairnctl-provision
// (behind `cairnctl provision`), the start script and, when the recipe gives one, the
// configuration (checked here as the agent would read it, except for the files it names, which
// may only exist on the device).
void add_provisioning_files(Tree& tree, const Recipe& recipe);

}  // namespace cairn::imager
