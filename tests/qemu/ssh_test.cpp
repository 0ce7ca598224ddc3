// SSH into an image Cairn builds (CTest label `qemu`), from the host through QEMU's user-network
// forward, with the host's OpenSSH client: the recipe's key and a certificate from its user CA log
// in; passwords are refused; rapid new connections get the source (QEMU's 10.0.2.2) blocked by the
// firewall; other forwarded ports are closed; sshd answers on vsock inside the guest.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

TEST(Ssh, KeysAndCertificatesOnlyAndBruteForceSourcesAreBlocked) {
    Booted b("minimal-debug");
    const uint16_t ssh_port = free_port(), other_port = free_port();
    b.forwards = {{ssh_port, 22}, {other_port, 7777}};
    qemu::Machine& m = b.start();
    wait_for_shell(m);
    m.wait_for("cairn: network eth0 10.0.2.15/24", 120s);
    wait_for_sshd(m);
    std::string made = m.console();
    EXPECT_NE(made.find("cairn: made the SSH host key /var/lib/cairn/ssh/ssh_host_ed25519_key"), std::string::npos)
        << "host keys are made on the first boot";

    // Something listens on 7777 in the guest, but the firewall lets in SSH only.
    shell(m, "{ while :; do echo other-port | nc -l -p 7777; done & }");
    EXPECT_EQ(read_from(other_port, 5s), "") << "a forwarded port other than SSH answered";

    Scratch keys;
    const fs::path admin = test_private_key(keys.path(), "ssh-admin");
    const fs::path ca = test_private_key(keys.path(), "ssh-user-ca");
    run_checked({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test user", "-f", (keys / "user").string()});
    run_checked({"ssh-keygen", "-q", "-s", ca.string(), "-I", "test-user", "-n", "root", "-V", "-5m:+1h", (keys / "user.pub").string()});
    run_checked({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", (keys / "stranger").string()});

    // 1: the recipe's key.
    RunResult r = run(ssh_command(ssh_port, {"-i", admin.string()}, "echo key-login-$(id -u); ls /var/lib/cairn/ssh; cat /etc/resolv.conf"));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("key-login-0"), std::string::npos) << r.out << r.err;
    EXPECT_NE(r.out.find("ssh_host_ed25519_key.pub"), std::string::npos) << "host keys live on the data partition: " << r.out;
    EXPECT_NE(r.out.find("nameserver 10.0.2.3"), std::string::npos) << "the DHCP lease's DNS server is used: " << r.out;
    // 2: a certificate from the recipe's user CA (the key itself is in no authorized_keys).
    r = run(ssh_command(ssh_port, {"-i", (keys / "user").string()}, "echo cert-login"));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("cert-login"), std::string::npos) << r.out << r.err;
    // 3: a key sshd does not know, then a password (ssh-askpass answers for the user): refused,
    // and sshd offers nothing but public keys.
    fs::path askpass = keys / "askpass";
    write_file_atomic(askpass, "#!/bin/sh\necho guessed-password\n", 0755);
    RunOptions with_password;
    with_password.extra_env = {"SSH_ASKPASS=" + askpass.string(), "SSH_ASKPASS_REQUIRE=force", "DISPLAY=none"};
    r = run(ssh_command(ssh_port, {"-i", (keys / "stranger").string(), "-o", "PreferredAuthentications=publickey,keyboard-interactive,password"},
                        "true"), with_password);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("Permission denied (publickey)"), std::string::npos) << r.err;

    // More new connections from the same source within the minute: it gets blocked, and even the
    // right key no longer reaches sshd. (Connections 1-3 above already count; slower machines may
    // need a few more to fill the window.)
    int answered = 0;
    bool blocked = false;
    for (int i = 0; i < 8 && !blocked; ++i) {
        std::string banner = read_from(ssh_port, 5s);
        if (banner.rfind("SSH-2.0-", 0) == 0) ++answered;
        else blocked = true;
    }
    EXPECT_TRUE(blocked) << "rapid connections were never blocked (" << answered << " answered)";
    r = run(ssh_command(ssh_port, {"-o", "ConnectTimeout=10", "-i", admin.string()}, "true"));
    EXPECT_NE(r.exit_code, 0) << "a blocked source still logged in";
    std::string status = shell(m, "cairn-firewall status");
    EXPECT_NE(status.find("10.0.2.2"), std::string::npos) << status;

    // sshd also answers on vsock (loopback inside the guest; vsock never passes the firewall).
    std::string vsock = shell(m, "socat -T5 - VSOCK-CONNECT:1:22 </dev/null", 60s);
    EXPECT_NE(vsock.find("SSH-2.0-OpenSSH_"), std::string::npos) << vsock;
}
