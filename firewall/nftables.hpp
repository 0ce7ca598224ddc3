// The firewall in the kernel, through libnftnl and libmnl: the whole ruleset as one atomic netlink
// batch, its state read back, and single blocklist entries removed.
//
// Table `inet cairn` (see ruleset.md in docs/firewall.md):
//   sets   blocked4/blocked6 (timeout = block time), ssh_rate4/ssh_rate6 (dynamic, per-source limit)
//   chain  input   (filter, hook input, policy drop): invalid drop; established,related accept;
//                  iifname lo accept; needed ICMP/ICMPv6 accept (echo rate-limited); blocked sources
//                  drop; a new SSH connection over the per-source rate puts its source on the
//                  blocklist and is dropped; SSH (and policy TCP ports) accept; a counter for the rest
//   chain  forward (filter, hook forward, policy drop)
// Every rule carries a comment (nft list ruleset shows it) and a counter. In the inet table each
// rule checks nfproto and l4proto before it reads an address or a port, as nft does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "firewall/policy.hpp"

namespace cairn::firewall {

inline constexpr const char* table_name = "cairn";

// Replaces the table in one batch (add table, delete table, add table and everything in it):
// there is no instant without the firewall, and a failed batch changes nothing. Needs
// CAP_NET_ADMIN in the network namespace.
void apply(const Policy& policy);

struct RuleState {
    std::string chain, comment;
    uint64_t handle = 0, packets = 0, bytes = 0;
};
struct Blocked {
    std::string address;     // "192.0.2.7" or "2001:db8::7"
    uint64_t expires_ms = 0; // time left
};
struct State {
    bool present = false;    // the table exists
    std::vector<RuleState> rules;
    std::vector<Blocked> blocked;
};
State read_state();

// Removes an address from the blocklist; false when it was not there. Throws Error on a bad address.
bool unblock(const std::string& address);

}  // namespace cairn::firewall
