// The firewall in real network namespaces: a server namespace with the ruleset and listeners, a
// client namespace joined to it by a veth pair (IPv4 and IPv6). Root only; the host's own
// namespace is never touched.
#include "firewall/nftables.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <thread>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Net {
    std::string srv, cli;
    pid_t listener = -1;
    Scratch s;

    Net() {
        const std::string id = std::to_string(::getpid());
        srv = "cairn-fw-srv-" + id;
        cli = "cairn-fw-cli-" + id;
        for (const auto& argv : std::vector<std::vector<std::string>>{
                 {"ip", "netns", "add", srv},
                 {"ip", "netns", "add", cli},
                 {"ip", "-n", srv, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", cli},
                 {"ip", "-n", srv, "addr", "add", "10.231.0.1/24", "dev", "veth0"},
                 {"ip", "-n", cli, "addr", "add", "10.231.0.2/24", "dev", "veth1"},
                 {"ip", "-n", srv, "addr", "add", "fd00:231::1/64", "dev", "veth0", "nodad"},
                 {"ip", "-n", cli, "addr", "add", "fd00:231::2/64", "dev", "veth1", "nodad"},
                 {"ip", "-n", srv, "link", "set", "veth0", "up"},
                 {"ip", "-n", cli, "link", "set", "veth1", "up"},
                 {"ip", "-n", srv, "link", "set", "lo", "up"},
                 {"ip", "-n", cli, "link", "set", "lo", "up"}})
            run_checked(argv);
        listener = listen_on({22, 8080});
    }
    ~Net() {
        if (listener > 0) {
            ::kill(listener, SIGKILL);
            ::waitpid(listener, nullptr, 0);
        }
        run({"ip", "netns", "del", srv});
        run({"ip", "netns", "del", cli});
    }

    static void enter(const std::string& ns) {
        int fd = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) ::_exit(99);
        ::close(fd);
    }

    // A child in the server namespace accepting (and closing) connections on these ports, v4 and v6.
    pid_t listen_on(const std::vector<uint16_t>& ports) {
        pid_t pid = ::fork();
        if (pid == 0) {
            enter(srv);
            std::vector<pollfd> fds;
            for (uint16_t port : ports) {
                int s4 = ::socket(AF_INET, SOCK_STREAM, 0), s6 = ::socket(AF_INET6, SOCK_STREAM, 0);
                int one = 1;
                ::setsockopt(s4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                ::setsockopt(s6, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                ::setsockopt(s6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
                sockaddr_in a4{};
                a4.sin_family = AF_INET;
                a4.sin_port = htons(port);
                sockaddr_in6 a6{};
                a6.sin6_family = AF_INET6;
                a6.sin6_port = htons(port);
                if (::bind(s4, reinterpret_cast<sockaddr*>(&a4), sizeof a4) || ::bind(s6, reinterpret_cast<sockaddr*>(&a6), sizeof a6)) ::_exit(98);
                ::listen(s4, 64);
                ::listen(s6, 64);
                fds.push_back({s4, POLLIN, 0});
                fds.push_back({s6, POLLIN, 0});
            }
            for (;;) {
                ::poll(fds.data(), fds.size(), -1);
                for (auto& p : fds)
                    if (p.revents & POLLIN) {
                        int c = ::accept(p.fd, nullptr, nullptr);
                        if (c >= 0) ::close(c);
                    }
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        return pid;
    }

    // A TCP connect from the client namespace; true when it was accepted within the timeout.
    bool connect(const std::string& address, uint16_t port, int timeout_ms = 1200) {
        pid_t pid = ::fork();
        if (pid == 0) {
            enter(cli);
            bool v6 = address.find(':') != std::string::npos;
            int sock = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            sockaddr_storage ss{};
            socklen_t len;
            if (v6) {
                auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
                a->sin6_family = AF_INET6;
                a->sin6_port = htons(port);
                ::inet_pton(AF_INET6, address.c_str(), &a->sin6_addr);
                len = sizeof *a;
            } else {
                auto* a = reinterpret_cast<sockaddr_in*>(&ss);
                a->sin_family = AF_INET;
                a->sin_port = htons(port);
                ::inet_pton(AF_INET, address.c_str(), &a->sin_addr);
                len = sizeof *a;
            }
            ::connect(sock, reinterpret_cast<sockaddr*>(&ss), len);
            pollfd p{sock, POLLOUT, 0};
            if (::poll(&p, 1, timeout_ms) != 1) ::_exit(1);
            int err = 0;
            socklen_t el = sizeof err;
            ::getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &el);
            ::_exit(err == 0 ? 0 : 1);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }

    RunResult firewall(std::vector<std::string> args) {
        std::vector<std::string> argv = {"ip", "netns", "exec", srv, CAIRN_FIREWALL_BINARY};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv);
    }
    std::string nft_list() { return run_checked({"ip", "netns", "exec", srv, "nft", "list", "ruleset"}); }
    json status() {
        RunResult r = firewall({"status", "--json"});
        return json::parse(r.out);
    }
};

#define NEEDS_ROOT() \
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, nftables)"

}  // namespace

TEST(Firewall, LoadsTheRulesetThatNftShows) {
    NEEDS_ROOT();
    Net n;
    RunResult r = n.firewall({"apply", "--policy", "/nonexistent-is-an-error"});
    EXPECT_EQ(r.exit_code, 2);
    r = n.firewall({"apply"});  // no /etc/cairn/firewall.toml here: the defaults
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string listing = n.nft_list();
    for (const char* line : {"table inet cairn", "type filter hook input priority filter; policy drop;",
                             "ct state invalid", "ct state established,related", "iifname \"lo\"",
                             "icmpv6 type nd-neighbor-solicit", "icmp type echo-request limit rate 5/second",
                             "ip saddr @blocked4", "ip6 saddr @blocked6",
                             "update @ssh_rate4 { ip saddr limit rate over 1/minute burst 3 packets } add @blocked4 { ip saddr timeout 10m }",
                             "tcp dport 22 counter", "type filter hook forward priority filter; policy drop;"})
        EXPECT_NE(listing.find(line), std::string::npos) << line << "\n" << listing;
    json st = n.status();
    EXPECT_TRUE(st["loaded"].get<bool>());
    EXPECT_GT(st["rules"].size(), 10u);
}

TEST(Firewall, LetsSshInAndNothingElse) {
    NEEDS_ROOT();
    Net n;
    EXPECT_TRUE(n.connect("10.231.0.1", 8080));  // no firewall yet: open
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    EXPECT_TRUE(n.connect("10.231.0.1", 22));
    EXPECT_FALSE(n.connect("10.231.0.1", 8080, 600));
    EXPECT_TRUE(n.connect("fd00:231::1", 22));
    EXPECT_FALSE(n.connect("fd00:231::1", 8080, 600));
    // A policy can open more ports.
    write_text(n.s / "fw.toml", "[inbound]\ntcp = [8080]\n");
    ASSERT_EQ(n.firewall({"apply", "--policy", (n.s / "fw.toml").string()}).exit_code, 0);
    EXPECT_TRUE(n.connect("10.231.0.1", 8080));
}

TEST(Firewall, TheFourthNewSshConnectionInAMinuteBlocksTheSource) {
    NEEDS_ROOT();
    Net n;
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    for (int i = 1; i <= 3; ++i) EXPECT_TRUE(n.connect("10.231.0.1", 22)) << "attempt " << i;
    EXPECT_FALSE(n.connect("10.231.0.1", 22)) << "attempt 4";
    EXPECT_FALSE(n.connect("10.231.0.1", 22)) << "attempt 5";
    json st = n.status();
    ASSERT_EQ(st["blocked"].size(), 1u) << st.dump();
    EXPECT_EQ(st["blocked"][0]["address"], "10.231.0.2");
    EXPECT_GT(st["blocked"][0]["expires_ms"].get<uint64_t>(), 500000u);
    std::string text = n.firewall({"status"}).out;
    EXPECT_NE(text.find("10.231.0.2"), std::string::npos) << text;
    EXPECT_NE(n.nft_list().find("10.231.0.2"), std::string::npos);
    // Blocked means blocked for everything, and IPv6 is counted on its own.
    EXPECT_TRUE(n.connect("fd00:231::1", 22));
    // unblock lets it in again.
    RunResult r = n.firewall({"unblock", "10.231.0.2"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(n.connect("10.231.0.1", 22));
    EXPECT_EQ(n.firewall({"unblock", "10.231.0.2"}).exit_code, 1);  // not blocked any more
    EXPECT_EQ(n.firewall({"unblock", "not-an-address"}).exit_code, 1);
}

TEST(Firewall, BlocksIPv6SourcesToo) {
    NEEDS_ROOT();
    Net n;
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    for (int i = 1; i <= 3; ++i) EXPECT_TRUE(n.connect("fd00:231::1", 22)) << "attempt " << i;
    EXPECT_FALSE(n.connect("fd00:231::1", 22));
    json st = n.status();
    ASSERT_EQ(st["blocked"].size(), 1u) << st.dump();
    EXPECT_EQ(st["blocked"][0]["address"], "fd00:231::2");
    EXPECT_TRUE(n.connect("10.231.0.1", 22));
}

TEST(Firewall, ABadPolicyLeavesTheRunningRuleset) {
    NEEDS_ROOT();
    Net n;
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    write_text(n.s / "bad.toml", "[ssh]\nport = 99999\n");
    RunResult r = n.firewall({"apply", "--policy", (n.s / "bad.toml").string()});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("bad.toml:2: ssh.port"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("running ruleset is unchanged"), std::string::npos) << r.err;
    EXPECT_NE(n.nft_list().find("tcp dport 22 counter"), std::string::npos);
    EXPECT_FALSE(n.connect("10.231.0.1", 8080, 600));
}

// Re-applying replaces the table in one transaction: a client hammering a closed port while the
// ruleset is replaced over and over never gets through.
TEST(Firewall, ReapplyingNeverLeavesAGap) {
    NEEDS_ROOT();
    Net n;
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    std::atomic<bool> done{false};
    std::atomic<int> got_through{0}, tries{0};
    std::thread hammer([&] {
        while (!done) {
            if (n.connect("10.231.0.1", 8080, 50)) ++got_through;
            ++tries;
        }
    });
    for (int i = 0; i < 30; ++i) ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    done = true;
    hammer.join();
    EXPECT_GT(tries.load(), 5);
    EXPECT_EQ(got_through.load(), 0);
    EXPECT_TRUE(n.status()["loaded"].get<bool>());
}

TEST(Firewall, StatusSaysWhenNothingIsLoaded) {
    NEEDS_ROOT();
    Net n;
    RunResult r = n.firewall({"status"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("NOT LOADED"), std::string::npos) << r.out;
    r = n.firewall({"apply", "--policy"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("cairn-firewall: apply: --policy needs a value"), std::string::npos) << r.err;
}

// Licence: cairn-firewall links libnftnl (GPL-2.0-or-later) and must not link OpenSSL.
TEST(Firewall, TheProgramDoesNotLinkOpenSsl) {
    std::string needed = run_checked({"readelf", "-d", CAIRN_FIREWALL_BINARY});
    EXPECT_NE(needed.find("libnftnl"), std::string::npos);
    EXPECT_EQ(needed.find("libcrypto"), std::string::npos) << needed;
    EXPECT_EQ(needed.find("libssl"), std::string::npos) << needed;
}
