#include "imager/device_agent.hpp"

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/toml_reader.hpp"
#include "imager/initrd.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

void add_tpm_device_tcti(Tree& tree, const std::vector<fs::path>& libraries, const std::string& what) {
    fs::path tcti;
    for (const fs::path& lib : libraries)
        if (lib.filename().string().rfind("libtss2-tctildr.so", 0) == 0) tcti = fs::canonical(lib).parent_path() / "libtss2-tcti-device.so.0";
    std::error_code ec;
    if (tcti.empty() || !fs::exists(tcti, ec))
        fail(what + ": the TPM device TCTI (libtss2-tcti-device.so.0) was not found on the build host (Debian's libtss2-tcti-device0; see scripts/install-deps)");
    if (tree.meta(tree.resolve(tcti.string(), what))) return;  // the other agent brought it
    add_host_executable(tree, tcti, tcti.string(), Meta{0, 0, 0644}, what + ": " + tcti.filename().string());
}

void add_device_agent(Tree& tree, const DeviceAgent& agent, const std::string& what) {
    const Meta exec{0, 0, 0755}, dir{0, 0, 0755};
    for (const char* d : {"/usr", "/usr/sbin", "/usr/bin", "/usr/lib", "/usr/lib/cairn", "/etc", "/etc/cairn"})
        if (!tree.meta(tree.resolve(d, what))) tree.add_directory(d, dir, what);
    const std::vector<fs::path> libraries =
        add_cairn_program(tree, find_cairn_program(agent.program, agent.build_folder), agent.image_path, exec, what + ": " + agent.program);
    if (!tree.meta(tree.resolve("/usr/bin/cairnctl", what)))  // [update] and the other agent bring it too
        add_cairn_program(tree, find_cairn_program("cairnctl", "cairnctl"), "/usr/bin/cairnctl", exec, what + ": cairnctl");
    add_cairn_program(tree, find_cairn_program(agent.cli_program, "cairnctl"), agent.cli_path, exec, what + ": " + agent.cli_program);
    add_tpm_device_tcti(tree, libraries, what);
    if (!agent.config.empty()) {
        TomlReader::parse(read_file(agent.config), agent.config);  // a syntax error names the file and line now, not on the device
        tree.add_file_copy(agent.config_path, agent.config, Meta{0, 0, 0600}, what);
    }
    tree.add_file(agent.run_path, agent.run_script, exec, what);
}

}  // namespace cairn::imager
