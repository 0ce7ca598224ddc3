#include "tests/support/qemu_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"

namespace cairn::test {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

fs::path image_dir(const std::string& name) { return test_images() / name; }

json manifest_of(const std::string& name) { return json::parse(read_file(image_dir(name) / "manifest.json")); }

uint64_t offset_of(const json& manifest, const std::string& label) {
    for (const auto& p : manifest["partitions"])
        if (p["label"] == label) return p["offset"];
    throw std::runtime_error("no partition " + label);
}

uint64_t size_of(const json& manifest, const std::string& label) {
    for (const auto& p : manifest["partitions"])
        if (p["label"] == label) return p["size"];
    throw std::runtime_error("no partition " + label);
}

Booted::Booted(const std::string& image, uint64_t grow_by) {
    disk = dir / "disk.raw";
    run_checked({"cp", "--sparse=always", (image_dir(image) / "disk.raw").string(), disk.string()});
    if (grow_by) fs::resize_file(disk, fs::file_size(disk) + grow_by);
}

qemu::Machine& Booted::start() {
    machine.reset();
    qemu::Config c;
    c.disk = disk;
    c.state_dir = dir / (secure_boot ? "machine" : "machine-no-secure-boot");
    c.secure_boot = secure_boot;
    c.forwards = forwards;
    for (size_t i = 0; i < drives.size(); ++i) {
        const std::string id = "drive" + std::to_string(i);
        c.extra_args.insert(c.extra_args.end(), {"-drive", "if=none,id=" + id + ",format=raw" + (drives_writable ? "" : ",readonly=on") + ",file=" + drives[i].string(),
                                                 "-device", "virtio-blk-pci,drive=" + id});
    }
    machine = std::make_unique<qemu::Machine>(c);
    machine->start();
    return *machine;
}

void wait_for_sshd(qemu::Machine& m, std::chrono::seconds timeout) {
    shell(m, "until netstat -ltn | grep -q ':22 '; do sleep 1; done", timeout);
}

fs::path test_private_key(const fs::path& dir, const std::string& name) {
    fs::path key = dir / name;
    fs::copy_file(source_dir() / "recipes/keys" / name, key, fs::copy_options::overwrite_existing);
    fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write);
    return key;
}

std::vector<std::string> ssh_command(uint16_t port, const std::vector<std::string>& options, const std::string& remote) {
    std::vector<std::string> argv = {"timeout", "60", "ssh", "-p", std::to_string(port), "-o", "StrictHostKeyChecking=no", "-o",
                                     "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), {"root@127.0.0.1", remote});
    return argv;
}

std::string read_from(uint16_t port, std::chrono::milliseconds quiet) {
    UniqueFd fd = connect_loopback(port);
    std::string got;
    if (!fd) return got;
    char buffer[256];
    pollfd p{fd.get(), POLLIN, 0};
    while (::poll(&p, 1, static_cast<int>(quiet.count())) > 0) {
        ssize_t r = ::read(fd.get(), buffer, sizeof buffer);
        if (r <= 0) break;
        got.append(buffer, static_cast<size_t>(r));
    }
    return got;
}

void flip_byte(const fs::path& disk, uint64_t at) {
    UniqueFd fd = open_file(disk, O_RDWR);
    char c = 0;
    pread_exact(fd.get(), &c, 1, at, disk.string());
    c = static_cast<char>(c ^ 0x5a);
    pwrite_exact(fd.get(), &c, 1, at, disk.string());
}

std::string sha256_of_range(const fs::path& disk, uint64_t offset, uint64_t size) {
    Scratch s;
    UniqueFd in = open_file(disk, O_RDONLY);
    UniqueFd out = open_file(s / "part", O_WRONLY | O_CREAT | O_TRUNC);
    copy_sparse(in.get(), offset, out.get(), 0, size, disk.string());
    fs::resize_file(s / "part", size);
    return sha256_file_hex(s / "part");
}

void wait_for_shell(qemu::Machine& m, size_t from) {
    size_t ready = m.wait_for_after("cairn: ready", from, 180s);
    m.wait_for_after("# ", ready, 60s);
}

std::string wait_for_line(qemu::Machine& m, const std::string& marker, std::chrono::seconds timeout) {
    const size_t at = m.wait_for(marker, timeout);
    const size_t end = m.wait_for_after("\n", at, std::chrono::seconds(30));
    std::string line = m.console().substr(at, end - at);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
}

void write_guest_file(qemu::Machine& m, const std::string& path, const std::string& text) {
    std::string lines;
    for (size_t at = 0; at < text.size();) {
        size_t end = text.find('\n', at);
        if (end == std::string::npos) end = text.size();
        const std::string line = text.substr(at, end - at);
        if (line.find_first_of("'%") != std::string::npos) throw std::runtime_error("write_guest_file: a line with ' or %: " + line);
        lines += " '" + line + "'";
        at = end + 1;
    }
    const std::string out = shell(m, "printf '%s\\n'" + lines + " > " + path + ".new && mv " + path + ".new " + path + " && echo written=$?");
    if (out.find("written=0") == std::string::npos) throw std::runtime_error("writing " + path + " in the guest: " + out);
}

json shell_json(qemu::Machine& m, const std::string& command, std::chrono::seconds timeout) {
    const std::string out = shell(m, command, timeout);
    const size_t open = out.find("\n{"), close = out.rfind('}');
    json j = open == std::string::npos || close == std::string::npos || close < open
                 ? json(nullptr)
                 : json::parse(out.substr(open + 1, close - open), nullptr, false);
    if (!j.is_object()) throw std::runtime_error("no JSON object from `" + command + "` in: " + out + "\n--- console:\n" + m.console_tail(60));
    return j;
}

std::string shell(qemu::Machine& m, const std::string& command, std::chrono::seconds timeout) {
    static int n = 0;
    std::string tag = "cairn-test-done-" + std::to_string(++n);
    size_t from = m.console().size();
    m.send(command + "; echo " + tag.substr(0, 10) + "\"" + tag.substr(10) + "\"\n");  // the echoed command line never matches
    size_t at = m.wait_for(tag, timeout);
    return m.console().substr(from, at - from);
}

}  // namespace cairn::test
