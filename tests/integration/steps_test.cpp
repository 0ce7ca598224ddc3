// Every kind of rootfs step in one build, checked inside the filesystem with fsck.erofs --extract.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using cairn::test::Scratch;
namespace fs = std::filesystem;

TEST(Steps, AllStepKindsLandInTheFilesystem) {
    Scratch dir;
    test::write_text(dir / "overlay/etc/motd", "welcome\n");
    test::write_text(dir / "overlay/usr/share/doc/x", "doc\n");
    test::write_text(dir / "tarsrc/opt/tool/run", "#!/bin/sh\n");
    run_checked({"tar", "--owner=7", "--group=8", "--numeric-owner", "-C", (dir / "tarsrc").string(), "-czf", (dir / "t.tar.gz").string(), "."});
    test::write_text(dir / "r.toml", R"(name = "steps"
version = "1"
compatible = "cairn-steps"

[disk]
size = "auto"
partitions = [
  { role = "root", size = "64MiB" },
  { role = "root-verity" },
]

[kernel]
enabled = false

[[rootfs.add]]
type = "directory"
path = "/usr/bin"
[[rootfs.add]]
type = "symlink"
path = "/bin"
target = "usr/bin"
[[rootfs.add]]
type = "tree"
source = "overlay"
[[rootfs.add]]
type = "tar"
source = "t.tar.gz"
[[rootfs.add]]
type = "host-exec"
source = "/usr/bin/ls"
path = "/bin/ls"
[[rootfs.add]]
type = "host-file"
source = "/etc/hostname"
path = "/etc/build-host"
mode = "0600"
owner = 12
[[rootfs.add]]
type = "file"
path = "/etc/motd"
content = "replaced\n"
)");
    RunResult r = run({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", (dir / "out").string(), "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    run_checked({"fsck.erofs", "--extract=" + (dir / "x").string(), (dir / "out/rootfs.img").string()});
    const fs::path x = dir / "x";
    EXPECT_EQ(read_file(x / "etc/motd"), "replaced\n") << "a later step replaces an earlier one";
    EXPECT_EQ(read_file(x / "usr/share/doc/x"), "doc\n");
    EXPECT_TRUE(fs::is_symlink(x / "bin"));
    EXPECT_TRUE(fs::is_regular_file(x / "usr/bin/ls")) << "host-exec went through the /bin link";
    EXPECT_TRUE(fs::exists(x / "lib64/ld-linux-x86-64.so.2") || fs::is_symlink(x / "lib64/ld-linux-x86-64.so.2"));
    bool libc = fs::exists(x / "lib/x86_64-linux-gnu/libc.so.6") || fs::exists(x / "usr/lib/x86_64-linux-gnu/libc.so.6");
    EXPECT_TRUE(libc);
    EXPECT_TRUE(fs::exists(x / "opt/tool/run"));
    // Owners and modes as stated, read with dump.erofs (extraction as root would apply them too).
    std::string d = run_checked({"dump.erofs", "--path=/etc/build-host", (dir / "out/rootfs.img").string()});
    EXPECT_NE(d.find("Uid: 12 "), std::string::npos) << d;
    EXPECT_NE(d.find("Access: 0600"), std::string::npos) << d;
    d = run_checked({"dump.erofs", "--path=/opt/tool/run", (dir / "out/rootfs.img").string()});
    EXPECT_NE(d.find("Uid: 7 "), std::string::npos) << d;
    EXPECT_NE(d.find("Gid: 8 "), std::string::npos) << d;
    // The copied ls runs against the libraries that came with it.
    if (test::is_root()) {
        RunResult ls = run({"chroot", x.string(), "/bin/ls", "/"});
        EXPECT_EQ(ls.exit_code, 0) << ls.err;
        EXPECT_NE(ls.out.find("etc"), std::string::npos);
    }
    auto manifest = nlohmann::json::parse(read_file(dir / "out/manifest.json"));
    EXPECT_EQ(manifest["partitions"].size(), 4u);
    EXPECT_EQ(run({test::cairn_binary().string(), "inspect", (dir / "out/disk.raw").string()}).exit_code, 0);
}

// /etc/os-release is made from the recipe's name and the version the image is built at.
TEST(Steps, OsReleaseFollowsTheImageVersion) {
    Scratch dir;
    test::write_text(dir / "r.toml", R"(name = "cairn-kiosk"
version = "1.0.0"

[os_release]
NAME = "Kiosk"
HOME_URL = "https://example.org/kiosk"

[disk]
size = "auto"
partitions = [
  { role = "root", size = "16MiB" },
  { role = "root-verity" },
]

[kernel]
enabled = false
)");
    RunResult r = run({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", (dir / "out").string(), "--quiet",
                       "--image-version", "2.0.0"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "") << "a recipe without `compatible` gets one from its name, without a warning";
    run_checked({"fsck.erofs", "--extract=" + (dir / "x").string(), (dir / "out/rootfs.img").string()});
    EXPECT_EQ(read_file(dir / "x/etc/os-release"),
              "NAME=\"Kiosk\"\nID=cairn-kiosk\nVERSION_ID=2.0.0\nPRETTY_NAME=\"Kiosk 2.0.0\"\nIMAGE_ID=cairn-kiosk\nIMAGE_VERSION=2.0.0\n"
              "HOME_URL=\"https://example.org/kiosk\"\n");
    auto manifest = nlohmann::json::parse(read_file(dir / "out/manifest.json"));
    EXPECT_EQ(manifest["recipe"]["version"], "2.0.0");
    EXPECT_EQ(manifest["recipe"]["compatible"], "cairn-kiosk-x86_64");
}
