// Every program and subcommand answers -h and --help with its own usage on standard output and
// exit status 0, touching nothing, and --version with "<program> <version>" (the project's version,
// CMake's project(VERSION)) and exit status 0; `cairn help [COMMAND]` and `cairnctl help [AREA
// [COMMAND]]` show the same usage as --help. cairn-init, which runs only as PID 1 in the initrd and
// takes no arguments, is exempt. It lives with cairnctl's tests, not under integration/, because it
// needs no built image.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
namespace fs = std::filesystem;

namespace {

struct Case {
    std::vector<std::string> argv;  // without the help option
    std::string usage;              // a line of standard output starts with this
    std::string program;            // what --version names
};

bool has_line_starting(const std::string& out, const std::string& start) {
    size_t at = 0;
    while (at < out.size()) {
        size_t end = out.find('\n', at);
        if (end == std::string::npos) end = out.size();
        if (out.compare(at, start.size(), start) == 0) return true;
        at = end + 1;
    }
    return false;
}

// Whether the usage says what the command does: a line besides the usage line(s) and the options.
bool describes(const std::string& out) {
    size_t at = 0;
    while (at < out.size()) {
        size_t end = out.find('\n', at);
        if (end == std::string::npos) end = out.size();
        const std::string line = out.substr(at, end - at);
        const size_t text = line.find_first_not_of(' ');
        at = end + 1;
        if (text == std::string::npos || line[text] == '-') continue;
        if (line.rfind("Usage:", 0) == 0 || line.rfind("       ", 0) == 0) continue;
        if (line.find_first_of("abcdefghijklmnopqrstuvwxyz") == std::string::npos) continue;  // "Options:", "Commands:"
        return true;
    }
    return false;
}

std::string shown(const std::vector<std::string>& argv) {
    std::string out = fs::path(argv[0]).filename().string();
    for (size_t i = 1; i < argv.size(); ++i) out += " " + argv[i];
    return out;
}

std::vector<Case> cases() {
    const std::string cairn = CAIRN_BINARY, cairnctl = CAIRNCTL_BINARY, firewall = CAIRN_FIREWALL_BINARY;
    const std::string provision = (fs::path(CAIRNCTL_BINARY).parent_path() / "cairnctl-provision").string();
    return {
        {{cairn}, "Usage: cairn COMMAND", "cairn"},
        {{cairn, "build"}, "Usage: cairn build RECIPE", "cairn"},
        {{cairn, "bundle"}, "Usage: cairn bundle DIR", "cairn"},
        {{cairn, "inspect"}, "Usage: cairn inspect IMAGE", "cairn"},
        {{cairn, "qemu"}, "Usage: cairn qemu IMAGE", "cairn"},
        {{cairnctl}, "Usage: cairnctl AREA", "cairnctl"},
        {{cairnctl, "update"}, "Usage: cairnctl update COMMAND", "cairnctl"},
        {{cairnctl, "update", "install"}, "Usage: cairnctl update install BUNDLE", "cairnctl"},
        {{cairnctl, "update", "status"}, "Usage: cairnctl update status", "cairnctl"},
        {{cairnctl, "update", "mark-good"}, "Usage: cairnctl update mark-good", "cairnctl"},
        {{cairnctl, "update", "mark-bad"}, "Usage: cairnctl update mark-bad SLOT", "cairnctl"},
        {{cairnctl, "update", "mark-active"}, "Usage: cairnctl update mark-active SLOT", "cairnctl"},
        {{cairnctl, "provision"}, "Usage: cairnctl provision status|reprovision|check|tpm-info", "cairnctl"},
        {{cairnctl, "provision", "status"}, "Usage: cairnctl provision status", "cairnctl"},
        {{cairnctl, "provision", "reprovision"}, "Usage: cairnctl provision reprovision", "cairnctl"},
        {{cairnctl, "provision", "check"}, "Usage: cairnctl provision check", "cairnctl"},
        {{cairnctl, "provision", "tpm-info"}, "Usage: cairnctl provision tpm-info", "cairnctl"},
        {{provision, "tpm-info"}, "Usage: cairnctl provision tpm-info", "cairnctl"},
        {{cairnctl, "attest"}, "Usage: cairnctl attest status|now", "cairnctl"},
        {{cairnctl, "attest", "status"}, "Usage: cairnctl attest status", "cairnctl"},
        {{cairnctl, "attest", "now"}, "Usage: cairnctl attest now", "cairnctl"},
        {{cairnctl, "config"}, "Usage: cairnctl config check|apply", "cairnctl"},
        {{cairnctl, "config", "check"}, "Usage: cairnctl config check", "cairnctl"},
        {{cairnctl, "config", "apply"}, "Usage: cairnctl config apply", "cairnctl"},
        {{cairnctl, "config", "import"}, "Usage: cairnctl config import", "cairnctl"},
        {{CAIRN_UPDATED_BINARY}, "Usage: cairn-updated", "cairn-updated"},
        {{firewall}, "Usage: cairn-firewall COMMAND", "cairn-firewall"},
        {{firewall, "apply"}, "Usage: cairn-firewall apply", "cairn-firewall"},
        {{firewall, "check"}, "Usage: cairn-firewall check", "cairn-firewall"},
        {{firewall, "status"}, "Usage: cairn-firewall status", "cairn-firewall"},
        {{firewall, "unblock"}, "Usage: cairn-firewall unblock", "cairn-firewall"},
        {{CAIRN_DPS_BINARY}, "Usage: cairn-dps", "cairn-dps"},
        {{CAIRN_PROVISIOND_BINARY}, "Usage: cairn-provisiond", "cairn-provisiond"},
        {{CAIRN_ATTESTD_BINARY}, "Usage: cairn-attestd", "cairn-attestd"},
    };
}

}  // namespace

TEST(Help, EveryProgramAndSubcommandPrintsItsOwnUsage) {
    const std::string cairn = CAIRN_BINARY, cairnctl = CAIRNCTL_BINARY, firewall = CAIRN_FIREWALL_BINARY;
    test::Scratch s;
    for (const Case& c : cases()) {
        for (const char* help : {"--help", "-h"}) {
            std::vector<std::string> argv = c.argv;
            argv.push_back(help);
            SCOPED_TRACE(shown(argv));
            RunOptions o;
            o.cwd = s.path();
            RunResult r = run(argv, o);
            EXPECT_EQ(r.exit_code, 0) << r.err;
            EXPECT_TRUE(has_line_starting(r.out, c.usage)) << r.out;
            EXPECT_TRUE(describes(r.out)) << "the usage does not say what the command does:\n" << r.out;
            EXPECT_EQ(r.err, "");
        }
    }
    // Help comes before any check of the rest of the command line, and never runs the command.
    RunResult r = run({cairn, "build", "--help"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    r = run({cairnctl, "provision", "tpm-info", "--config", (s / "none.toml").string(), "--help"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.find("Gathering"), std::string::npos) << r.out;
    // An unknown subcommand is still a usage error.
    EXPECT_EQ(run({firewall, "frobnicate", "--help"}).exit_code, 2);
    EXPECT_EQ(run({cairnctl, "attest", "frobnicate", "--help"}).exit_code, 2);
}

TEST(Help, VersionFromEveryProgramAndSubcommand) {
    test::Scratch s;
    for (const Case& c : cases()) {
        std::vector<std::string> argv = c.argv;
        argv.push_back("--version");
        SCOPED_TRACE(shown(argv));
        RunOptions o;
        o.cwd = s.path();
        RunResult r = run(argv, o);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(r.out, c.program + " " + CAIRN_VERSION + "\n");
        EXPECT_EQ(r.err, "");
    }
    // --help wins over --version, wherever they stand.
    RunResult r = run({CAIRNCTL_BINARY, "update", "status", "--version", "--help"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(has_line_starting(r.out, "Usage: cairnctl update status")) << r.out;
}

TEST(Help, HelpCommandShowsTheSameUsageAsTheOption) {
    const std::string cairn = CAIRN_BINARY, cairnctl = CAIRNCTL_BINARY;
    const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> same = {
        {{cairn, "help"}, {cairn, "--help"}},
        {{cairn, "help", "build"}, {cairn, "build", "--help"}},
        {{cairn, "help", "inspect"}, {cairn, "inspect", "--help"}},
        {{cairnctl, "help"}, {cairnctl, "--help"}},
        {{cairnctl, "help", "update"}, {cairnctl, "update", "--help"}},
        {{cairnctl, "help", "update", "install"}, {cairnctl, "update", "install", "--help"}},
        {{cairnctl, "help", "config", "apply"}, {cairnctl, "config", "apply", "--help"}},
        {{cairnctl, "help", "provision", "status"}, {cairnctl, "provision", "status", "--help"}},
        {{cairnctl, "help", "attest", "now"}, {cairnctl, "attest", "now", "--help"}},
    };
    for (const auto& [asked, option] : same) {
        SCOPED_TRACE(shown(asked));
        RunResult a = run(asked), b = run(option);
        EXPECT_EQ(a.exit_code, 0) << a.err;
        EXPECT_EQ(a.out, b.out);
        EXPECT_NE(a.out, "");
    }
    RunResult r = run({cairnctl, "help", "frobnicate"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("unknown area 'frobnicate'"), std::string::npos) << r.err;
    r = run({cairn, "help", "frobnicate"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos) << r.err;
}
