// What [ssh] writes: sshd's configuration and its start script.
#include "imager/ssh.hpp"

#include <gtest/gtest.h>

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
    // Written under a temporary name, renamed into place after a sync.
    size_t keygen = s.find("ssh-keygen -q -t $type -N '' ");
    ASSERT_NE(keygen, std::string::npos) << s;
    EXPECT_NE(s.find("-f $key.new\n", keygen), std::string::npos);
    EXPECT_LT(s.find("sync", keygen), s.find("mv $key.new $key", keygen));
    EXPECT_NE(s.find("VSOCK-LISTEN:22"), std::string::npos);
    EXPECT_TRUE(has_line(s, "exec /usr/sbin/sshd -D -E /var/log/sshd.log"));

    ssh.vsock = false;
    EXPECT_EQ(sshd_run_script(ssh).find("VSOCK"), std::string::npos);
}
