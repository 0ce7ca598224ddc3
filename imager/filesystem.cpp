#include "imager/filesystem.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/units.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> with_runner(const std::vector<std::string>& runner, std::vector<std::string> argv) {
    std::vector<std::string> out = runner;
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
}

void too_big(const RootfsOptions& o, uint64_t size) {
    fail(o.where + ": rootfs: the root filesystem (" + format_size(size) + ") does not fit in partition " + o.partition + " (" +
         format_size(o.max_size) + "); make the root partition larger in disk.partitions or the root tree smaller");
}

// Block count of an ext2/3/4 image, read from its superblock.
uint64_t ext4_size(const fs::path& image) {
    UniqueFd fd = open_file(image, O_RDONLY);
    unsigned char sb[1024];
    pread_exact(fd.get(), sb, sizeof sb, 1024, image.string());
    auto le32 = [&](size_t off) { return uint32_t(sb[off]) | uint32_t(sb[off + 1]) << 8 | uint32_t(sb[off + 2]) << 16 | uint32_t(sb[off + 3]) << 24; };
    if (sb[56] != 0x53 || sb[57] != 0xef) fail(image.string() + ": not an ext4 filesystem");
    uint64_t blocks = le32(4);
    if (le32(96) & 0x80) blocks |= uint64_t(le32(0x150)) << 32;  // INCOMPAT_64BIT
    return blocks * (1024ull << le32(24));
}


// Sets the four timestamps of every inode reachable from the directories in o.paths to o.epoch,
// with debugfs: first listing the directories to learn the inode numbers (debugfs would follow
// a symbolic link named by its path), then setting the fields by number.
void ext4_set_times(const fs::path& image, const RootfsOptions& o, const RunOptions& env) {
    std::string listing;
    for (const auto& p : o.directories) {
        if (p.find_first_of("\"\\\n") != std::string::npos)
            fail(o.where + ": rootfs: the path " + p + " cannot be stored reproducibly in ext4 (it holds a quote, backslash or newline)");
        listing += "ls -p \"" + p + "\"\n";
    }
    fs::path command_file = image.string() + ".debugfs";
    write_file_atomic(command_file, listing);
    std::string out = run_checked({"debugfs", "-f", command_file.string(), image.string()}, env);
    std::set<unsigned long> inodes;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.size() < 2 || line[0] != '/') continue;  // "/ino/mode/uid/gid/name/size/"
        inodes.insert(std::stoul(line.substr(1, line.find('/', 1) - 1)));
    }
    std::string commands;
    const std::string at = " @" + std::to_string(o.epoch) + "\n";
    for (unsigned long ino : inodes)
        for (const char* field : {"atime", "mtime", "ctime", "crtime"})
            commands += "set_inode_field <" + std::to_string(ino) + "> " + field + at;
    write_file_atomic(command_file, commands);
    run_checked({"debugfs", "-w", "-f", command_file.string(), image.string()}, env);
    fs::remove(command_file);
}

}  // namespace

uint64_t make_root_filesystem(const fs::path& tree, const fs::path& image, const RootfsOptions& o) {
    std::error_code ec;
    fs::remove(image, ec);
    if (o.filesystem == "erofs") {
        std::vector<std::string> argv = {"mkfs.erofs", "--quiet", "-x", "-1", "-T", std::to_string(o.epoch), "-U", o.uuid.str()};
        if (o.compression != "none") argv.push_back("-z" + o.compression);
        argv.push_back(image.string());
        argv.push_back(tree.string());
        run_checked(with_runner(o.runner, argv));
        uint64_t size = fs::file_size(image);
        uint64_t aligned = align_up(size, 4096);
        if (aligned != size) fs::resize_file(image, aligned);
        if (aligned > o.max_size) too_big(o, aligned);
        return aligned;
    }
    if (o.filesystem != "ext4") fail("rootfs.filesystem: unknown filesystem '" + o.filesystem + "'");

    // Make it as large as the partition, then shrink it to its content.
    {
        UniqueFd fd = open_file(image, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (::ftruncate(fd.get(), static_cast<off_t>(o.max_size)) != 0) fail_errno("sizing " + image.string());
    }
    RunOptions env;
    env.extra_env = {"E2FSPROGS_FAKE_TIME=" + std::to_string(o.epoch), "MKE2FS_CONFIG=/dev/null"};
    std::string hash_seed = Uuid::derive(o.uuid.str(), "cairn:ext4-hash-seed").str();
    RunResult r = run(with_runner(o.runner, {"mkfs.ext4", "-q", "-F", "-b", "4096", "-I", "256", "-O", "^has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize",
                                             "-E", "hash_seed=" + hash_seed + ",lazy_itable_init=0,nodiscard", "-U", o.uuid.str(), "-L", "root",
                                             "-d", tree.string(), image.string()}), env);
    if (r.exit_code != 0) {
        std::string err = r.err + r.out;
        if (err.find("Could not allocate") != std::string::npos || err.find("No space left") != std::string::npos ||
            err.find("Not enough space") != std::string::npos)
            fail(o.where + ": rootfs: the root tree does not fit in partition " + o.partition + " (" + format_size(o.max_size) +
                 ") as ext4; make the root partition larger or the tree smaller");
        fail("mkfs.ext4 failed (exit " + std::to_string(r.exit_code) + "): " + err.substr(0, 400));
    }
    run_checked({"resize2fs", "-M", image.string()}, env);
    // mkfs.ext4 -d copies each file's change time from the staging tree (no call can set one
    // there) and gives symbolic links the current time: set every inode's times to the epoch.
    ext4_set_times(image, o, env);
    uint64_t size = ext4_size(image);
    fs::resize_file(image, size);
    return size;
}

void make_vfat(const fs::path& image, uint64_t size, const std::string& label, uint32_t volume_id) {
    std::error_code ec;
    fs::remove(image, ec);
    char id[16];
    std::snprintf(id, sizeof id, "%08x", volume_id);
    std::vector<std::string> argv = {"mkfs.vfat", "--invariant", "-i", id, "-n", label, "-C", image.string(), std::to_string(size / 1024)};
    run_checked(argv, {.extra_env = {"SOURCE_DATE_EPOCH=0"}});
}

}  // namespace cairn::imager
