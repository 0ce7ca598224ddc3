#include "updater/health.hpp"

#include <optional>
#include <thread>

#include "common/error.hpp"
#include "common/subprocess.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;

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
    if (!check.command.empty()) {
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
