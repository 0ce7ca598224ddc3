// Every program and subcommand answers -h and --help with its own usage on standard output and
// exit status 0, touching nothing (cairn-init, which runs only as PID 1 in the initrd, is exempt).
// It lives with cairnctl's tests, not under integration/, because it needs no built image.
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

}  // namespace

TEST(Help, EveryProgramAndSubcommandPrintsItsOwnUsage) {
    const std::string cairn = CAIRN_BINARY, cairnctl = CAIRNCTL_BINARY, firewall = CAIRN_FIREWALL_BINARY;
    const std::string provision = (fs::path(CAIRNCTL_BINARY).parent_path() / "cairnctl-provision").string();
    const std::vector<Case> cases = {
        {{cairn}, "Usage: cairn COMMAND"},
        {{cairn, "build"}, "Usage: cairn build RECIPE"},
        {{cairn, "bundle"}, "Usage: cairn bundle DIR"},
        {{cairn, "inspect"}, "Usage: cairn inspect IMAGE"},
        {{cairn, "qemu"}, "Usage: cairn qemu IMAGE"},
        {{cairnctl}, "Usage: cairnctl AREA"},
        {{cairnctl, "update"}, "Usage: cairnctl update COMMAND"},
        {{cairnctl, "update", "install"}, "Usage: cairnctl update install BUNDLE"},
        {{cairnctl, "update", "status"}, "Usage: cairnctl update status"},
        {{cairnctl, "update", "mark-good"}, "Usage: cairnctl update mark-good"},
        {{cairnctl, "update", "mark-bad"}, "Usage: cairnctl update mark-bad SLOT"},
        {{cairnctl, "update", "mark-active"}, "Usage: cairnctl update mark-active SLOT"},
        {{cairnctl, "provision"}, "usage: cairnctl provision status|reprovision|check|tpm-info"},
        {{cairnctl, "provision", "status"}, "usage: cairnctl provision status"},
        {{cairnctl, "provision", "reprovision"}, "usage: cairnctl provision reprovision"},
        {{cairnctl, "provision", "check"}, "usage: cairnctl provision check"},
        {{cairnctl, "provision", "tpm-info"}, "usage: cairnctl provision tpm-info"},
        {{provision, "tpm-info"}, "usage: cairnctl provision tpm-info"},
        {{cairnctl, "config"}, "usage: cairnctl config check|apply"},
        {{cairnctl, "config", "check"}, "usage: cairnctl config check"},
        {{cairnctl, "config", "apply"}, "usage: cairnctl config apply"},
        {{cairnctl, "config", "import"}, "usage: cairnctl config import"},
        {{CAIRN_UPDATED_BINARY}, "Usage: cairn-updated"},
        {{firewall}, "Usage: cairn-firewall COMMAND"},
        {{firewall, "apply"}, "Usage: cairn-firewall apply"},
        {{firewall, "check"}, "Usage: cairn-firewall check"},
        {{firewall, "status"}, "Usage: cairn-firewall status"},
        {{firewall, "unblock"}, "Usage: cairn-firewall unblock"},
        {{CAIRN_DPS_BINARY}, "usage: cairn-dps"},
        {{CAIRN_PROVISIOND_BINARY}, "usage: cairn-provisiond"},
    };
    test::Scratch s;
    for (const Case& c : cases) {
        for (const char* help : {"--help", "-h"}) {
            std::vector<std::string> argv = c.argv;
            argv.push_back(help);
            std::string shown = fs::path(argv[0]).filename().string();
            for (size_t i = 1; i < argv.size(); ++i) shown += " " + argv[i];
            SCOPED_TRACE(shown);
            RunOptions o;
            o.cwd = s.path();
            RunResult r = run(argv, o);
            EXPECT_EQ(r.exit_code, 0) << r.err;
            EXPECT_TRUE(has_line_starting(r.out, c.usage)) << r.out;
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
}
