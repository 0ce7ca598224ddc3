// cairn-firewall: loads the firewall policy into the kernel as one atomic batch, shows its state,
// takes an address off the blocklist. Links libnftnl (GPL-2.0-or-later) and never OpenSSL.
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/args.hpp"
#include "common/error.hpp"
#include "common/version.hpp"
#include "firewall/nftables.hpp"
#include "firewall/policy.hpp"

using namespace cairn;
using namespace cairn::firewall;

namespace {
const char* usage_text = R"(Usage: cairn-firewall COMMAND [OPTIONS]

Loads the device's firewall (nftables table inet cairn: inbound SSH and the policy's ports only,
brute-force sources blocked), shows its state and takes addresses off its blocklist.

Commands:
  apply [--policy FILE] [--boot]
                          load the policy (default /etc/cairn/firewall.toml; built-in defaults
                          when that file does not exist) as table inet cairn, replacing the
                          running rules in one atomic step; blocked sources keep their time
                          left; a bad policy changes nothing.
                          --boot: a policy that cannot be loaded is reported on one line and
                          the built-in lockdown (inbound ssh only, brute-force blocking) is
                          loaded instead (exit 3)
  check --policy FILE     only check a policy file (exit 2 with the error when it is wrong)
  status [--json]         the rules with their counters and the blocked addresses with the
                          time they stay blocked, read back from the kernel; exit 0 only when
                          table inet cairn is loaded (1: not loaded, or not readable)
  unblock ADDRESS         take an IPv4 address or an IPv6 /64 (any address in it, or
                          ADDRESS/64) off the blocklist

  -h, --help              this text; after a command: its own usage
  --version               the version

Exit status: 0 done, 1 failed (apply --boot: nothing could be loaded, the device has no
firewall; unblock: nothing to remove; status: not loaded), 2 usage or policy error,
3 (apply --boot) the policy was refused and the built-in lockdown is loaded instead.
)";

// `cairn-firewall COMMAND --help`: the command's lines of usage_text ("" for an unknown command).
std::string command_usage(const std::string& command) {
    std::string section;
    std::istringstream in(usage_text);
    bool inside = false;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("  " + command + " ", 0) == 0) inside = true;
        else if (inside && line.rfind("    ", 0) != 0) break;
        if (inside) section += line + "\n";
    }
    return section.empty() ? "" : "Usage: cairn-firewall " + command + " [OPTIONS]\n\n" + section;
}

void report(const Applied& done, const Policy& p, const char* what) {
    std::printf("firewall applied: %sinbound tcp %u", what, p.ssh_port);
    for (uint16_t port : p.tcp) std::printf(", %u", port);
    std::printf("; more than %u new ssh connections in %u s blocks a source (IPv6: its /64) for %u s", p.max_new, p.window_seconds,
                p.block_seconds);
    std::printf("; %zu blocked kept%s\n", done.blocked_kept, done.rates_kept ? ", rate counters kept" : "");
}

int usage(const std::string& message) {
    std::fprintf(stderr, "cairn-firewall: %s (see --help)\n", message.c_str());
    return 2;
}
}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) return usage("which command? (apply, check, status, unblock)");
    const std::string command = args.front();
    args.erase(args.begin());
    if (command == "-h" || command == "--help") {
        std::fputs(usage_text, stdout);
        return 0;
    }
    if (const std::string text = command_usage(command); !text.empty() && Args::help_in(args)) {
        std::fputs(text.c_str(), stdout);
        return 0;
    }
    if (Args::is_version(command) || (!command_usage(command).empty() && Args::version_in(args))) return print_version("cairn-firewall");
    try {
        if (command == "apply") {
            std::string policy_file = "/etc/cairn/firewall.toml";
            bool given = false, boot = false;
            Args a(args);
            while (a.next()) {
                if (a.is("--policy")) {
                    policy_file = a.value();
                    given = true;
                } else if (a.is("--boot")) {
                    boot = true;
                } else {
                    return usage("apply: unknown argument '" + a.arg() + "'");
                }
            }
            Policy p;
            std::string refused;  // why the policy was not loaded (with --boot: the lockdown is loaded instead)
            std::error_code ec;
            if (given || std::filesystem::exists(policy_file, ec)) {
                try {
                    p = load_policy(policy_file);
                } catch (const Error& e) {
                    if (!boot) {
                        std::fprintf(stderr, "cairn-firewall: %s (the running ruleset is unchanged)\n", e.what());
                        return 2;
                    }
                    refused = e.what();
                }
            }
            if (refused.empty()) {
                try {
                    report(apply(p), p, "");
                    return 0;
                } catch (const std::exception& e) {
                    if (!boot) throw;
                    refused = policy_file + ": the kernel did not take it: " + e.what();
                }
            }
            // --boot: never leave the device without a firewall.
            std::fprintf(stderr, "cairn-firewall: FIREWALL POLICY REFUSED: %s; falling back to the built-in lockdown (inbound ssh only)\n",
                         refused.c_str());
            const Policy lockdown;
            try {
                report(apply(lockdown), lockdown, "built-in lockdown: ");
            } catch (const std::exception& e) {
                std::fprintf(stderr, "cairn-firewall: the built-in lockdown could not be loaded either: %s: NO FIREWALL\n", e.what());
                return 1;
            }
            return 3;
        }
        if (command == "check") {
            if (args.size() != 2 || args[0] != "--policy") return usage("check: --policy FILE");
            try {
                load_policy(args[1]);
            } catch (const Error& e) {
                std::fprintf(stderr, "cairn-firewall: %s\n", e.what());
                return 2;
            }
            std::printf("%s: a valid firewall policy\n", args[1].c_str());
            return 0;
        }
        if (command == "status") {
            bool json = false;
            for (const std::string& a : args) {
                if (a == "--json") json = true;
                else return usage("status: unknown argument '" + a + "'");
            }
            State st = read_state();
            if (json) {
                nlohmann::json j = {{"loaded", st.present}};
                j["rules"] = nlohmann::json::array();
                for (const RuleState& r : st.rules)
                    j["rules"].push_back({{"chain", r.chain}, {"handle", r.handle}, {"comment", r.comment}, {"packets", r.packets}, {"bytes", r.bytes}});
                j["blocked"] = nlohmann::json::array();
                for (const Blocked& b : st.blocked) j["blocked"].push_back({{"address", b.address}, {"expires_ms", b.expires_ms}});
                std::printf("%s\n", j.dump(2).c_str());
                return st.present ? 0 : 1;
            }
            if (!st.present) {
                std::printf("firewall: NOT LOADED (no table inet cairn)\n");
                return 1;
            }
            std::printf("firewall: loaded (table inet cairn)\n");
            for (const RuleState& r : st.rules)
                std::printf("  %-8s %10llu packets %12llu bytes  %s\n", r.chain.c_str(), static_cast<unsigned long long>(r.packets),
                            static_cast<unsigned long long>(r.bytes), r.comment.c_str());
            std::printf("blocked: %zu\n", st.blocked.size());
            for (const Blocked& b : st.blocked)
                std::printf("  %-40s %llu s left\n", b.address.c_str(), static_cast<unsigned long long>((b.expires_ms + 999) / 1000));
            return 0;
        }
        if (command == "unblock") {
            if (args.size() != 1) return usage("unblock: one address");
            if (!unblock(args[0])) {
                std::fprintf(stderr, "cairn-firewall: %s is not blocked\n", args[0].c_str());
                return 1;
            }
            std::printf("unblocked %s\n", args[0].c_str());
            return 0;
        }
    } catch (const UsageError& e) {
        return usage(command + ": " + e.what());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cairn-firewall: %s\n", e.what());
        return 1;
    }
    return usage("unknown command '" + command + "'");
}
