// The health check of a trial boot.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace cairn::updater {

struct HealthCheck {
    std::vector<std::string> command;              // empty: the default check below
    std::filesystem::path run_dir = "/run/cairn";  // where init reports the services
    std::chrono::seconds timeout{180};
    std::chrono::seconds settle{5};
    // The firewall program, when the image has one: its `status` must say the `cairn` table is
    // loaded (exit 0), whatever else the check says. Empty: no firewall check.
    std::filesystem::path firewall = "/usr/sbin/cairn-firewall";
};

// The default check: init reported `ready` (run_dir/ready exists) within the timeout, and after
// `settle` seconds no device service has exited (run_dir/failed/ is empty). A command instead:
// it must exit 0 within the timeout. Either way, an image with a firewall program must have its
// ruleset loaded. Returns "" when healthy, else the reason.
std::string run_health_check(const HealthCheck& check);

}  // namespace cairn::updater
