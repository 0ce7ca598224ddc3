// The initrd: cairn-init as /init, the kernel modules it loads (with their dependencies, in load
// order), the tools it runs on first boot (mkfs.ext4, resize2fs, sfdisk) with their libraries,
// and busybox only in debug images. Assembled in a staging tree, written as a newc cpio.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace cairn::imager {

// Modules every Cairn initrd loads (virtio disk, dm-verity, the root filesystems, overlayfs).
std::vector<std::string> default_initrd_modules();

// The .ko files (paths relative to modules_dir) for `names` and everything they depend on, in an
// order that loads dependencies first, from modules_dir/modules.dep. Modules built into the
// kernel (modules.builtin) are skipped. Throws Error "<what>: no kernel module 'x'" for unknowns.
std::vector<std::string> module_closure(const std::filesystem::path& modules_dir, const std::vector<std::string>& names,
                                        const std::string& what);

struct InitrdSpec {
    std::filesystem::path cairn_init;        // host path of the cairn-init program
    std::filesystem::path root_tree;         // the root tree's staging directory (modules and busybox come from it)
    std::string kernel_release;              // lib/modules/<release>
    std::vector<std::string> modules;        // module names
    bool debug_shell = false;                // add busybox (from the root tree) for cairn.debug=shell
    std::string where;                       // recipe key, for errors
};

// Builds the initrd into `out`; `work` is a scratch directory. Returns the number of modules.
size_t build_initrd(const InitrdSpec& spec, const std::filesystem::path& out, const std::filesystem::path& work, int64_t epoch);

// A program Cairn builds for the image (cairn-init, cairn-updated, cairnctl): $CAIRN_INIT-style
// environment variable (the name upper-cased, '-' as '_') if set, else beside the running `cairn`
// in the build tree (../<build_folder>/<name>) or an installation (../lib/cairn/<name>).
std::filesystem::path find_cairn_program(const std::string& name, const std::string& build_folder);

}  // namespace cairn::imager
