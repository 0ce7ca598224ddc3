// The update commands of cairnctl, talking to cairn-updated over D-Bus.
#pragma once

#include <string>
#include <vector>

namespace cairn::updater {

// `cairnctl update ARGS...`: install|status|mark-good|mark-bad|mark-active. Returns the exit code
// (0 ok, 1 failed, 2 usage).
int update_command(const std::vector<std::string>& args);

extern const char* update_usage;

}  // namespace cairn::updater
