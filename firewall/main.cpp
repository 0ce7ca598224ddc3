// cairn-firewall: loads the firewall policy into the kernel as one atomic batch, shows its state,
// takes an address off the blocklist. Links libnftnl (GPL-2.0-or-later) and never OpenSSL.
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/args.hpp"
#include "common/error.hpp"
#include "firewall/nftables.hpp"
#include "firewall/policy.hpp"

using namespace cairn;
using namespace cairn::firewall;

namespace {
const char* usage_text = R"(Usage: cairn-firewall COMMAND [OPTIONS]

Commands:
  apply [--policy FILE]   load the policy (default /etc/cairn/firewall.toml; built-in defaults
                          when that file does not exist) as table inet cairn, replacing the
                          running one in one atomic step; a bad policy changes nothing
  check --policy FILE     only check a policy file (exit 2 with the error when it is wrong)
  status [--json]         the rules with their counters and the blocked addresses with the
                          time they stay blocked, read back from the kernel
  unblock ADDRESS         take an IPv4 or IPv6 address off the blocklist

Exit status: 0 done, 1 failed (or: unblock found nothing to remove), 2 usage or policy error.
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
    try {
        if (command == "apply") {
            std::string policy_file = "/etc/cairn/firewall.toml";
            bool given = false;
            Args a(args);
            while (a.next()) {
                if (a.is("--policy")) {
                    policy_file = a.value();
                    given = true;
                } else {
                    return usage("apply: unknown argument '" + a.arg() + "'");
                }
            }
            Policy p;
            std::error_code ec;
            if (given || std::filesystem::exists(policy_file, ec)) {
                try {
                    p = load_policy(policy_file);
                } catch (const Error& e) {
                    std::fprintf(stderr, "cairn-firewall: %s (the running ruleset is unchanged)\n", e.what());
                    return 2;
                }
            }
            apply(p);
            std::printf("firewall applied: inbound tcp %u", p.ssh_port);
            for (uint16_t port : p.tcp) std::printf(", %u", port);
            std::printf("; more than %u new ssh connections in %u s blocks a source for %u s\n", p.max_new, p.window_seconds, p.block_seconds);
            return 0;
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
