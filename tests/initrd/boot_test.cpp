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

TEST(Cmdline, ReadsTheSlotAndRootHash) {
    BootOptions o = parse_cmdline("console=ttyS0 cairn.slot=b cairn.roothash=" + hash + " cairn.rootfs=ext4 panic=5 cairn.log=/logs\n");
    EXPECT_EQ(o.slot, "b");
    EXPECT_EQ(o.root_hash.size(), 32u);
    EXPECT_EQ(o.root_hash[0], 0xf8);
    EXPECT_EQ(o.rootfs, "ext4");
    EXPECT_EQ(o.log_mount, "/logs");
    EXPECT_EQ(o.init, "/sbin/init");
    EXPECT_FALSE(o.debug_shell);
    EXPECT_TRUE(parse_cmdline("cairn.slot=a cairn.roothash=" + hash + " cairn.debug=shell").debug_shell);
}

TEST(Cmdline, MissingOrBadParametersAreNamed) {
    EXPECT_NE(error_of("cairn.roothash=" + hash).find("cairn.slot is missing"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a").find("cairn.roothash is missing"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=abc").find("64 hex digits"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=" + std::string(64, 'z')).find("not hexadecimal"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a/../b cairn.roothash=" + hash).find("not a slot name"), std::string::npos);
    EXPECT_NE(error_of("cairn.slot=a cairn.roothash=" + hash + " cairn.rootfs=btrfs").find("erofs or ext4"), std::string::npos);
    EXPECT_EQ(error_of("cairn.slot=a cairn.verity=off"), "") << "an image without verity needs no root hash";
}

TEST(Sysfs, FindsPartitionsByLabel) {
    Scratch sys;
    test::write_text(sys / "vda/uevent", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n");
    test::write_text(sys / "vda2/uevent", "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=root_a\n");
    test::write_text(sys / "vda3/uevent", "DEVNAME=vda3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=root_a_verity\n");
    EXPECT_EQ(find_partition(sys.path(), "root_a"), std::filesystem::path("/dev/vda2"));
    EXPECT_EQ(find_partition(sys.path(), "root_a_verity"), std::filesystem::path("/dev/vda3"));
    EXPECT_FALSE(find_partition(sys.path(), "root_b"));
    EXPECT_FALSE(find_partition(sys / "missing", "root_a"));
}

TEST(Sysfs, PartitionBelongsToItsDisk) {
    Scratch sys;
    // As in sysfs: /sys/class/block/vda8 -> ../../devices/.../vda/vda8
    test::write_text(sys / "devices/vda/vda8/partition", "8\n");
    std::filesystem::create_directories(sys / "class");
    std::filesystem::create_directory_symlink(sys / "devices/vda/vda8", sys / "class/vda8");
    PartitionOf p = partition_of(sys / "class", "/dev/vda8");
    EXPECT_EQ(p.disk, std::filesystem::path("/dev/vda"));
    EXPECT_EQ(p.number, 8);
}

TEST(Ext4, DetectsTheSuperblock) {
    Scratch dir;
    test::write_text(dir / "blank", std::string(4096, '\0'));
    EXPECT_FALSE(has_ext4(dir / "blank"));
    test::write_text(dir / "fs", "");
    std::filesystem::resize_file(dir / "fs", 8 << 20);
    run_checked({"mkfs.ext4", "-q", "-F", (dir / "fs").string()});
    EXPECT_TRUE(has_ext4(dir / "fs"));
}
