// The firewall in the kernel, through libnftnl and libmnl: the whole ruleset as one atomic netlink
// batch, its state read back, and single blocklist entries removed.
//
// Table `inet cairn` (see ruleset.md in docs/firewall.md):
//   sets   blocked4/blocked6 (timeout = block time), ssh_rate4/ssh_rate6 (dynamic, per-source limit);
//          IPv6 sources are counted and blocked by their /64
//   chain  input   (filter, hook input, policy drop): invalid drop; echo requests rate-limited per
//                  packet; established,related accept; iifname lo accept; needed ICMP/ICMPv6 and
//                  link-local MLD accept; blocked sources drop; a new SSH connection over the
//                  per-source rate jumps to ssh_over; one the full rate set cannot count is dropped;
//                  SSH (and policy TCP ports) accept; a counter for the rest
//   chain  ssh_over (regular): put the source on the blocklist, drop
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

// Loads the policy in one batch: the chains are emptied, deleted and rebuilt; a set whose
// definition is unchanged is kept with its elements (blocked sources with their time left, rate
// counters); a changed blocklist set is replaced with its entries carried over (time left, at most
// the new block time); a changed rate set starts afresh. There is no instant without the
// firewall, and a refused batch changes nothing. Needs CAP_NET_ADMIN in the network namespace.
struct Applied {
    size_t blocked_kept = 0;  // blocklist entries still in force after the apply
    bool rates_kept = false;  // the rate counters were kept (their definition did not change)
};
Applied apply(const Policy& policy);

struct RuleState {
    std::string chain, comment;
    uint64_t handle = 0, packets = 0, bytes = 0;
};
struct Blocked {
    std::string address;     // "192.0.2.7" or "2001:db8::/64"
    uint64_t expires_ms = 0; // time left
};
struct State {
    bool present = false;    // the table exists
    std::vector<RuleState> rules;
    std::vector<Blocked> blocked;
};
State read_state();

// Removes an address (for IPv6: its /64) from the blocklist and from the rate set; false when it
// was not blocked. Throws Error on a bad address.
bool unblock(const std::string& address);

}  // namespace cairn::firewall
