// cairnctl: the on-device control tool. Each area's commands live with their concern
// (updater/client.cpp for `update`, provisioning/config_cli.cpp for `config`,
// provisioning/provision_cli.cpp for `provision`, attestation/agent_cli.cpp for `attest`).
//
// `provision` and `attest` run in their own programs, cairnctl-provision and cairnctl-attest,
// which this one starts in its place: they need libcurl and the TPM stack, and `cairnctl update` should neither load them (they are most
// of its start-up time from a cold cache) nor bring them into an image that has no provisioning.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "common/args.hpp"
#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "common/version.hpp"
#include "provisioning/config_cli.hpp"
#include "updater/client.hpp"

namespace {

namespace fs = std::filesystem;

const char* usage_text = R"(Usage: cairnctl AREA COMMAND [OPTIONS]

Controls a Cairn device: its A/B updates, its cloud identity and its configuration.

Areas:
  update     A/B updates: install a bundle into the other slot, show the slots and the last
             install or rollback, mark slots good, bad or active
  provision  the device's cloud identity (DPS): status, reprovision, check, tpm-info
  config     the device's configuration (/etc/cairn/config.toml): check, apply, import
  attest     boot attestation: the verifier's last judgement of this boot (status), a round now (now)

  -h, --help                  this text; after an area or command: its own usage
  help [AREA [COMMAND]]       the same as `cairnctl AREA COMMAND --help`
  --version                   the version

Exit status: 0 done, 1 failed, 2 usage error; `cairnctl provision status` also 3 (not configured);
`cairnctl attest now` 1 when the boot is not judged Healthy.
)";

// cairnctl-<area> beside this program (a build tree), or in ../lib/cairn (an image, an install).
int helper(const std::string& area, const std::string& section, const std::vector<std::string>& args) {
    std::error_code ec;
    const fs::path self = cairn::own_directory();
    const std::string name = "cairnctl-" + area;
    for (const fs::path& candidate : {self / name, self / ("../lib/cairn/" + name)}) {
        if (!fs::is_regular_file(candidate, ec)) continue;
        std::vector<std::string> argv = {name};
        argv.insert(argv.end(), args.begin(), args.end());
        cairn::replace_process(candidate, argv);
    }
    std::fprintf(stderr, "cairnctl: %s: %s is not in %s or %s (an image without %s has none)\n", area.c_str(), name.c_str(), self.c_str(),
                 (self.parent_path() / "lib/cairn").c_str(), section.c_str());
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::fputs(usage_text, stderr);
        return 2;
    }
    std::string area = args.front();
    args.erase(args.begin());
    if (area == "help" && !args.empty()) {
        // `cairnctl help AREA [COMMAND]`: what `cairnctl AREA [COMMAND] --help` shows.
        area = args.front();
        args.erase(args.begin());
        args.push_back("--help");
    } else if (area == "help" || cairn::Args::is_help(area)) {
        std::fputs(usage_text, stdout);
        return 0;
    }
    if (cairn::Args::is_version(area)) return cairn::print_version("cairnctl");
    try {
        if (area == "update") return cairn::updater::update_command(args);
        if (area == "provision") return helper("provision", "[provisioning]", args);
        if (area == "attest") return helper("attest", "the attestation agent", args);
        if (area == "config") return cairn::provisioning::config_command(args, std::cout, std::cerr);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cairnctl: %s\n", e.what());
        return 1;
    }
    std::fprintf(stderr, "cairnctl: unknown area '%s' (see --help)\n", area.c_str());
    return 2;
}
