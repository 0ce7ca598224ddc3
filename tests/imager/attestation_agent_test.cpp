// What [attestation] puts into an image for the device's agent (imager/attestation_agent.hpp).
#include "imager/attestation_agent.hpp"

#include <sys/stat.h>

#include <regex>

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using namespace cairn::test;
namespace fs = std::filesystem;

namespace {

Recipe attestation_recipe(const fs::path& config = {}) {
    Recipe r;
    r.attestation.enabled = true;
    r.attestation.where = "r.toml: [attestation]";
    r.attestation.config = config;
    return r;
}

bool has_regular_file(const Tree& t, const std::string& path) {
    auto m = t.meta(path);
    return m && S_ISREG(m->mode) && fs::is_regular_file(t.host(path));
}

}  // namespace

TEST(AttestationAgentFiles, TheAgentItsCommandAndTheTpmsDeviceTctiGoIn) {
    Scratch dir;
    Tree t(dir / "root");
    add_attestation_agent_files(t, attestation_recipe());
    for (const char* path : {attestation_paths::agent, attestation_paths::cli, attestation_paths::run, "/usr/bin/cairnctl"})
        EXPECT_TRUE(has_regular_file(t, path)) << path;
    EXPECT_EQ(t.meta(attestation_paths::agent)->mode & 07777, 0755u);
    // libtss2-tctildr opens the device TCTI with dlopen: it must be there though nothing links it.
    bool tcti = false;
    for (const auto& entry : fs::recursive_directory_iterator(dir / "root"))
        if (entry.path().filename() == "libtss2-tcti-device.so.0") tcti = true;
    EXPECT_TRUE(tcti) << "no libtss2-tcti-device.so.0 in the tree";
    EXPECT_FALSE(t.meta(attestation_paths::config)) << "no config given: the device waits for one";
}

TEST(AttestationAgentFiles, AGivenConfigIsInstalledPrivateAndABrokenOneNamesItsLine) {
    Scratch dir;
    write_text(dir / "attestation.toml", "verifier_url = \"https://verifier.example\"\ndevice_id = \"dev1\"\n");
    Tree t(dir / "root");
    add_attestation_agent_files(t, attestation_recipe(dir / "attestation.toml"));
    ASSERT_TRUE(has_regular_file(t, attestation_paths::config));
    EXPECT_EQ(t.meta(attestation_paths::config)->mode & 07777, 0600u);
    EXPECT_EQ(read_file(t.host(attestation_paths::config)), read_file(dir / "attestation.toml"));

    write_text(dir / "broken.toml", "verifier_url = \"https://verifier.example\"\ndevice_id = \n");
    Tree t2(dir / "root2");
    try {
        add_attestation_agent_files(t2, attestation_recipe(dir / "broken.toml"));
        FAIL() << "a config that is not TOML was taken";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find((dir / "broken.toml").string() + ":2"), std::string::npos) << e.what();
    }
}

// The start script waits for the config and starts the agent again when it exits, never giving up.
TEST(AttestationAgentFiles, TheStartScriptWaitsForTheConfigAndNeverGivesUp) {
    const std::string s = attestd_run_script();
    EXPECT_EQ(s.rfind("#!/bin/sh\n", 0), 0u);
    EXPECT_NE(s.find("config=/etc/cairn/attestation.toml"), std::string::npos);
    EXPECT_NE(s.find("/usr/sbin/cairn-attestd --config $config"), std::string::npos);
    EXPECT_FALSE(std::regex_search(s, std::regex(R"((^|[\s;])(exit|exec)\s)"))) << "the script must not end: " << s;
    EXPECT_NE(s.find("modprobe -q -a vfat"), std::string::npos);
    Scratch dir;
    write_text(dir / "run", s);
    RunResult r = run({"sh", "-n", (dir / "run").string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
}
