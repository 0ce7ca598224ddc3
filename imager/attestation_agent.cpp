#include "imager/attestation_agent.hpp"

#include "imager/device_agent.hpp"

namespace cairn::imager {

std::string attestd_run_script() {
    return "#!/bin/sh\n"
           "# The boot attestation agent (written by `cairn build` from the recipe's [attestation]). It\n"
           "# starts once /etc/cairn/attestation.toml exists (the device is enrolled at a verifier first;\n"
           "# docs/attestation.md). When it exits (a config it refuses, no TPM) it is started again a\n"
           "# minute later, so a bad attestation config never fails the device's other services.\n"
           "config=/etc/cairn/attestation.toml\n"
           "# The booted ESP is read through a vfat mount: where the kernel cannot load modules itself.\n"
           "modprobe -q -a vfat nls_cp437 nls_utf8 nls_ascii 2>/dev/null\n"
           "said=\n"
           "while :; do\n"
           "  if [ -s $config ]; then\n"
           "    for wait in $(seq 60); do ip route | grep -q '^default' && break; sleep 1; done\n"
           "    /usr/sbin/cairn-attestd --config $config\n"
           "    status=$?\n"
           "    [ -n \"$said\" ] || echo \"cairn: attestation agent exited with $status, starting it again every minute\"\n"
           "    said=1\n"
           "    sleep 60\n"
           "  else\n"
           "    sleep 5\n"
           "  fi\n"
           "done\n";
}

void add_attestation_agent_files(Tree& tree, const Recipe& recipe) {
    DeviceAgent agent;
    agent.program = "cairn-attestd";
    agent.build_folder = "attestation";
    agent.image_path = attestation_paths::agent;
    agent.cli_program = "cairnctl-attest";
    agent.cli_path = attestation_paths::cli;
    agent.config = recipe.attestation.config;
    agent.config_path = attestation_paths::config;
    agent.run_path = attestation_paths::run;
    agent.run_script = attestd_run_script();
    add_device_agent(tree, agent, recipe.attestation.where);
}

}  // namespace cairn::imager
