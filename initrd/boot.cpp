#include "initrd/boot.hpp"

#include <fcntl.h>

#include <fstream>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"

namespace cairn::initrd {

namespace fs = std::filesystem;

BootOptions parse_cmdline(const std::string& cmdline) {
    BootOptions o;
    bool have_hash = false;
    std::istringstream in(cmdline);
    std::string word;
    while (in >> word) {
        size_t eq = word.find('=');
        std::string key = word.substr(0, eq);
        std::string value = eq == std::string::npos ? "" : word.substr(eq + 1);
        if (key == "cairn.slot") o.slot = value;
        else if (key == "cairn.roothash") {
            if (value.size() != 64) fail("kernel command line: cairn.roothash must be 64 hex digits (sha256), got '" + value + "'");
            o.root_hash = from_hex(value, "kernel command line: cairn.roothash");
            have_hash = true;
        } else if (key == "cairn.rootfs") {
            if (value != "erofs" && value != "ext4") fail("kernel command line: cairn.rootfs must be erofs or ext4, got '" + value + "'");
            o.rootfs = value;
        } else if (key == "cairn.log") o.log_mount = value;
        else if (key == "cairn.init") o.init = value;
        else if (key == "cairn.debug") o.debug_shell = value == "shell";
        else if (key == "cairn.verity") o.verity = value != "off";
    }
    if (o.slot.empty()) fail("kernel command line: cairn.slot is missing (which slot to boot)");
    for (char c : o.slot)
        if (!std::isalnum(static_cast<unsigned char>(c))) fail("kernel command line: cairn.slot '" + o.slot + "' is not a slot name");
    if (o.verity && !have_hash) fail("kernel command line: cairn.roothash is missing (the root filesystem cannot be verified)");
    if (o.log_mount.empty() || o.log_mount[0] != '/') fail("kernel command line: cairn.log must be an absolute path");
    return o;
}

std::optional<fs::path> find_partition(const fs::path& sys_class_block, const std::string& label) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(sys_class_block, ec)) {
        std::ifstream uevent(entry.path() / "uevent");
        std::string line, devname, partname;
        while (std::getline(uevent, line)) {
            if (line.starts_with("DEVNAME=")) devname = line.substr(8);
            if (line.starts_with("PARTNAME=")) partname = line.substr(9);
        }
        if (!devname.empty() && partname == label) return fs::path("/dev") / devname;
    }
    return std::nullopt;
}

PartitionOf partition_of(const fs::path& sys_class_block, const fs::path& partition) {
    fs::path node = sys_class_block / partition.filename();
    std::error_code ec;
    fs::path real = fs::canonical(node, ec);
    if (ec) fail(partition.string() + ": not found in " + sys_class_block.string());
    PartitionOf out;
    out.disk = fs::path("/dev") / real.parent_path().filename();
    std::ifstream number(real / "partition");
    if (!(number >> out.number)) fail(partition.string() + ": not a partition");
    return out;
}

bool has_ext4(const fs::path& device) {
    UniqueFd fd = open_file(device, O_RDONLY);
    unsigned char magic[2] = {};
    pread_exact(fd.get(), magic, 2, 1024 + 56, device.string());
    return magic[0] == 0x53 && magic[1] == 0xef;
}

}  // namespace cairn::initrd
