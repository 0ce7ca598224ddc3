// `cairn`'s command line (imager/main.cpp): what it says before and around the work of build,
// bundle and inspect. Needs no built image: the inputs are made here.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/hash.hpp"
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

// --format: the other disk formats land beside disk.raw and in the manifest; a later build that
// does not ask for them removes them; an unknown name is a usage error naming the valid ones.
TEST(CairnMain, BuildWritesTheDiskFormatsAskedFor) {
    if (!find_program("qemu-img")) GTEST_SKIP() << "qemu-img (package qemu-utils) is not installed";
    Scratch s;
    test::write_text(s / "r.toml", R"(name = "t"
version = "1.0.0"
compatible = "cairn-test"
seed = "disk-formats"
[disk]
size = "auto"
partitions = [{ role = "root", size = "16MiB" }, { role = "root-verity" }]
[kernel]
enabled = false
)");
    const fs::path out = s / "out";
    RunResult r = run({CAIRN_BINARY, "build", (s / "r.toml").string(), "--quiet", "-o", out.string(), "--format", "qcow2", "--format", "vmdk"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json formats = nlohmann::json::parse(read_file(out / "manifest.json"))["disk"]["formats"];
    ASSERT_EQ(formats.size(), 2u) << formats.dump(2);
    for (const auto& [i, name] : {std::pair{0, "qcow2"}, std::pair{1, "vmdk"}}) {
        const fs::path file = out / (std::string("disk.") + name);
        EXPECT_EQ(formats[i]["file"], file.filename().string());
        ASSERT_TRUE(fs::is_regular_file(file)) << file;
        EXPECT_EQ(formats[i]["sha256"], sha256_file_hex(file));
        EXPECT_EQ(run({"qemu-img", "check", "-f", name, file.string()}).exit_code, 0) << file;
    }
    EXPECT_FALSE(fs::exists(out / "disk.vhdx"));
    for (const auto& e : fs::directory_iterator(out)) EXPECT_FALSE(e.path().filename().string().starts_with(".cairn-build")) << e.path();

    r = run({CAIRN_BINARY, "build", (s / "r.toml").string(), "--quiet", "-o", out.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(read_file(out / "manifest.json"))["disk"]["formats"], nlohmann::json::array());
    EXPECT_FALSE(fs::exists(out / "disk.qcow2")) << "a disk.qcow2 that does not match disk.raw was left";
    EXPECT_FALSE(fs::exists(out / "disk.vmdk"));

    r = run({CAIRN_BINARY, "build", (s / "r.toml").string(), "--quiet", "-o", (s / "other").string(), "--format", "raw,vdi"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--format: 'vdi' is not a disk format (valid: raw, qcow2, vhdx, vmdk)"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(s / "other"));
}
