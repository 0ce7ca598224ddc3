#include "updater/health.hpp"

#include <optional>
#include <sstream>
#include <thread>

#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;

std::string_view health_mode_name(HealthMode mode) {
    switch (mode) {
        case HealthMode::services: return "services";
        case HealthMode::command: return "command";
        case HealthMode::boot_complete: return "boot-complete";
    }
    return "?";
}

HealthMode choose_health_mode(const std::vector<std::string>& command, const fs::path& systemd_runtime) {
    if (!command.empty()) return HealthMode::command;
    std::error_code ec;
    return fs::is_directory(systemd_runtime, ec) ? HealthMode::boot_complete : HealthMode::services;
}

namespace {

// systemd's judgement of the boot: waits for run_dir/boot-complete until the deadline, or until
// the boot is over without it.
std::string check_boot_complete(const HealthCheck& check, std::chrono::steady_clock::time_point deadline) {
    using Clock = std::chrono::steady_clock;
    std::error_code ec;
    bool ended = false;
    Clock::time_point ended_at {};
    for (;;) {
        if (fs::exists(check.run_dir / "boot-complete", ec)) return "";
        std::string state;
        try {
            state = trim_end(run({check.systemctl.string(), "is-system-running"}).out);
        } catch (const Error& e) {
            return std::string("systemd could not be asked about the boot: ") + e.what();
        }
        // Over: no more jobs. The unit that marks the target may still be finishing: a moment's grace.
        if (state == "running" || state == "degraded") {
            if (!ended) ended_at = Clock::now();
            ended = true;
        } else {
            ended = false;
        }
        const bool over = ended && Clock::now() - ended_at > std::chrono::seconds(3);
        if (over || Clock::now() > deadline) {
            std::string failed;
            try {
                std::istringstream lines(run({check.systemctl.string(), "list-units", "--failed", "--plain", "--no-legend", "--no-pager"}).out);
                for (std::string line; std::getline(lines, line);) {
                    std::istringstream words(line);
                    std::string unit;
                    if (words >> unit) failed += (failed.empty() ? "" : ", ") + unit;
                }
            } catch (const Error&) {
            }
            std::string reason = over ? "the boot ended (" + state + ") without reaching boot-complete.target"
                                      : "boot-complete.target was not reached within " + std::to_string(check.timeout.count()) + " s";
            return reason + (failed.empty() ? "" : "; failed units: " + failed);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
}

}  // namespace

std::string run_health_check(const HealthCheck& check) {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + check.timeout;
    std::error_code exists_ec;
    if (!check.firewall.empty() && fs::exists(check.firewall, exists_ec)) {
        try {
            RunResult r = run({check.firewall.string(), "status"});
            if (r.exit_code != 0) return "the firewall is not loaded (" + check.firewall.string() + " status exited with " + std::to_string(r.exit_code) + ")";
        } catch (const Error& e) {
            return std::string("the firewall could not be checked: ") + e.what();
        }
    }
    if (check.mode == HealthMode::boot_complete) return check_boot_complete(check, deadline);
    if (check.mode == HealthMode::command) {
        if (check.command.empty()) return "health check: no command";
        const fs::path log = "/run/cairn/health-check.log";
        std::error_code mk;
        fs::create_directories(log.parent_path(), mk);
        try {
            Process p(check.command, log);
            std::optional<int> status = p.wait(static_cast<int>(check.timeout.count() * 1000));
            if (!status) {
                p.stop(1000);
                return "health check " + check.command.front() + " did not finish within " + std::to_string(check.timeout.count()) + " s";
            }
            if (*status == 0) return "";
            return "health check " + check.command.front() + " exited with " + std::to_string(*status);
        } catch (const Error& e) {
            return std::string("health check: ") + e.what();
        }
    }
    std::error_code ec;
    while (!fs::exists(check.run_dir / "ready", ec)) {
        if (Clock::now() > deadline)
            return "the device services did not come up within " + std::to_string(check.timeout.count()) + " s";
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::this_thread::sleep_for(check.settle);
    std::vector<std::string> failed;
    for (auto it = fs::directory_iterator(check.run_dir / "failed", ec); !ec && it != fs::directory_iterator(); it.increment(ec))
        failed.push_back(it->path().filename().string());
    if (!failed.empty()) {
        std::string list;
        for (const auto& f : failed) list += (list.empty() ? "" : ", ") + f;
        return "device service(s) exited: " + list;
    }
    return "";
}

}  // namespace cairn::updater
