#include "imager/attestation_agent.hpp"

#include "common/file.hpp"
#include "common/toml_reader.hpp"
#include "imager/initrd.hpp"
#include "imager/provisioning.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

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
    const Recipe::Attestation& a = recipe.attestation;
    const std::string& what = a.where;
    const Meta exec{0, 0, 0755}, dir{0, 0, 0755};
    for (const char* d : {"/usr", "/usr/sbin", "/usr/bin", "/usr/lib", "/usr/lib/cairn", "/etc", "/etc/cairn"})
        if (!tree.meta(tree.resolve(d, what))) tree.add_directory(d, dir, what);
    std::vector<fs::path> libraries =
        add_cairn_program(tree, find_cairn_program("cairn-attestd", "attestation"), attestation_paths::agent, exec, what + ": cairn-attestd");
    if (!tree.meta(tree.resolve("/usr/bin/cairnctl", what)))  // [update] and [provisioning] bring it too
        add_cairn_program(tree, find_cairn_program("cairnctl", "cairnctl"), "/usr/bin/cairnctl", exec, what + ": cairnctl");
    add_cairn_program(tree, find_cairn_program("cairnctl-attest", "cairnctl"), attestation_paths::cli, exec, what + ": cairnctl-attest");
    add_tpm_device_tcti(tree, libraries, what);

    if (!a.config.empty()) {
        TomlReader::parse(read_file(a.config), a.config);  // a syntax error names the file and line now, not on the device
        tree.add_file_copy(attestation_paths::config, a.config, Meta{0, 0, 0600}, what);
    }
    tree.add_file(attestation_paths::run, attestd_run_script(), exec, what);
}

}  // namespace cairn::imager
