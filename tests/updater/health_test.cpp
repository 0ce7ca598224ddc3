#include "updater/health.hpp"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;

namespace {
HealthCheck check_in(const Scratch& s, const std::string& firewall_exit) {
    write_text(s / "run/ready", "");
    std::filesystem::create_directories(s / "run/failed");
    write_text(s / "cairn-firewall", "#!/bin/sh\n[ \"$1\" = status ] || exit 2\nexit " + firewall_exit + "\n");
    ::chmod((s / "cairn-firewall").c_str(), 0755);
    HealthCheck c;
    c.run_dir = s / "run";
    c.settle = std::chrono::seconds(0);
    c.timeout = std::chrono::seconds(2);
    c.firewall = s / "cairn-firewall";
    return c;
}
}  // namespace

TEST(HealthCheck, ReadyAndNoServiceExitedIsHealthy) {
    Scratch s;
    EXPECT_EQ(run_health_check(check_in(s, "0")), "");
}

TEST(HealthCheck, AMissingFirewallRulesetIsUnhealthyWhateverElseSays) {
    Scratch s;
    HealthCheck c = check_in(s, "1");
    EXPECT_NE(run_health_check(c).find("the firewall is not loaded"), std::string::npos);
    c.mode = HealthMode::command;
    c.command = {"true"};  // a recipe's own check passing does not make up for it
    EXPECT_NE(run_health_check(c).find("the firewall is not loaded"), std::string::npos);
    c.firewall = s / "no-such-program";  // an image without a firewall: nothing to check
    EXPECT_EQ(run_health_check(c), "");
}

TEST(HealthCheck, AServiceThatExitedIsUnhealthy) {
    Scratch s;
    HealthCheck c = check_in(s, "0");
    write_text(s / "run/failed/30-sshd", "1\n");
    EXPECT_NE(run_health_check(c).find("30-sshd"), std::string::npos);
}

TEST(HealthCheck, TheModeFollowsTheCommandAndPidOne) {
    Scratch s;
    EXPECT_EQ(choose_health_mode({"/usr/bin/check"}, s / "systemd"), HealthMode::command);
    EXPECT_EQ(choose_health_mode({}, s / "systemd"), HealthMode::services);
    std::filesystem::create_directories(s / "systemd");
    EXPECT_EQ(choose_health_mode({}, s / "systemd"), HealthMode::boot_complete);
    EXPECT_EQ(choose_health_mode({"/usr/bin/check"}, s / "systemd"), HealthMode::command);
}

namespace {

// systemctl's answers as a booting systemd gives them: `is-system-running` prints `state`, the
// failed units are `failed` (the QEMU tests ask the real one).
HealthCheck boot_complete_check(const Scratch& s, const std::string& state, const std::string& failed) {
    HealthCheck c = check_in(s, "0");
    c.mode = HealthMode::boot_complete;
    write_text(s / "systemctl", "#!/bin/sh\ncase \"$1\" in\n  is-system-running) echo " + state + "; [ " + state +
                                    " = running ] ;;\n  list-units) printf '" + failed + "' ;;\n  *) exit 1 ;;\nesac\n");
    ::chmod((s / "systemctl").c_str(), 0755);
    c.systemctl = s / "systemctl";
    return c;
}

}  // namespace

TEST(HealthCheck, BootCompleteTargetReachedIsHealthy) {
    Scratch s;
    HealthCheck c = boot_complete_check(s, "starting", "");
    write_text(s / "run/boot-complete", "");
    EXPECT_EQ(run_health_check(c), "");
}

TEST(HealthCheck, ABootThatEndedWithoutBootCompleteNamesTheFailedUnits) {
    Scratch s;
    HealthCheck c = boot_complete_check(s, "degraded", "broken.service loaded failed failed Broken\\nother.service loaded failed failed Other\\n");
    c.timeout = std::chrono::seconds(60);  // it does not wait for the timeout: the boot is over
    const auto start = std::chrono::steady_clock::now();
    std::string reason = run_health_check(c);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
    EXPECT_NE(reason.find("the boot ended (degraded) without reaching boot-complete.target; failed units: broken.service, other.service"),
              std::string::npos)
        << reason;
}

TEST(HealthCheck, ABootStillStartingAtTheTimeoutIsUnhealthy) {
    Scratch s;
    HealthCheck c = boot_complete_check(s, "starting", "");
    c.timeout = std::chrono::seconds(1);
    std::string reason = run_health_check(c);
    EXPECT_NE(reason.find("boot-complete.target was not reached within 1 s"), std::string::npos) << reason;
}
