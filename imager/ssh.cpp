#include "imager/ssh.hpp"

#include <set>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "imager/deb.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;

namespace {

// The users /etc/passwd of the tree names.
std::set<std::string> passwd_users(const Tree& tree, const std::string& what) {
    std::set<std::string> users;
    fs::path passwd = tree.host(tree.resolve("/etc/passwd", what));
    std::error_code ec;
    if (!fs::is_regular_file(passwd, ec)) return users;
    std::istringstream in(read_file(passwd));
    for (std::string line; std::getline(in, line);)
        if (size_t colon = line.find(':'); colon != std::string::npos && colon > 0) users.insert(line.substr(0, colon));
    return users;
}

fs::path host_program(const std::string& name, const std::string& package, const std::string& what) {
    auto p = find_program(name);
    if (!p) fail(what + ": " + name + " not found on the build host (install Debian's " + package + "; see scripts/install-deps)");
    return *p;
}

// One program out of a Debian package, unpacked to `to`; its package recorded in `inputs`.
fs::path program_from_deb(const std::string& package, const std::string& member, const fs::path& cache, const fs::path& to,
                          const std::string& what, nlohmann::json& inputs) {
    fs::path deb = fetch_deb(package, cache, what);
    Tree scratch(to.parent_path() / (to.filename().string() + ".tree"));
    ExtractOptions o;
    o.map = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
    bool found = false;
    o.divert = [&](const std::string& name, archive* a) {
        if (name != member) return;
        copy_entry_data(a, to, deb.string() + ": " + name);
        found = true;
    };
    DebInfo info = extract_deb(deb, scratch, o);
    if (!found) fail(what + ": " + deb.filename().string() + " holds no /" + member);
    fs::permissions(to, fs::perms(0755));
    inputs.push_back({{"ssh", package}, {"package", info.package}, {"version", info.version}, {"sha256", sha256_file_hex(deb)}});
    return to;
}

// Reads a file of OpenSSH public keys, checked with ssh-keygen; `key` names it in errors.
std::string public_keys(const fs::path& file, const fs::path& keygen, const std::string& key) {
    std::string text = read_file(file);
    if (text.find("PRIVATE KEY") != std::string::npos)
        fail(key + ": " + file.string() + " holds a private key; give the public key (.pub): private keys never go into an image");
    RunResult r = run({keygen.string(), "-l", "-f", file.string()});
    if (r.exit_code != 0) {
        std::string err = trim_end(r.err.empty() ? r.out : r.err);
        fail(key + ": " + file.string() + " is not an OpenSSH public key file (ssh-keygen -l: " + err + ")");
    }
    if (!text.empty() && text.back() != '\n') text += '\n';
    return text;
}

}  // namespace

std::string sshd_config(const Recipe::Ssh& ssh) {
    std::string c =
        "# sshd of a Cairn image, written by `cairn build` from the recipe's [ssh]: keys and\n"
        "# certificates only; passwords and keyboard-interactive are never accepted.\n"
        "Port 22\n"
        "HostKey /var/lib/cairn/ssh/ssh_host_ed25519_key\n"
        "HostKey /var/lib/cairn/ssh/ssh_host_ecdsa_key\n"
        "PubkeyAuthentication yes\n"
        "AuthenticationMethods publickey\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitEmptyPasswords no\n"
        "HostbasedAuthentication no\n"
        "GSSAPIAuthentication no\n"
        "KerberosAuthentication no\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "AuthorizedKeysFile /etc/ssh/authorized_keys/%u\n";
    if (!ssh.trusted_user_ca_keys.empty()) c += std::string("TrustedUserCAKeys ") + ssh_paths::user_ca_keys + "\n";
    c += "# vsock clients never pass the firewall's per-source limit: sshd's own limits hold for them.\n"
         "MaxAuthTries 3\n"
         "LoginGraceTime 30\n"
         "MaxStartups 10:30:60\n"
         "X11Forwarding no\n"
         "PermitUserEnvironment no\n"
         "PrintMotd no\n"
         "PrintLastLog no\n"
         "PidFile /run/sshd.pid\n";
    return c;
}

std::string ssh_keygen_script() {
    return "#!/bin/sh\n"
           "# SSH host keys of a Cairn image (written by `cairn build` from the recipe's [ssh]): made on\n"
           "# the first boot on the data partition, never baked into an image.\n"
           "set -e\n"
           "keys=/var/lib/cairn/ssh\n"
           "# Programs only where there is something to do: this runs on every boot, and on a first boot\n"
           "# each program started is time the boot waits for (tens of ms under emulation).\n"
           "[ -d /run/sshd ] || mkdir -p /run/sshd\n"
           "missing=\n"
           "for type in ed25519 ecdsa; do\n"
           "  [ -s $keys/ssh_host_${type}_key ] && [ -s $keys/ssh_host_${type}_key.pub ] || missing=\"$missing $type\"\n"
           "done\n"
           "if [ -n \"$missing\" ]; then\n"
           "  # Made in a folder of their own, synced, then renamed into place and the renames synced:\n"
           "  # a power cut never leaves half a key (what a cut leaves in the folder is made again).\n"
           "  new=$keys/.new\n"
           "  [ ! -e $new ] || rm -rf $new\n"
           "  mkdir -p -m 0700 $keys $new\n"
           "  read -r host < /proc/sys/kernel/hostname\n"
           "  for type in $missing; do\n"
           "    /usr/bin/ssh-keygen -q -t $type -N '' -C \"host key of $host\" -f $new/ssh_host_${type}_key\n"
           "  done\n"
           "  sync $new/*\n"
           "  mv -f $new/* $keys/\n"
           "  sync $keys\n"
           "  rmdir $new\n"
           "  for type in $missing; do echo \"cairn: made the SSH host key $keys/ssh_host_${type}_key\"; done\n"
           "fi\n";
}

std::string sshd_run_script(const Recipe::Ssh& ssh) {
    std::string s = ssh_keygen_script();
    if (ssh.vsock)
        s += "# AF_VSOCK port 22 (sshd has no vsock code: one `sshd -i` per connection), where the kernel has it.\n"
             "for m in vsock vsock_loopback vmw_vsock_virtio_transport hv_sock; do modprobe -q $m 2>/dev/null || true; done\n"
             "if [ -e /dev/vsock ]; then\n"
             "  [ -s /run/sshd-vsock.pid ] && kill \"$(cat /run/sshd-vsock.pid)\" 2>/dev/null || true\n"
             "  /usr/bin/socat VSOCK-LISTEN:22,reuseaddr,fork 'EXEC:/usr/sbin/sshd -i -E /var/log/sshd.log' &\n"
             "  echo $! > /run/sshd-vsock.pid\n"
             "  echo \"cairn: sshd answers on vsock port 22\"\n"
             "fi\n";
    s += "exec /usr/sbin/sshd -D -E /var/log/sshd.log\n";
    return s;
}

nlohmann::json add_ssh_files(Tree& tree, const Recipe& recipe, const fs::path& cache, const fs::path& work_dir) {
    const Recipe::Ssh& ssh = recipe.ssh;
    const std::string& what = ssh.where;
    const Meta file{0, 0, 0644}, exec{0, 0, 0755}, dir{0, 0, 0755};

    std::set<std::string> users = passwd_users(tree, what);
    if (!users.count("sshd"))
        fail(what + ": the image's /etc/passwd has no user 'sshd' (sshd's privilege separation runs as it), such as "
                    "\"sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\"");
    for (const auto& [user, files] : ssh.authorized_keys)
        if (!users.count(user)) fail(what + ": authorized_keys." + user + ": the image's /etc/passwd has no user '" + user + "'");

    nlohmann::json inputs = nlohmann::json::array();
    const fs::path keygen = host_program("ssh-keygen", "openssh-client", what);  // checks the keys on the build host
    for (const char* d : {"/usr", "/usr/sbin", "/usr/bin", "/usr/lib", "/usr/lib/cairn", "/etc", "/etc/ssh", ssh_paths::authorized_keys_dir})
        if (!tree.meta(tree.resolve(d, what))) tree.add_directory(d, dir, what);
    // Debian's openssh-server package, when installed, brings sshd and its systemd unit; else the
    // two programs come out of the packages, and socat serves vsock.
    const bool packaged = tree.meta(tree.resolve(ssh_paths::sshd, what)).has_value();
    if (!packaged) {
        add_host_executable(tree, program_from_deb("openssh-server", "usr/sbin/sshd", cache, work_dir / "sshd", what, inputs), ssh_paths::sshd,
                            exec, what + ": sshd");
        add_host_executable(tree, program_from_deb("openssh-client", "usr/bin/ssh-keygen", cache, work_dir / "ssh-keygen", what, inputs),
                            ssh_paths::keygen, exec, what + ": ssh-keygen");
        if (ssh.vsock) add_host_executable(tree, host_program("socat", "socat", what), ssh_paths::socat, exec, what + ": socat");
    }

    for (const auto& [user, files] : ssh.authorized_keys) {
        std::string keys;
        for (size_t i = 0; i < files.size(); ++i) {
            keys += public_keys(files[i], keygen, what + ": authorized_keys." + user + "[" + std::to_string(i) + "]");
            inputs.push_back({{"ssh_authorized_key", user}, {"sha256", sha256_file_hex(files[i])}});
        }
        tree.add_file(std::string(ssh_paths::authorized_keys_dir) + "/" + user, keys, file, what);
    }
    if (!ssh.trusted_user_ca_keys.empty()) {
        tree.add_file(ssh_paths::user_ca_keys, public_keys(ssh.trusted_user_ca_keys, keygen, what + ": trusted_user_ca_keys"), file, what);
        inputs.push_back({{"ssh_user_ca_keys", true}, {"sha256", sha256_file_hex(ssh.trusted_user_ca_keys)}});
    }
    tree.add_file(ssh_paths::config, sshd_config(ssh), Meta{0, 0, 0600}, what);
    if (!packaged) tree.add_file(ssh_paths::run, sshd_run_script(ssh), exec, what);
    return inputs;
}

}  // namespace cairn::imager
