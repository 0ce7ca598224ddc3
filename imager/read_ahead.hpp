// The boot's read-ahead list: the files of the root filesystem a systemd boot of the image reads,
// written into the image for cairn-init to read in the background from the moment it has mounted
// the verified root, through its last steps and systemd's start.
//
// Why: systemd's start (loading its units, 1-2 s under emulation) runs on one CPU; the files the
// services then start from are read one page fault at a time, and on a verity root every block
// read is hashed before it is used. Read ahead on the idle CPU, the boot finds them in the page
// cache. The list is predicted from the tree, not recorded from a boot: the same image gives
// the same list, and the first boot has it too.
//
// What it holds, in this order (every entry a canonical path of a regular file in the tree):
// 0. systemd with its libraries (PID 1 maps them the moment it starts);
// 1. the units and the configuration systemd, udev, networkd, tmpfiles, sysctl and D-Bus read at
//    every boot (the folders in read_ahead_folders), the kernel modules' indexes and the boot's
//    modules (imager/early_boot.hpp's list: modules-load.d's, the modprobe@ units', PID 1's);
// 2. the programs of the units the boot starts (ExecStart= and friends of every unit linked in a
//    .wants/.requires folder, the service of each such socket; masked units and the ones only a
//    timer or path starts are not), each with the libraries it loads
//    (loaded_files, imager/tree.hpp), sysinit.target's first, then sockets, basic and multi-user.
// Nothing under /etc, /var, /home or /root: on the device those are overlays or partitions that
// are not the verified root, and cairn-init reads only files of the root filesystem.
#pragma once

#include <string>
#include <vector>

#include "imager/tree.hpp"
#include "initrd/read_ahead.hpp"

namespace cairn::imager {

// The list for the tree, as above. Empty when the tree has no systemd.
std::vector<std::string> boot_read_ahead(const Tree& tree);

// Writes the list where cairn-init looks for it (initrd::read_ahead_list: one path per line,
// root-owned 0644). Returns the number of files.
size_t add_boot_read_ahead(Tree& tree);

}  // namespace cairn::imager
