// What [ssh] puts into an image: Debian's OpenSSH server, keys and certificates only.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "imager/recipe.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

// Image paths of the SSH files.
namespace ssh_paths {
inline constexpr const char* sshd = "/usr/sbin/sshd";
inline constexpr const char* keygen = "/usr/bin/ssh-keygen";
inline constexpr const char* socat = "/usr/bin/socat";
inline constexpr const char* config = "/etc/ssh/sshd_config";
inline constexpr const char* authorized_keys_dir = "/etc/ssh/authorized_keys";  // one file per user
inline constexpr const char* user_ca_keys = "/etc/ssh/trusted_user_ca_keys";
inline constexpr const char* run = "/usr/lib/cairn/sshd-run";                  // what a service starts
inline constexpr const char* host_keys = "/var/lib/cairn/ssh";                 // on the data partition
}  // namespace ssh_paths

// sshd_config of an image: keys and certificates only, root by key only.
std::string sshd_config(const Recipe::Ssh& ssh);

// Makes the host keys on the first boot (written under a temporary name and renamed, so a power
// cut never leaves half a key); the start of sshd_run_script, and systemd images' keygen unit.
std::string ssh_keygen_script();

// The start script (/usr/lib/cairn/sshd-run): makes the host keys on the first boot (written
// under a temporary name and renamed, so a power cut never leaves half a key), starts the vsock
// listener where the kernel has vsock, then runs sshd in the foreground.
std::string sshd_run_script(const Recipe::Ssh& ssh);

// Adds sshd and ssh-keygen from Debian's openssh-server and openssh-client packages (fetched into
// `cache` like any package; the build host needs no SSH server) and socat for vsock from the build
// host, each with the libraries it needs from the build host; the configuration, the authorized
// keys and user CA (each checked to be OpenSSH public keys) and the start script. The tree's
// /etc/passwd must already name every user given keys and sshd's privilege separation user
// `sshd`. Throws Error naming the recipe key at fault. Returns the build inputs it used (packages,
// key files' digests) for the build record.
nlohmann::json add_ssh_files(Tree& tree, const Recipe& recipe, const std::filesystem::path& cache, const std::filesystem::path& work_dir);

}  // namespace cairn::imager
