// The attestation agent's programs: cairn-attestd (the daemon) and `cairnctl attest`
// (cairnctl-attest, which cairnctl starts in its place).
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace cairn::attestation {

// cairn-attestd [--config FILE] [--once]. Exit status: 0 stopped by SIGTERM (or --once Healthy),
// 1 failed (or --once not Healthy), 2 usage.
int attestd_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// cairnctl attest status [--json] | now [--json] [--config FILE]. Exit status: status: 0;
// now: 0 Healthy, 1 Unhealthy, Unknown or an error; 2 usage.
int attest_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace cairn::attestation
