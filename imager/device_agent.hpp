// What a device agent brings into an image (the provisioning agent, the attestation agent): its
// program with its libraries, cairnctl and the cairnctl-<area> program behind its subcommand, the
// TPM's device TCTI, its start script and, when the recipe gives one, its configuration.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "imager/tree.hpp"

namespace cairn::imager {

struct DeviceAgent {
    std::string program, build_folder;  // "cairn-attestd", "attestation": find_cairn_program's
    std::string image_path;             // where the program goes, e.g. "/usr/sbin/cairn-attestd"
    std::string cli_program;            // "cairnctl-attest": `cairnctl attest` starts it
    std::string cli_path;               // "/usr/lib/cairn/cairnctl-attest"
    std::filesystem::path config;       // the recipe's configuration file; may be empty
    std::string config_path;            // its place in the image (mode 0600)
    std::string run_path, run_script;   // the start script a service runs
};

// Adds everything `agent` names (cairnctl only when the image has none yet), checking the
// configuration's TOML syntax now (an error names the file and line) rather than on the device.
// `what` names the recipe table in errors.
void add_device_agent(Tree& tree, const DeviceAgent& agent, const std::string& what);

// Adds the TPM's device TCTI (libtss2-tcti-device), which libtss2-tctildr loads with dlopen, so
// that no ELF closure finds it: beside the tctildr among `libraries` (a program's closure, from
// add_cairn_program). Once per image, whichever agent comes first.
void add_tpm_device_tcti(Tree& tree, const std::vector<std::filesystem::path>& libraries, const std::string& what);

}  // namespace cairn::imager
