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
        if (key == "cairn.slot") {
            if (value != "a" && value != "b") fail("kernel command line: cairn.slot '" + value + "' is not a slot name (a or b)");
            o.slot = value[0];
        } else if (key == "cairn.disk") o.disk = Uuid::parse(value, "kernel command line: cairn.disk");
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
    if (!o.slot) fail("kernel command line: cairn.slot is missing (which slot to boot)");
    if (!o.disk) fail("kernel command line: cairn.disk is missing (which disk the partitions must come from)");
    if (o.verity && !have_hash) fail("kernel command line: cairn.roothash is missing (the root filesystem cannot be verified)");
    check_log_mount(o.log_mount, "kernel command line: cairn.log");
    return o;
}

void check_log_mount(const std::string& path, const std::string& what) {
    if (auto problem = log_mount_problem(path)) fail(what + ": " + *problem);
}

std::optional<std::string> log_mount_problem(const std::string& path) {
    if (path.empty() || path[0] != '/') return "'" + path + "' is not an absolute path";
    if (path == "/") return "the log partition cannot be mounted on / (it would cover the verified root)";
    if (path.back() == '/' || path.find("//") != std::string::npos || path.find("/./") != std::string::npos ||
        path.find("/../") != std::string::npos || path.ends_with("/.") || path.ends_with("/.."))
        return "'" + path + "' is not a plain path (no '.', '..', repeated or trailing '/')";
    auto at_or_under = [&](std::string_view dir) { return path == dir || (path.starts_with(dir) && path[dir.size()] == '/'); };
    for (std::string_view dir : {"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/proc", "/sys",
                                 "/dev", "/run", "/tmp", "/home", "/root", "/var/.cairn", "/var/lib"})
        if (at_or_under(dir))
            return "the log partition cannot be mounted on " + path + " (" + std::string(dir) + " holds verified, system or device-state content)";
    if (path == "/var") return "the log partition cannot be mounted on /var (the data partition is mounted there)";
    return std::nullopt;
}
}  // namespace cairn::initrd
