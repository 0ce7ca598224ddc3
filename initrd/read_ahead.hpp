// Reading ahead, at boot, the files of the root filesystem the boot is going to read (the
// imager predicts them: imager/read_ahead.hpp). cairn-init starts it in a process of its own just
// before it hands over to the image's init, so that it runs on the CPU systemd's start leaves
// idle; the services then find their programs, libraries and configuration in the page cache,
// already checked against the verity tree.
//
// The list is in the verified root, but what it names is looked up on the running system: only
// regular files of the root filesystem itself are read (the overlays on /etc, /home and /root,
// and /var, come from partitions that are not verified), never a FIFO or a device, never through
// a symbolic link in the last component, each up to its size, within fixed limits.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace cairn::initrd {

// Where the imager writes the list and cairn-init reads it, in the image's root: one absolute
// path per line.
inline constexpr const char* read_ahead_list = "/usr/lib/cairn/boot-read-ahead";

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

// When the root ("/", after switch_root) has read_ahead_list: forks a child, named
// "cairn-readahead", that runs read_ahead on it and reports on /dev/kmsg when done; the caller
// goes on at once. The child becomes a child of the image's init, which reaps it.
void start_read_ahead();

}  // namespace cairn::initrd
