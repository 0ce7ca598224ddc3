// The root tree being assembled: a staging directory on the build host plus the metadata
// (owner, group, mode) every entry will have in the image. The staging directory holds the
// content; the metadata table is the truth for ownership and permissions, so a build run by an
// ordinary user still produces root-owned, setuid or 0600 files exactly as the recipe says.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::imager {

namespace fs = std::filesystem;

struct Meta {
    uint32_t uid = 0;
    uint32_t gid = 0;
    uint32_t mode = 0;  // full st_mode: file type and permission bits
};

class Tree {
public:
    explicit Tree(fs::path staging);

    const fs::path& staging() const { return staging_; }

    // Resolves an absolute image path to the entry it names, with chroot semantics: symlinks in
    // the leading components are followed inside the tree (absolute targets stay in the tree);
    // the last component is not followed. Returns the canonical image path ("/usr/bin/ls").
    // Throws Error naming `what` for loops, escapes or a component that is not a directory.
    std::string resolve(std::string_view image_path, const std::string& what) const;

    // The host path of a canonical image path.
    fs::path host(std::string_view canonical) const;

    // Creates the missing parents of a canonical path as root-owned 0755 directories.
    void make_parents(std::string_view canonical, const std::string& what);

    // Removes whatever stands at a canonical path (a directory only when `also_directory`).
    void remove(std::string_view canonical, bool also_directory, const std::string& what);

    // Adding entries: each takes a path (resolved here) and the entry's metadata. An existing
    // entry of another kind is replaced; an existing directory stays and takes the new metadata.
    void add_directory(std::string_view image_path, Meta meta, const std::string& what);
    void add_file(std::string_view image_path, std::string_view content, Meta meta, const std::string& what);
    void add_file_copy(std::string_view image_path, const fs::path& source, Meta meta, const std::string& what);
    void add_symlink(std::string_view image_path, const std::string& target, Meta meta, const std::string& what);
    void add_hardlink(std::string_view image_path, std::string_view existing_image_path, const std::string& what);

    // Moves every entry of `other`, a tree on the same filesystem, to the same image path here
    // (resolved here, so /lib/x lands in /usr/lib/x under merged /usr), as adding them would:
    // directories are made or keep their place and take the new metadata (a symbolic link here
    // where `other` has a directory stays), anything else is renamed in and replaces what was
    // there. `other` is left with its directories only.
    void move_in(const Tree& other, const std::string& what);

    void set_meta(std::string_view canonical, Meta meta) { meta_[std::string(canonical)] = meta; }
    std::optional<Meta> meta(std::string_view canonical) const;

    // Looks a user or group name up in the tree's /etc/passwd or /etc/group.
    std::optional<uint32_t> lookup_user(const std::string& name) const;
    std::optional<uint32_t> lookup_group(const std::string& name) const;

    // Gives metadata to entries something else created (depmod, ...) and drops entries that are
    // gone: root-owned, with the permission bits found on disk; with `owners_from_disk`, with the
    // owner and group found on disk too (a tree where dpkg ran as root: imager/dpkg.hpp).
    void sync_with_staging(bool owners_from_disk = false);

    // Every entry, by canonical image path, "/" included.
    const std::map<std::string, Meta>& entries() const { return meta_; }
    // The entries below the canonical folder `folder` (at any depth, itself not), in path order.
    // (A plain iterator pair, not std::ranges::subrange: clang-14, which builds the fuzz targets,
    // rejects libstdc++ 12's subrange.)
    struct Entries {
        std::map<std::string, Meta>::const_iterator first, last;
        auto begin() const { return first; }
        auto end() const { return last; }
    };
    Entries entries_under(std::string_view folder) const;

    // Gives every entry its recipe metadata and `epoch` as its time, for the filesystem builders.
    // As root: lchown and chmod in the staging tree. As an ordinary user: the times only, and a
    // fakeroot database beside the tree; the result is the argv prefix that makes a program see
    // the recipe's owners and modes ({} as root, {"fakeroot", "-i", DB, "--"} otherwise).
    // `as_root` chooses the way; by default, whether we run as root.
    std::vector<std::string> apply_metadata(int64_t epoch, const fs::path& work_dir, std::optional<bool> as_root = {}) const;

private:
    fs::path staging_;
    std::map<std::string, Meta> meta_;
};

// Adds a host executable at `image_path` and every shared library it needs (elf::closure) at
// their host paths, root-owned with their host permission bits; a library reached through two
// paths is stored once and hard-linked. A library path the tree already has (from a Debian
// package, or an earlier program) is left as it is. Returns the library files it needs (host
// paths, symlinks aside).
std::vector<fs::path> add_host_executable(Tree& tree, const fs::path& executable, std::string_view image_path, Meta meta,
                                          const std::string& what);

// add_host_executable for one of Cairn's own programs, whose staged copy then loses its debug
// sections (objcopy --strip-debug): a RelWithDebInfo build carries 3 to 16 MB of DWARF in each,
// about 45 MB in a root with updates and provisioning, which no device reads.
std::vector<fs::path> add_cairn_program(Tree& tree, const fs::path& program, std::string_view image_path, Meta meta,
                                        const std::string& what);

// An ELF object in the tree that the image's dynamic loader could not start or load: the
// interpreter it names (PT_INTERP) when the tree lacks it, and the DT_NEEDED libraries the tree
// lacks, in the object's order.
struct MissingLibraries {
    std::string path;                    // canonical image path of the program or library
    std::string interpreter;             // empty: present (or none needed)
    std::vector<std::string> libraries;
};

// Checks every x86-64 ELF object in the tree (programs and libraries; kernel modules aside)
// the way ld.so in the image would look for its libraries: DT_RPATH (when there is no
// DT_RUNPATH) and DT_RUNPATH of the object with $ORIGIN, $LIB and $PLATFORM expanded, the
// directories of the image's /etc/ld.so.conf (comments, `include` globs of files; no ld.so.cache),
// then /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib, /lib64, /usr/lib64.
// Symlinks are followed inside the tree. Leniency where the loader's view depends on who loads
// a library: a DT_RPATH of any object in the tree counts for every library. Sorted by path.
std::vector<MissingLibraries> missing_libraries(const Tree& tree);

// The canonical image path of the regular file an image path leads to, symlinks followed inside
// the tree (absolute targets stay in it); empty when there is none.
std::string tree_regular_file(const Tree& tree, std::string path);

// The files the image's dynamic loader maps to start each of `programs` (image paths; symlinks
// are followed inside the tree): the program, its interpreter (PT_INTERP) and every DT_NEEDED
// library, looked up as missing_libraries says (without the leniency for other objects'
// DT_RPATH). Canonical image paths, breadth-first from the programs, without duplicates; what
// the tree lacks is left out.
std::vector<std::string> loaded_files(const Tree& tree, const std::vector<std::string>& programs);

// Where a build's staging tree lives. Creating hundreds of thousands of small files and then
// deleting them is most of what installing Debian packages costs, and on a disk filesystem it
// is slow (ext4 without a journal, for one, scans past every inode deleted in the last 30 s
// when it allocates one); in memory it is not. The result is the same either way: mkfs reads
// the tree in sorted order and every time, owner and mode comes from the tree's table.
//
// The size of the tmpfs for a staging tree whose root partition is `root_size` bytes, given
// `memory_available` (MemAvailable): half the available memory, when that holds the tree (the
// partition's size, three times it for a compressed filesystem, whose tree is larger than the
// partition); nullopt (stay on disk) otherwise, and for a size of 0.
std::optional<uint64_t> staging_tmpfs_size(uint64_t memory_available, uint64_t root_size, bool compressed);

// MemAvailable from /proc/meminfo, in bytes (0 when it cannot be read).
uint64_t memory_available();

// Mounts a tmpfs of `size` bytes (mode 0755) on the directory `dir`, in a mount namespace of the
// calling process's own (made here, with every mount private): nobody else sees it, and it goes
// when the process and the programs it started are gone, also when they are killed. Needs root
// and a single-threaded process. Throws Error naming `dir`.
void mount_private_tmpfs(const fs::path& dir, uint64_t size);

// Removes a staging tree, also one that is a mount point (mount_private_tmpfs): unmounted first.
void remove_staging(const fs::path& dir);

// True for a relative path whose components are all non-empty and neither "." nor "..".
bool is_clean_relative_path(std::string_view path);

// Joins and normalises image paths ("/", "usr/bin" -> "/usr/bin"); rejects "..".
std::string image_join(std::string_view base, std::string_view relative, const std::string& what);

}  // namespace cairn::imager
