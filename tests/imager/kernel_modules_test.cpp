// Reading what an image's kernel offers from depmod's indexes.
#include "imager/kernel_modules.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

TEST(KernelModules, NamesLoadableBuiltInAndAliasedModules) {
    Scratch dir;
    test::write_text(dir / "modules.dep",
                     "kernel/fs/fuse/fuse.ko.xz:\nkernel/fs/fuse/cuse.ko.xz: kernel/fs/fuse/fuse.ko.xz\n"
                     "kernel/drivers/md/dm-mod.ko:\n");
    test::write_text(dir / "modules.builtin", "kernel/fs/configfs/configfs.ko\n");
    test::write_text(dir / "modules.alias", "# Aliases extracted from modules themselves.\nalias fs-fuse fuse\nalias devname:net/tun tun\n"
                                            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n");
    const KernelModules k = read_kernel_modules(dir.path(), "kernel");
    EXPECT_TRUE(k.has("fuse"));
    EXPECT_TRUE(k.has("dm_mod"));
    EXPECT_TRUE(k.has("dm-mod"));  // '-' and '_' are the same to modprobe
    EXPECT_TRUE(k.has("configfs"));
    EXPECT_TRUE(k.has("fs-fuse"));
    EXPECT_TRUE(k.has("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"));  // a pattern alias
    EXPECT_FALSE(k.has("drm"));
    EXPECT_FALSE(k.has("efi_pstore"));
    ASSERT_TRUE(k.loadable.count("cuse"));
    EXPECT_EQ(k.loadable.at("cuse").depends, std::vector<std::string>{"kernel/fs/fuse/fuse.ko.xz"});
}

TEST(KernelModules, AKernelWithoutIndexesIsAnError) {
    Scratch dir;
    try {
        read_kernel_modules(dir.path(), "recipe.toml: kernel");
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("recipe.toml: kernel: "), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("modules.dep is missing"), std::string::npos) << e.what();
    }
}

// The lines kmod-static-nodes.service writes at boot (`kmod static-nodes --format=tmpfiles`, kmod 30).
TEST(KernelModules, StaticNodesAreTheTmpfilesLinesKmodWrites) {
    EXPECT_EQ(static_nodes_tmpfiles("# Device nodes to trigger on-demand module loading.\n"
                                    "fuse fuse c10:229\ntun net/tun c10:200\ndm_mod mapper/control c10:236\n"
                                    "broken line\nodd odd x1:2\nloop loop b7:0\nevil ../etc/shadow c1:1\nworse /etc/x c1:1\n"),
              "c! /dev/fuse 0600 - - - 10:229\n"
              "d /dev/net 0755 - - -\nc! /dev/net/tun 0600 - - - 10:200\n"
              "d /dev/mapper 0755 - - -\nc! /dev/mapper/control 0600 - - - 10:236\n"
              "b! /dev/loop 0600 - - - 7:0\n");
    EXPECT_EQ(static_nodes_tmpfiles(""), "");
}
