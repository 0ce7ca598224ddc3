// What [ssh] writes: sshd's configuration and its start script.
#include "imager/ssh.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <utility>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::imager;

namespace {

bool has_line(const std::string& text, const std::string& line) { return ("\n" + text).find("\n" + line + "\n") != std::string::npos; }

}  // namespace

TEST(SshConfig, KeysAndCertificatesOnly) {
    Recipe::Ssh ssh;
    ssh.authorized_keys["root"] = {"admin.pub"};
    std::string c = sshd_config(ssh);
    for (const char* line : {"PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitEmptyPasswords no", "UsePAM no",
                             "AuthenticationMethods publickey", "PermitRootLogin prohibit-password", "HostbasedAuthentication no",
                             "AuthorizedKeysFile /etc/ssh/authorized_keys/%u",
                             "HostKey /var/lib/cairn/ssh/ssh_host_ed25519_key"})
        EXPECT_TRUE(has_line(c, line)) << line << " missing from:\n" << c;
    EXPECT_EQ(c.find("TrustedUserCAKeys"), std::string::npos) << "no CA given, none trusted";

    ssh.trusted_user_ca_keys = "ca.pub";
    EXPECT_TRUE(has_line(sshd_config(ssh), "TrustedUserCAKeys /etc/ssh/trusted_user_ca_keys"));
}

TEST(SshConfig, HostKeysAreMadeOnTheDeviceAndVsockIsOptional) {
    Recipe::Ssh ssh;
    std::string s = sshd_run_script(ssh);
    EXPECT_EQ(s.rfind("#!/bin/sh\n", 0), 0u);
    EXPECT_NE(s.find("keys=/var/lib/cairn/ssh"), std::string::npos);
    // Written in a temporary folder, renamed into place after a sync (SshKeygenScript runs it).
    size_t keygen = s.find("ssh-keygen -q -t $type -N '' ");
    ASSERT_NE(keygen, std::string::npos) << s;
    EXPECT_LT(s.find("sync $new/*", keygen), s.find("mv -f $new/* $keys/", keygen));
    EXPECT_NE(s.find("VSOCK-LISTEN:22"), std::string::npos);
    EXPECT_TRUE(has_line(s, "exec /usr/sbin/sshd -D -E /var/log/sshd.log"));

    ssh.vsock = false;
    EXPECT_EQ(sshd_run_script(ssh).find("VSOCK"), std::string::npos);
}

namespace {

// Runs the host key script as the device runs it, with the data partition's /var and /run in
// folders of `dir` (bubblewrap: the build host's own /var and /run are not touched).
cairn::RunResult run_keygen(const std::filesystem::path& dir) {
    for (const char* d : {"var", "run", "bin"}) std::filesystem::create_directories(dir / d);
    cairn::test::write_text(dir / "bin" / "keygen", ssh_keygen_script());
    return cairn::run({"bwrap", "--dev-bind", "/", "/", "--bind", (dir / "var").string(), "/var", "--bind", (dir / "run").string(), "/run",
                       "--proc", "/proc", "--unshare-pid", "--die-with-parent", "sh", (dir / "bin" / "keygen").string()});
}

std::string key_file(const std::filesystem::path& dir, const std::string& name) {
    return cairn::read_file(dir / "var/lib/cairn/ssh" / name);
}

}  // namespace

TEST(SshKeygenScript, MakesMissingKeysOnceKeepsMadeOnesAndCleansUpACutShort) {
    if (!cairn::test::is_root()) GTEST_SKIP() << "needs root (bubblewrap binds over /var and /run)";
    cairn::test::Scratch dir;
    const std::filesystem::path keys = dir / "var/lib/cairn/ssh";

    // First boot: both keys, in a folder only root reads, nothing left under a temporary name.
    cairn::RunResult r = run_keygen(dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    for (const auto& [type, public_prefix] : {std::pair{"ed25519", "ssh-ed25519 "}, std::pair{"ecdsa", "ecdsa-sha2-nistp256 "}}) {
        const std::string key = std::string("ssh_host_") + type + "_key";
        EXPECT_NE(r.out.find("cairn: made the SSH host key /var/lib/cairn/ssh/" + key + "\n"), std::string::npos) << r.out;
        EXPECT_NE(key_file(dir.path(), key).find("PRIVATE KEY"), std::string::npos);
        EXPECT_EQ(key_file(dir.path(), key + ".pub").rfind(public_prefix, 0), 0u);
    }
    EXPECT_EQ(std::filesystem::status(keys).permissions() & std::filesystem::perms::all, std::filesystem::perms::owner_all);
    EXPECT_FALSE(std::filesystem::exists(keys / ".new"));
    EXPECT_TRUE(std::filesystem::is_directory(dir / "run/sshd"));
    const std::string ed25519 = key_file(dir.path(), "ssh_host_ed25519_key");

    // Every later boot: nothing made, nothing said.
    r = run_keygen(dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(key_file(dir.path(), "ssh_host_ed25519_key"), ed25519);

    // A key lost (an empty public half), and what a power cut during a first boot leaves in the
    // temporary folder: only the lost key is made again, the other one stays, the folder goes.
    cairn::test::write_text(keys / "ssh_host_ecdsa_key.pub", "");
    cairn::test::write_text(keys / ".new/ssh_host_ecdsa_key", "half a key");
    r = run_keygen(dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(r.out, "cairn: made the SSH host key /var/lib/cairn/ssh/ssh_host_ecdsa_key\n");
    EXPECT_EQ(key_file(dir.path(), "ssh_host_ed25519_key"), ed25519);
    EXPECT_EQ(key_file(dir.path(), "ssh_host_ecdsa_key.pub").rfind("ecdsa-sha2-nistp256 ", 0), 0u);
    EXPECT_NE(key_file(dir.path(), "ssh_host_ecdsa_key").find("PRIVATE KEY"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(keys / ".new"));
}
