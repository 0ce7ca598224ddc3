// The health check of a trial boot.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::updater {

// How a trial boot is judged (run_health_check below).
enum class HealthMode {
    services,       // the minimal init's services (run_dir/ready, run_dir/failed/)
    command,        // the recipe's [update] health_check program
    boot_complete,  // systemd's boot-complete.target (run_dir/boot-complete)
};

std::string_view health_mode_name(HealthMode mode);

struct HealthCheck {
    HealthMode mode = HealthMode::services;
    std::vector<std::string> command;              // mode command: argv
    std::filesystem::path run_dir = "/run/cairn";  // where init reports the services
    std::chrono::seconds timeout{180};
    std::chrono::seconds settle{5};
    // The firewall program, when the image has one: its `status` must say the `cairn` table is
    // loaded (exit 0), whatever else the check says. Empty: no firewall check.
    std::filesystem::path firewall = "/usr/sbin/cairn-firewall";
    std::filesystem::path systemctl = "systemctl";  // mode boot_complete
};

// The mode for a booted system: the command when there is one, boot_complete when systemd is PID 1
// (`systemd_runtime`, /run/systemd/system, exists), else services.
HealthMode choose_health_mode(const std::vector<std::string>& command, const std::filesystem::path& systemd_runtime = "/run/systemd/system");

// services: init reported `ready` (run_dir/ready exists) within the timeout, and after `settle`
// seconds no device service has exited (run_dir/failed/ is empty).
// command: it must exit 0 within the timeout.
// boot_complete: systemd reached boot-complete.target (cairn-boot-complete.service, ordered after
// it, made run_dir/boot-complete) within the timeout. Units that must work order themselves before
// the target (systemd-boot-check-no-failures.service fails it when any unit failed); when the boot
// is over (`systemctl is-system-running`: running or degraded) without it, the check fails at once
// and names the failed units.
// Every mode: an image with a firewall program must have its ruleset loaded. Returns "" when
// healthy, else the reason.
std::string run_health_check(const HealthCheck& check);

}  // namespace cairn::updater
