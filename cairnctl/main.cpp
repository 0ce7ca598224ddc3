// cairnctl: the on-device control tool. Each area's commands live with their concern
// (updater/client.cpp for `update`, provisioning/provision_cli.cpp for `provision`,
// provisioning/config_cli.cpp for `config`).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "provisioning/config_cli.hpp"
#include "provisioning/provision_cli.hpp"
#include "updater/client.hpp"

namespace {
const char* usage_text = R"(Usage: cairnctl AREA COMMAND [OPTIONS]

Areas:
  update     A/B updates: install a bundle, status, mark slots (cairnctl update --help)
  provision  the device's cloud identity (DPS): status, reprovision, check, tpm-info
  config     the device's configuration (/etc/cairn/config.toml): check, apply

  -h, --help   this text
)";
}

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::fputs(usage_text, stderr);
        return 2;
    }
    const std::string area = args.front();
    args.erase(args.begin());
    if (area == "-h" || area == "--help") {
        std::fputs(usage_text, stdout);
        return 0;
    }
    if (area == "update") return cairn::updater::update_command(args);
    if (area == "provision") return cairn::provisioning::provision_command(args, std::cout, std::cerr);
    if (area == "config") return cairn::provisioning::config_command(args, std::cout, std::cerr);
    std::fprintf(stderr, "cairnctl: unknown area '%s' (see --help)\n", area.c_str());
    return 2;
}
