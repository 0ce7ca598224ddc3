#include "firewall/policy.hpp"

#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::firewall;

TEST(Policy, DefaultsAreSshOnlyWithThreePerMinute) {
    Policy p = parse_policy("", "firewall.toml");
    EXPECT_EQ(p.ssh_port, 22);
    EXPECT_EQ(p.max_new, 3u);
    EXPECT_EQ(p.window_seconds, 60u);
    EXPECT_EQ(p.block_seconds, 600u);
    EXPECT_EQ(p.max_sources, 65535u);
    EXPECT_TRUE(p.tcp.empty());
}

TEST(Policy, ReadsEveryKey) {
    Policy p = parse_policy(R"(
[ssh]
port = 2222
[ssh.brute_force]
max_new = 5
window = "2m"
block = 3600
max_sources = 1024
[inbound]
tcp = [443, 8443]
echo_per_second = 0
)", "f.toml");
    EXPECT_EQ(p.ssh_port, 2222);
    EXPECT_EQ(p.max_new, 5u);
    EXPECT_EQ(p.window_seconds, 120u);
    EXPECT_EQ(p.block_seconds, 3600u);
    EXPECT_EQ(p.max_sources, 1024u);
    EXPECT_EQ(p.tcp, (std::vector<uint16_t>{443, 8443}));
    EXPECT_EQ(p.echo_per_second, 0u);
}

TEST(Policy, ErrorsNameFileLineAndKey) {
    expect_error([] { parse_policy("[ssh]\nport = 70000\n", "f.toml"); }, {"f.toml:2: ssh.port", "1 to 65535"});
    expect_error([] { parse_policy("[ssh]\nprot = 22\n", "f.toml"); }, {"f.toml:2: ssh.prot", "unknown key"});
    expect_error([] { parse_policy("[ssh.brute_force]\nwindow = \"soon\"\n", "f.toml"); }, {"f.toml:2: ssh.brute_force.window", "not a duration"});
    expect_error([] { parse_policy("[ssh.brute_force]\nmax_sources = 0\n", "f.toml"); }, {"f.toml:2: ssh.brute_force.max_sources"});
    expect_error([] { parse_policy("[inbound]\ntcp = [\"http\"]\n", "f.toml"); }, {"f.toml:2: inbound.tcp"});
    expect_error([] { parse_policy("[ssh\n", "f.toml"); }, {"f.toml:1"});
    expect_error([] { load_policy("/nonexistent/firewall.toml"); }, {"/nonexistent/firewall.toml"});
}

TEST(Policy, Durations) {
    EXPECT_EQ(parse_duration("90s", "d"), 90u);
    EXPECT_EQ(parse_duration("10m", "d"), 600u);
    EXPECT_EQ(parse_duration("1h", "d"), 3600u);
    EXPECT_EQ(parse_duration("45", "d"), 45u);
    expect_error([] { parse_duration("0s", "d"); }, {"d", "not a duration"});
    expect_error([] { parse_duration("8d", "d"); }, {"d"});
}
