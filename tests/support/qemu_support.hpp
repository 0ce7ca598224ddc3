// Helpers for the QEMU scenarios: machines on sparse copies of built images, a console shell
// on debug images, disk edits from the host.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qemu/machine.hpp"
#include "tests/support/test_support.hpp"

namespace cairn::test {

std::filesystem::path image_dir(const std::string& name);  // test_images()/name
nlohmann::json manifest_of(const std::string& name);
uint64_t offset_of(const nlohmann::json& manifest, const std::string& label);
uint64_t size_of(const nlohmann::json& manifest, const std::string& label);

// A machine on a sparse copy of a built image; `drives` are attached read-only after the disk
// (the guest sees them as /dev/vdb, /dev/vdc, ... in this order).
struct Booted {
    Scratch dir;
    std::filesystem::path disk;
    std::vector<std::filesystem::path> drives;
    bool drives_writable = false;  // true: the guest may write to `drives` (a hostile disk it would mount)
    std::vector<std::pair<uint16_t, uint16_t>> forwards;  // host port (127.0.0.1) -> guest port
    // false: firmware without Secure Boot, with a state directory of its own (dir/machine-no-secure-boot:
    // NVRAM and TPM); copy dir/machine/tpm there first to keep the TPM.
    bool secure_boot = true;
    std::unique_ptr<qemu::Machine> machine;

    explicit Booted(const std::string& image, uint64_t grow_by = 0);
    qemu::Machine& start();  // a new QEMU on the same disk and state (NVRAM, TPM)
};

// Waits (in the debug image's console shell) until sshd listens on TCP port 22. Probing from the
// host instead would count as new SSH connections and get the host blocked by the firewall.
void wait_for_sshd(qemu::Machine& m, std::chrono::seconds timeout = std::chrono::seconds(120));

// A private key of recipes/keys (test keys) copied into `dir` with the permissions ssh insists on.
std::filesystem::path test_private_key(const std::filesystem::path& dir, const std::string& name);
// argv of the host's ssh to root@127.0.0.1:port (through a forward to the guest's 22) running
// `remote`, under `timeout 60`, without host key checks. Mind the image's firewall: more than 3
// new connections within 60 s block the host.
std::vector<std::string> ssh_command(uint16_t port, const std::vector<std::string>& options, const std::string& remote);

// Connects to 127.0.0.1:port and reads what the other side sends until it closes or is silent for
// `quiet` (empty when the connection fails).
std::string read_from(uint16_t port, std::chrono::milliseconds quiet = std::chrono::seconds(10));

void flip_byte(const std::filesystem::path& disk, uint64_t at);
std::string sha256_of_range(const std::filesystem::path& disk, uint64_t offset, uint64_t size);

// Waits for `marker` on the console and then for the end of its line (the console arrives in
// pieces: the marker may come before the rest of its line); returns that whole line from the marker.
std::string wait_for_line(qemu::Machine& m, const std::string& marker, std::chrono::seconds timeout);

// Waits for the debug image's console shell (its prompt after `ready`).
void wait_for_shell(qemu::Machine& m, size_t from = 0);
// Runs a command in the debug image's console shell and returns what it printed.
std::string shell(qemu::Machine& m, const std::string& command, std::chrono::seconds timeout = std::chrono::seconds(30));
// Writes `text` (lines without ' or %) to `path` in the guest, through the console shell: written
// beside it, then renamed into place. Throws when the shell does not say it was.
void write_guest_file(qemu::Machine& m, const std::string& path, const std::string& text);
// The JSON object a command prints in the console shell (from the first line that starts with
// '{' to the last '}'). Throws naming the command, with its output and the console's tail, when
// there is none.
nlohmann::json shell_json(qemu::Machine& m, const std::string& command, std::chrono::seconds timeout = std::chrono::seconds(30));

}  // namespace cairn::test
