// `cairn`'s command line (imager/main.cpp): what it says before and around the work of build,
// bundle and inspect. Needs no built image: the inputs are made here.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using cairn::test::Scratch;
namespace fs = std::filesystem;

// Every debug build says, on one line of standard error (also with --quiet), that it must not ship.
TEST(CairnMain, ADebugBuildWarns) {
    Scratch s;
    test::write_text(s / "r.toml", "name = \"t\"\nversion = \"1\"\ncompatible = \"cairn-test\"\n[kernel]\nenabled = false\n");
    RunResult r = run({CAIRN_BINARY, "build", (s / "r.toml").string(), "--debug", "--quiet", "-o", (s / "out").string()});
    EXPECT_NE(r.err.find("cairn: warning: --debug: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("never ship it"), std::string::npos) << r.err;
    r = run({CAIRN_BINARY, "build", (s / "r.toml").string(), "--quiet", "-o", (s / "out").string()});
    EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
}

TEST(CairnMain, BundleTakesAllowDebug) {
    Scratch s;
    // The option is known (the error is about the missing build, not the option).
    RunResult r = run({CAIRN_BINARY, "bundle", (s / "none").string(), "-o", (s / "b.cairn").string(), "--key", "k", "--cert", "c",
                       "--allow-debug"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err.find("unknown option"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("no manifest.json"), std::string::npos) << r.err;
    r = run({CAIRN_BINARY, "bundle", "--help"});
    EXPECT_NE(r.out.find("--allow-debug"), std::string::npos) << r.out;
}

// `cairn inspect` says what the path really is, and shows bundles.
TEST(CairnMain, InspectSaysWhatItWasGiven) {
    Scratch s;
    test::write_text(s / "empty.raw", "");
    RunResult r = run({CAIRN_BINARY, "inspect", (s / "empty.raw").string()});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err, "cairn: " + (s / "empty.raw").string() + ": an empty file (0 bytes), not a disk image\n");
    r = run({CAIRN_BINARY, "inspect", s.path().string()});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err, "cairn: " + s.path().string() + ": is a directory, not an image file\n");

    fs::create_directories(s / "fixture");
    test::UpdateFixture f(s / "fixture");
    const fs::path bundle = f.bundle("2.0");
    r = run({CAIRN_BINARY, "inspect", bundle.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(bundle.string() + ": bundle: cairn-test 2.0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("bundle verified"), std::string::npos) << r.out;
    r = run({CAIRN_BINARY, "inspect", "--json", "--trust-anchor", f.trust_anchor.string(), bundle.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"trusted\": true"), std::string::npos) << r.out;
}
