#include "initrd/boot.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::initrd;
using cairn::test::Scratch;

namespace {
const std::string hash = "f84a7dde8d3dacaf547ca32c6ab53d64d32f3eaffbd7de23af14055c4a4d1dd2";

std::string error_of(const std::string& cmdline) {
    try {
        parse_cmdline(cmdline);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}
}  // namespace

const std::string disk = " cairn.disk=3f1c2a5e-8f1b-4c6d-9e0a-5b4f7c1d2e93";

TEST(Cmdline, ReadsTheSlotDiskAndRootHash) {
    BootOptions o = parse_cmdline("console=ttyS0 cairn.slot=b cairn.roothash=" + hash + disk + " cairn.rootfs=ext4 panic=5 cairn.log=/logs\n");
    EXPECT_EQ(o.slot, 'b');
    ASSERT_TRUE(o.disk);
    EXPECT_EQ(o.disk->str(), "3f1c2a5e-8f1b-4c6d-9e0a-5b4f7c1d2e93");
    EXPECT_EQ(o.root_hash.size(), 32u);
    EXPECT_EQ(o.root_hash[0], 0xf8);
    EXPECT_EQ(o.rootfs, "ext4");
    EXPECT_EQ(o.log_mount, "/logs");
    EXPECT_EQ(o.init, "/sbin/init");
    EXPECT_FALSE(o.debug_shell);
    EXPECT_TRUE(parse_cmdline("cairn.slot=a cairn.roothash=" + hash + disk + " cairn.debug=shell").debug_shell);
}

TEST(Cmdline, MissingOrBadParametersAreNamed) {
    EXPECT_NE(error_of("cairn.roothash=" + hash + disk).find("cairn.slot is missing"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a" + disk).find("cairn.roothash is missing"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=" + hash).find("cairn.disk is missing"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=" + hash + " cairn.disk=vda").find("cairn.disk"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=abc" + disk).find("64 hex digits"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=" + std::string(64, 'z') + disk).find("not hexadecimal"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a/../b cairn.roothash=" + hash + disk).find("not a slot name"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=c cairn.roothash=" + hash + disk).find("not a slot name"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=" + hash + disk + " cairn.rootfs=btrfs").find("erofs or ext4"), std::string::npos);
    EXPECT_EQ(error_of("cairn.slot=a cairn.verity=off" + disk), "") << "an image without verity needs no root hash";
}

TEST(LogMount, CoversNothingVerifiedOrOwnedBySomeoneElse) {
    for (const char* bad : {"/", "/usr", "/usr/share/log", "/etc", "/etc/cairn", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/proc",
                            "/sys", "/dev", "/run", "/tmp", "/home", "/root", "/var", "/var/.cairn", "/var/.cairn/overlays",
                            "/var/lib", "/var/lib/cairn", "var/log", "", "/var/log/", "/var//log", "/var/../etc", "/var/./log", "/logs/.."}) {
        EXPECT_TRUE(log_mount_problem(bad)) << bad;
        EXPECT_NE(error_of("cairn.slot=a cairn.roothash=" + hash + disk + " cairn.log=" + bad).find("cairn.log"), std::string::npos) << bad;
    }
    for (const char* good : {"/var/log", "/logs", "/var/log/cairn", "/usrlogs", "/variable"}) EXPECT_FALSE(log_mount_problem(good)) << good;
}
