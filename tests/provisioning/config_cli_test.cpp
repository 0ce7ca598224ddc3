#include "provisioning/config_cli.hpp"

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string good = "[provisioning]\nsource = \"dps\"\nid_scope = \"0ne00000001\"\n[provisioning.attestation]\n"
                         "method = \"symmetric_key\"\nregistration_id = \"device-1\"\nsymmetric_key = { value = \"a2V5LWJ5dGVz\" }\n";

struct Result {
    int code;
    std::string out, err;
};

Result config(std::vector<std::string> args) {
    std::ostringstream out, err;
    int code = config_command(args, out, err);
    return {code, out.str(), err.str()};
}

}  // namespace

TEST(ConfigCli, CheckNamesTheKeyAtFault) {
    test::Scratch dir;
    test::write_text(dir / "good.toml", good);
    test::write_text(dir / "bad.toml", "[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\n[provisioning.attestation]\nmethod = \"tpm\"\nregistraton_id = \"x\"\n");
    Result r = config({"check", "-c", (dir / "good.toml").string()});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("OK (source dps, method symmetric_key)"), std::string::npos) << r.out;
    r = config({"check", "-c", (dir / "bad.toml").string(), "--json"});
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("bad.toml:6: provisioning.attestation.registraton_id: unknown key"), std::string::npos) << r.err;
    EXPECT_FALSE(nlohmann::json::parse(r.out)["valid"].get<bool>());
    EXPECT_EQ(config({"frobnicate"}).code, 2);
    r = config({"check", "-c"});
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("cairnctl config: -c needs a value (see --help)"), std::string::npos) << r.err;
    r = config({"--help"});
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.out.find("cairnctl config check|apply"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("cairnctl config import"), std::string::npos) << r.out;
}

// A stand-in agent: a shell that counts the SIGHUPs it gets, as the image's provisiond-run does.
TEST(ConfigCli, ApplyInstallsAtomicallyAndSignalsTheAgentOrChangesNothing) {
    test::Scratch dir;
    const fs::path target = dir / "etc/config.toml", pid_file = dir / "provisiond.pid";
    test::write_text(dir / "new.toml", good);
    test::write_text(dir / "bad.toml", good + "unknown = 1\n");
    test::write_text(dir / "agent.sh", "trap 'echo hup >> " + (dir / "hups").string() + "' HUP\necho $$ > " + pid_file.string() +
                                           "\nwhile :; do sleep 0.05; done\n");
    RunOptions o;
    o.die_with_parent = true;
    Process agent({"sh", (dir / "agent.sh").string()}, dir / "agent.log", o);
    for (int i = 0; i < 200 && !fs::exists(pid_file); ++i) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(fs::exists(pid_file));
    const std::vector<std::string> paths = {"--target", target.string(), "--pid-file", pid_file.string()};

    // A bad file: nothing installed, the agent not disturbed.
    std::vector<std::string> args = {"apply", "-c", (dir / "bad.toml").string()};
    args.insert(args.end(), paths.begin(), paths.end());
    Result r = config(args);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("bad.toml:8: provisioning.attestation.unknown: unknown key"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("nothing applied"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(target));

    // A good one: installed (0600, no temporary left) and the agent told.
    args = {"apply", "-c", (dir / "new.toml").string(), "--json"};
    args.insert(args.end(), paths.begin(), paths.end());
    r = config(args);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(read_file(target), good);
    EXPECT_EQ(fs::status(target).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
    EXPECT_EQ(std::distance(fs::directory_iterator(target.parent_path()), fs::directory_iterator()), 1);
    EXPECT_EQ(nlohmann::json::parse(r.out)["agent_pid"], std::stoi(read_file(pid_file)));
    for (int i = 0; i < 200 && !fs::exists(dir / "hups"); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(read_file(dir / "hups"), "hup\n");

    // Applying the installed file itself: checked, the agent told again.
    args = {"apply"};
    args.insert(args.end(), paths.begin(), paths.end());
    EXPECT_EQ(config(args).code, 0);
    for (int i = 0; i < 200 && read_file(dir / "hups") != "hup\nhup\n"; ++i) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(read_file(dir / "hups"), "hup\nhup\n");

    // No agent: applied, and said so.
    agent.stop(1000);
    r = config(args);
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.out.find("no provisioning agent is running"), std::string::npos) << r.out;
}
