// The firewall policy: /etc/cairn/firewall.toml (recipe default: inbound TCP 22 only; more than 3
// new SSH connections from one source within 60 s blocks that source for 10 minutes).
//
//   [ssh]
//   port = 22
//   [ssh.brute_force]
//   max_new = 3        # new connections a source may open within the window
//   window = "60s"
//   block = "10m"      # how long a source that exceeded it stays blocked
//   max_sources = 65535  # sources (IPv4 addresses, IPv6 /64s) counted at once, per family
//   [inbound]
//   tcp = []           # more TCP ports to open
//   echo_per_second = 5  # ICMP/ICMPv6 echo requests accepted per second (0: none)
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cairn::firewall {

struct Policy {
    uint16_t ssh_port = 22;
    uint32_t max_new = 3;
    uint32_t window_seconds = 60;
    uint32_t block_seconds = 600;
    uint32_t max_sources = 65535;  // size of the rate and block sets; a full rate set drops new SSH connections
    std::vector<uint16_t> tcp;  // more open TCP ports
    uint32_t echo_per_second = 5;
};

// Strict: unknown keys, wrong types and out-of-range values are errors naming file:line: key.
Policy parse_policy(const std::string& text, const std::filesystem::path& file);
Policy load_policy(const std::filesystem::path& file);

// "90s", "10m", "1h" or a number of seconds.
uint32_t parse_duration(const std::string& text, const std::string& what);

}  // namespace cairn::firewall
