// cairnctl's front door: the areas it runs itself, and `provision`, which it hands to cairnctl-provision.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/subprocess.hpp"
#include "imager/elf.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using cairn::test::Scratch;
namespace fs = std::filesystem;

TEST(Cairnctl, ProvisionRunsCairnctlProvisionWithTheSameWordsAndExitCode) {
    RunResult help = run({CAIRNCTL_BINARY, "provision", "--help"});
    EXPECT_EQ(help.exit_code, 0) << help.err;
    EXPECT_NE(help.out.find("Usage: cairnctl provision status|reprovision|check|tpm-info"), std::string::npos) << help.out;

    RunResult bad = run({CAIRNCTL_BINARY, "provision", "frobnicate"});
    EXPECT_EQ(bad.exit_code, 2);
    EXPECT_NE(bad.err.find("Usage: cairnctl provision"), std::string::npos) << bad.err;

    Scratch s;
    RunResult missing = run({CAIRNCTL_BINARY, "provision", "status", "--config", (s / "none.toml").string(), "--state-dir",
                             s.path().string()});
    // Not configured is an answer, not an error: what is missing and how to configure it, exit 3.
    EXPECT_EQ(missing.exit_code, 3) << missing.err;
    EXPECT_EQ(missing.err, "");
    EXPECT_NE(missing.out.find("Provisioning: not configured (" + (s / "none.toml").string() + " does not exist)"), std::string::npos)
        << missing.out;
    EXPECT_NE(missing.out.find("cairnctl config apply"), std::string::npos) << missing.out;
    EXPECT_NE(missing.out.find("cairnctl config import"), std::string::npos) << missing.out;
    RunResult json = run({CAIRNCTL_BINARY, "provision", "status", "--json", "--config", (s / "none.toml").string(), "--state-dir",
                          s.path().string()});
    EXPECT_EQ(json.exit_code, 3) << json.err;
    EXPECT_NE(json.out.find("\"state\": \"Not configured\""), std::string::npos) << json.out;
    // A configuration that is there but wrong is still an error naming the file.
    test::write_text(s / "bad.toml", "[provisioning]\nsourc = 1\n");
    RunResult bad_config = run({CAIRNCTL_BINARY, "provision", "status", "--config", (s / "bad.toml").string(), "--state-dir",
                                s.path().string()});
    EXPECT_EQ(bad_config.exit_code, 1);
    EXPECT_NE(bad_config.err.find("cairnctl provision: " + (s / "bad.toml").string()), std::string::npos) << bad_config.err;
}

TEST(Cairnctl, WithoutCairnctlProvisionSaysWhereItLooked) {
    Scratch s;
    fs::copy_file(CAIRNCTL_BINARY, s / "cairnctl");
    fs::permissions(s / "cairnctl", fs::perms::owner_all);
    RunResult r = run({(s / "cairnctl").string(), "provision", "status"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("cairnctl: provision: cairnctl-provision is not in " + s.path().string()), std::string::npos) << r.err;

    RunResult attest = run({(s / "cairnctl").string(), "attest", "status"});
    EXPECT_EQ(attest.exit_code, 2);
    EXPECT_NE(attest.err.find("cairnctl: attest: cairnctl-attest is not in " + s.path().string()), std::string::npos) << attest.err;

    RunResult update = run({(s / "cairnctl").string(), "update", "--help"});  // the rest still works alone
    EXPECT_EQ(update.exit_code, 0) << update.err;
}

// `cairnctl update` starts without libcurl, libssl or the TPM stack (most of its cold start before),
// and an image with updates but no provisioning carries none of them.
TEST(Cairnctl, NeedsNeitherTheNetworkNorTheTpmLibraries) {
    const elf::Info info = elf::read_info(CAIRNCTL_BINARY);
    ASSERT_TRUE(info.is_elf);
    for (const std::string& lib : info.needed)
        for (const char* heavy : {"libcurl", "libssl", "libtss2", "libcrypto"})
            EXPECT_EQ(lib.rfind(heavy, 0), std::string::npos) << "cairnctl needs " << lib;
    bool curl = false;
    for (const std::string& lib : elf::read_info(fs::path(CAIRNCTL_BINARY).parent_path() / "cairnctl-provision").needed)
        curl = curl || lib.rfind("libcurl", 0) == 0;
    EXPECT_TRUE(curl) << "cairnctl-provision is the one that talks to DPS";
    bool tss = false;
    for (const std::string& lib : elf::read_info(fs::path(CAIRNCTL_BINARY).parent_path() / "cairnctl-attest").needed)
        tss = tss || lib.rfind("libtss2-esys", 0) == 0;
    EXPECT_TRUE(tss) << "cairnctl-attest is the one that uses the TPM";
}
