#include "imager/provisioning.hpp"

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/toml_reader.hpp"
#include "imager/elf.hpp"
#include "imager/initrd.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

std::string provisiond_run_script() {
    return "#!/bin/sh\n"
           "# The provisioning agent (written by `cairn build` from the recipe's [provisioning]): it\n"
           "# provisions at start and again on SIGHUP, which `cairnctl config apply` sends once it has\n"
           "# installed a new /etc/cairn/config.toml. Without a config.toml it waits for one.\n"
           "mkdir -p /run/cairn\n"
           "echo $$ > /run/cairn/provisiond.pid.new && mv /run/cairn/provisiond.pid.new /run/cairn/provisiond.pid\n"
           "again=1 sleeper=\n"
           "trap 'again=1; [ -n \"$sleeper\" ] && kill $sleeper 2>/dev/null' HUP\n"
           "while :; do\n"
           "  if [ $again = 1 ]; then\n"
           "    again=0\n"
           "    if [ -s /etc/cairn/config.toml ]; then\n"
           "      for wait in $(seq 60); do ip route | grep -q '^default' && break; sleep 1; done\n"
           "      if /usr/sbin/cairn-provisiond; then echo \"cairn: provisioning done\"; else echo \"cairn: provisioning failed\"; fi\n"
           "    fi\n"
           "  fi\n"
           "  sleep 2147483647 & sleeper=$!\n"
           "  [ $again = 1 ] || wait $sleeper   # a SIGHUP while provisioning: at once\n"
           "  kill $sleeper 2>/dev/null; sleeper=\n"
           "done\n";
}

void add_tpm_device_tcti(Tree& tree, const std::vector<fs::path>& libraries, const std::string& what) {
    // The TCTI loader opens "device" (/dev/tpmrm0) with dlopen: it sits beside libtss2-tctildr.
    fs::path tcti;
    for (const fs::path& lib : libraries)
        if (lib.filename().string().rfind("libtss2-tctildr.so", 0) == 0) tcti = fs::canonical(lib).parent_path() / "libtss2-tcti-device.so.0";
    std::error_code ec;
    if (tcti.empty() || !fs::exists(tcti, ec))
        fail(what + ": the TPM device TCTI (libtss2-tcti-device.so.0) was not found on the build host (Debian's libtss2-tcti-device0; see scripts/install-deps)");
    if (tree.meta(tree.resolve(tcti.string(), what))) return;  // the other TPM agent brought it
    add_host_executable(tree, tcti, tcti.string(), Meta{0, 0, 0644}, what + ": " + tcti.filename().string());
}

void add_provisioning_files(Tree& tree, const Recipe& recipe) {
    const Recipe::Provisioning& p = recipe.provisioning;
    const std::string& what = p.where;
    const Meta exec{0, 0, 0755}, dir{0, 0, 0755};
    for (const char* d : {"/usr", "/usr/sbin", "/usr/bin", "/usr/lib", "/usr/lib/cairn", "/etc", "/etc/cairn"})
        if (!tree.meta(tree.resolve(d, what))) tree.add_directory(d, dir, what);
    const fs::path agent = find_cairn_program("cairn-provisiond", "provisioning");
    std::vector<fs::path> libraries = add_cairn_program(tree, agent, provisioning_paths::agent, exec, what + ": cairn-provisiond");
    if (!recipe.update.enabled)  // [update] brings cairnctl too
        add_cairn_program(tree, find_cairn_program("cairnctl", "cairnctl"), "/usr/bin/cairnctl", exec, what + ": cairnctl");
    add_cairn_program(tree, find_cairn_program("cairnctl-provision", "cairnctl"), provisioning_paths::cli, exec,
                        what + ": cairnctl-provision");

    add_tpm_device_tcti(tree, libraries, what);

    if (!p.config.empty()) {
        TomlReader::parse(read_file(p.config), p.config);  // a syntax error names the file and line now, not on the device
        tree.add_file_copy(provisioning_paths::config, p.config, Meta{0, 0, 0600}, what);
    }
    tree.add_file(provisioning_paths::run, provisiond_run_script(), exec, what);
}

}  // namespace cairn::imager
