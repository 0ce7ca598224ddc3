// `cairnctl provision status|reprovision|check|tpm-info` (the lead wires it into cairnctl), and
// the entry point of cairn-provisiond. Both print one clear line on failure and return non-zero.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace cairn::provisioning {

// args: the words after "provision", e.g. {"status", "--json"}. Options: --config FILE,
// --state-dir DIR (defaults /etc/cairn/config.toml, /var/lib/cairn/provisioning).
int provision_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// cairn-provisiond [--config FILE] [--state-dir DIR]: one provisioning decision at start.
int provisiond_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace cairn::provisioning
