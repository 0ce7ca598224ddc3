// Reading ahead, at boot, the files of the root filesystem the boot is going to read (the
// imager predicts them: imager/read_ahead.hpp). cairn-init starts it in a process of its own as
// soon as the verified root is mounted, so that it runs on the CPU that cairn-init's last steps
// and systemd's start leave idle; systemd and the services then find their programs, libraries
// and configuration in the page cache, already checked against the verity tree.
//
// The list is in the verified root, but what it names is looked up on the running system: only
// regular files of the root filesystem itself are read (the overlays on /etc, /home and /root,
// and /var, come from partitions that are not verified), never a FIFO or a device, never through
// a symbolic link in the last component, each up to its size, within fixed limits.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace cairn::initrd {

// Where the imager writes the list and cairn-init reads it, in the image's root: one absolute
// path per line.
inline constexpr const char* read_ahead_list = "/usr/lib/cairn/boot-read-ahead";

// The regular file `path` on `device`, opened for reading without following a last symlink and
// without opening anything else (a FIFO would block, a device could act on the open); -1
// otherwise. `st` is the opened file's. (Also cairn-init's way to open a module of the root.)
int open_regular(const char* path, dev_t device, struct stat& st);

struct ReadAheadLimits {
    size_t max_files = 20000;
    uint64_t max_bytes = uint64_t(512) << 20;  // of the files read
    uint64_t max_list_bytes = 4 << 20;         // a longer list is not read at all
};

struct ReadAheadResult {
    size_t files = 0;    // read
    size_t skipped = 0;  // named but not read (missing, not a regular file of `device`, a bad line)
    uint64_t bytes = 0;
};

// Reads the files `list` names into the page cache: each one that is a regular file on the
// filesystem `device` (st_dev), up to its size. Skips relative paths, what is missing, a symbolic
// link (the last component is not followed), a FIFO, socket, device or directory, and files on
// other filesystems; stops at the limits. The list itself must be a regular file on `device`, or
// nothing is read. Never throws: read-ahead only ever saves time.
ReadAheadResult read_ahead(const std::string& list, dev_t device, const ReadAheadLimits& limits = {}) noexcept;

// When the root filesystem mounted at `root` has read_ahead_list: forks a child, named
// "cairn-readahead", that enters `root` (chroot) and runs read_ahead on it, then reports on
// `report` (opened before it enters the root; /dev/kmsg) when done; the caller goes on at once.
// cairn-init starts it as soon as the verified root is mounted, so that the reading overlaps the
// rest of cairn-init and systemd's start; the child lives on through switch_root (its root is
// the same mount) and becomes a child of the image's init, which reaps it. Returns the child's
// pid, or 0 when there is no list or no child.
pid_t start_read_ahead(const std::string& root, const char* report = "/dev/kmsg");

}  // namespace cairn::initrd
