// What a systemd boot of the image loads and mounts every time, predicted from the tree and listed
// for cairn-init to do before systemd starts (initrd/early_boot.hpp: why, and how it stays best
// effort and leaves the administrator's settings to systemd and modprobe).
//
// The boot's units are the default target's and, recursively, what their .wants/.requires folders
// link and their Wants=, Requires=, BindsTo= and Upholds= lines name, unit files and drop-ins, as
// systemd builds the boot's transaction (a unit's conditions are checked only when it starts, so
// they do not prune what it pulls in). Masked units are left out. From them:
// - the modules: the NAME of each modprobe@NAME.service among them, the names modules-load.d lists,
//   and autofs4 and ip_tables, which systemd 252's PID 1 loads itself at start
//   (src/core/kmod-setup.c); each loadable module of each of the image's kernels with the ones it
//   needs first (modules.dep). A module the kernel gives soft dependencies (modules.softdep, e.g.
//   libcrc32c's optimised crc32c) is left to modprobe, which loads them with it: it is not listed,
//   and one that needs it loads early only when it is already there (the initrd loaded it);
// - the mounts: each .mount unit among them of a filesystem without a device (tmpfs, hugetlbfs,
//   mqueue, configfs, fusectl, debugfs, tracefs, securityfs) under /dev, /proc, /sys, /run or on
//   /tmp (never through the data partition), with its Options= and conditions;
//   a unit with a condition other than ConditionPathExists=, ConditionPathIsSymbolicLink=!,
//   ConditionCapability= or ConditionVirtualization=! (all of which hold for cairn-init, PID 1
//   outside any container) is left to systemd. And bpffs at /sys/fs/bpf, which PID 1 mounts itself
//   (the kernel then asks modprobe for bpf_preload, a module Debian's kernel does not have).
// Both lists are empty, and nothing is written, for a tree without systemd.
#pragma once

#include <string>
#include <vector>

#include "imager/tree.hpp"
#include "initrd/early_boot.hpp"

namespace cairn::imager {

// The boot's units by name, the default target's first.
std::vector<std::string> boot_units(const Tree& tree);

// initrd::boot_modules_list's lines: "PATH NEED..." (the names of the modules it needs), in load order.
std::vector<std::string> boot_module_lines(const Tree& tree);

// initrd::boot_mounts_list's entries.
std::vector<initrd::BootMount> boot_mounts(const Tree& tree);

struct EarlyBootLists {
    size_t modules = 0, mounts = 0;
};

// Writes both lists into the tree (root-owned 0644), and a drop-in for modprobe@.service that skips
// its `modprobe` when /sys/module/NAME is there. Nothing for a tree without systemd.
EarlyBootLists add_early_boot(Tree& tree);

}  // namespace cairn::imager
