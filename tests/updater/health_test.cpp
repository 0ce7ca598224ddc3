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
