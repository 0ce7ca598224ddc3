#include "common/efivars.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace cairn {

namespace fs = std::filesystem;

namespace {

// efivarfs marks variable files immutable; a plain directory (tests) has no such flag to clear.
void make_mutable(const fs::path& file) {
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return;
    int flags = 0;
    if (::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0) return;
    if (!(flags & FS_IMMUTABLE_FL)) return;
    flags &= ~FS_IMMUTABLE_FL;
    if (::ioctl(fd.get(), FS_IOC_SETFLAGS, &flags) != 0) fail_errno("making " + file.string() + " writable");
}

}  // namespace

EfiVars::EfiVars(fs::path dir) : dir_(std::move(dir)) {}

fs::path EfiVars::path(const std::string& name, const std::string& vendor) const { return dir_ / (name + "-" + vendor); }

std::optional<EfiVars::Variable> EfiVars::read(const std::string& name, const std::string& vendor) const {
    const fs::path p = path(name, vendor);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return std::nullopt;
        fail_errno("reading UEFI variable " + name + " (" + p.string() + ")");
    }
    std::vector<uint8_t> bytes;
    uint8_t buffer[4096];
    for (;;) {
        ssize_t r = ::read(fd.get(), buffer, sizeof buffer);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) fail_errno("reading UEFI variable " + name);
        if (r == 0) break;
        bytes.insert(bytes.end(), buffer, buffer + r);
    }
    if (bytes.size() < 4) fail("UEFI variable " + name + ": shorter than its attributes");
    Variable v;
    v.attributes = uint32_t(bytes[0]) | uint32_t(bytes[1]) << 8 | uint32_t(bytes[2]) << 16 | uint32_t(bytes[3]) << 24;
    v.data.assign(bytes.begin() + 4, bytes.end());
    return v;
}

void EfiVars::write(const std::string& name, const std::string& vendor, uint32_t attributes, const std::vector<uint8_t>& data) {
    const fs::path p = path(name, vendor);
    make_mutable(p);
    std::vector<uint8_t> bytes = {uint8_t(attributes), uint8_t(attributes >> 8), uint8_t(attributes >> 16), uint8_t(attributes >> 24)};
    bytes.insert(bytes.end(), data.begin(), data.end());
    // No O_TRUNC: efivarfs replaces the variable with what the single write() carries.
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) fail_errno("writing UEFI variable " + name + " (" + p.string() + ")");
    ssize_t w = ::write(fd.get(), bytes.data(), bytes.size());
    if (w < 0) fail_errno("writing UEFI variable " + name);
    if (static_cast<size_t>(w) != bytes.size()) fail("writing UEFI variable " + name + ": short write");
    // A plain file (tests) keeps old bytes past the end otherwise.
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0 && static_cast<size_t>(st.st_size) > bytes.size() && ::ftruncate(fd.get(), static_cast<off_t>(bytes.size())) != 0)
        fail_errno("writing UEFI variable " + name);
}

void EfiVars::remove(const std::string& name, const std::string& vendor) {
    const fs::path p = path(name, vendor);
    make_mutable(p);
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) fail_errno("deleting UEFI variable " + name);
}

std::vector<std::string> EfiVars::list(const std::string& vendor) const {
    std::vector<std::string> out;
    std::error_code ec;
    const std::string suffix = "-" + vendor;
    for (auto it = fs::directory_iterator(dir_, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        std::string n = it->path().filename().string();
        if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
            out.push_back(n.substr(0, n.size() - suffix.size()));
    }
    if (ec) fail("listing UEFI variables in " + dir_.string() + ": " + ec.message());
    return out;
}

std::optional<Uuid> loader_device_part_uuid(const EfiVars& vars) {
    try {
        auto v = vars.read("LoaderDevicePartUUID", loader_vendor_guid);
        if (!v) return std::nullopt;
        std::string text;
        for (size_t i = 0; i + 1 < v->data.size(); i += 2) {
            char16_t c = char16_t(v->data[i] | v->data[i + 1] << 8);
            if (c == 0) break;
            if (c > 0x7f) return std::nullopt;
            text += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        return Uuid::parse(text, "LoaderDevicePartUUID");
    } catch (const Error&) {
        return std::nullopt;
    }
}

}  // namespace cairn
