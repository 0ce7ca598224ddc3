// `cairnctl config check|apply`: the device's configuration (/etc/cairn/config.toml, the
// provisioning agent's) checked before it is used, and installed atomically.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace cairn::provisioning {

// args: the words after "config". Commands:
//   check [-c FILE]   reads FILE as the agent would (unknown key, wrong type, missing file: an
//                     error naming the key); exit 1 on a problem
//   apply [-c FILE]   checks FILE, installs it as the configuration (temporary file, fsync,
//                     rename) unless it is that file already, and has the running agent
//                     provision again with it (SIGHUP to the pid in --pid-file). A bad FILE
//                     changes nothing: the agent keeps its configuration.
//   import [-i CONFIG.yaml] [-o FILE] [--force]
//                     an IoT Edge 1.1 config.yaml (default /etc/iotedge/config.yaml) as FILE
//                     (default: the target), checked as the agent would read it; an existing
//                     FILE is kept unless --force
// Options: --target PATH (default /etc/cairn/config.toml), --pid-file PATH (default
// /run/cairn/provisiond.pid), --json.
int config_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace cairn::provisioning
