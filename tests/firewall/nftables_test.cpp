// The firewall in real network namespaces: a server namespace with the ruleset and listeners, a
// client namespace joined to it by a veth pair (IPv4 and IPv6). Root only; the host's own
// namespace is never touched.
#include "firewall/nftables.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <sstream>
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
                 {"ip", "-n", srv, "addr", "add", "fe80::1/64", "dev", "veth0", "nodad"},
                 {"ip", "-n", cli, "addr", "add", "fe80::2/64", "dev", "veth1", "nodad"},
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
    static socklen_t sockaddr_of(const std::string& address, uint16_t port, sockaddr_storage& ss) {
        ss = {};
        if (address.find(':') != std::string::npos) {
            auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
            a->sin6_family = AF_INET6;
            a->sin6_port = htons(port);
            ::inet_pton(AF_INET6, address.c_str(), &a->sin6_addr);
            if (address.rfind("fe80:", 0) == 0 || address.rfind("ff02:", 0) == 0) a->sin6_scope_id = ::if_nametoindex("veth1");
            return sizeof *a;
        }
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        ::inet_pton(AF_INET, address.c_str(), &a->sin_addr);
        return sizeof *a;
    }

    // Runs `f` in a child in the client namespace; its return value is the child's exit status.
    int in_client(const std::function<int()>& f) {
        pid_t pid = ::fork();
        if (pid == 0) {
            enter(cli);
            ::_exit(f());
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
    }

    // A TCP connect from the client namespace (from `source` when given); true when it was
    // accepted within the timeout.
    bool connect(const std::string& address, uint16_t port, int timeout_ms = 1200, const std::string& source = "") {
        pid_t pid = ::fork();
        if (pid == 0) {
            enter(cli);
            bool v6 = address.find(':') != std::string::npos;
            int sock = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            sockaddr_storage ss{};
            if (!source.empty()) {
                socklen_t slen = sockaddr_of(source, 0, ss);
                if (::bind(sock, reinterpret_cast<sockaddr*>(&ss), slen) != 0) ::_exit(97);
            }
            socklen_t len = sockaddr_of(address, port, ss);
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
    // A counter of the server's IPv4 or IPv6 stack (/proc/net/snmp6 "Icmp6InType130",
    // /proc/net/snmp "Icmp" "OutEchoReps"), counted after the firewall let the packet in.
    uint64_t snmp6(const std::string& name) {
        std::istringstream in(run_checked({"ip", "netns", "exec", srv, "cat", "/proc/net/snmp6"}));
        std::string key;
        uint64_t value = 0;
        while (in >> key >> value)
            if (key == name) return value;
        return 0;
    }
    std::string nft_list() { return run_checked({"ip", "netns", "exec", srv, "nft", "list", "ruleset"}); }
    json status() {
        RunResult r = firewall({"status", "--json"});
        return json::parse(r.out);
    }
    uint64_t blocked_ms(const std::string& address) {
        const json st = status();
        for (const json& b : st["blocked"])
            if (b["address"] == address) return b["expires_ms"].get<uint64_t>();
        return 0;
    }
    uint64_t rule_packets(const std::string& comment_part) {
        uint64_t total = 0;
        const json st = status();
        for (const json& r : st["rules"])
            if (r["comment"].get<std::string>().find(comment_part) != std::string::npos) total += r["packets"].get<uint64_t>();
        return total;
    }
};

#define NEEDS_ROOT() \
    if (!is_root()) GTEST_SKIP() << "needs root (network namespaces, nftables)"

// In the client namespace: one MLD message of `type` (130 query, 131/132 MLDv1 report/done,
// 143 MLDv2 report) to ff02::1 on the veth, from `source`, with this hop limit and the
// router-alert hop-by-hop option real MLD carries. 0 when it was sent.
int send_mld(uint8_t type, const std::string& source, int hops) {
    int s = ::socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
    if (s < 0) return 90;
    sockaddr_storage ss{};
    socklen_t len = Net::sockaddr_of(source, 0, ss);
    if (::bind(s, reinterpret_cast<sockaddr*>(&ss), len) != 0) return 91;
    unsigned ifindex = ::if_nametoindex("veth1");
    ::setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex);
    ::setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops);
    const unsigned char hop_by_hop[8] = {0, 0, 5, 2, 0, 0, 1, 0};  // router alert (MLD), PadN
    if (::setsockopt(s, IPPROTO_IPV6, IPV6_HOPOPTS, hop_by_hop, sizeof hop_by_hop) != 0) return 92;
    std::vector<unsigned char> m(type == 130 ? 28 : type == 143 ? 8 : 24, 0);
    m[0] = type;  // the kernel fills in the checksum of an ICMPv6 raw socket
    if (type == 130) {
        m[5] = 100;  // maximum response delay 100 ms; general query (group ::)
        m[24] = 2;   // robustness
        m[25] = 125; // query interval
    } else if (type != 143) {
        const unsigned char group[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2};
        std::memcpy(&m[8], group, 16);
    }
    len = Net::sockaddr_of("ff02::1", 0, ss);
    // Right after the link comes up, IPv6 multicast on it takes a moment (ENETUNREACH until then).
    for (int tries = 0; ::sendto(s, m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) != static_cast<ssize_t>(m.size()); ++tries) {
        if (errno != ENETUNREACH || tries == 50) return 93;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::close(s);
    return 0;
}

uint16_t checksum(const unsigned char* p, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
    if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

// In the client namespace: `count` echo requests to `address`, all with one identifier (one flow,
// as `ping -f` sends), 2 ms apart; the number of replies that came back.
int echo_flood(const std::string& address, int count) {
    const bool v6 = address.find(':') != std::string::npos;
    int s = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_NONBLOCK, v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP});
    if (s < 0) return 250;
    sockaddr_storage ss{};
    socklen_t len = Net::sockaddr_of(address, 0, ss);
    const uint16_t id = static_cast<uint16_t>(::getpid());
    int replies = 0;
    auto drain = [&] {
        unsigned char buf[2048];
        ssize_t n;
        while ((n = ::recv(s, buf, sizeof buf, 0)) > 0) {
            size_t off = v6 ? 0 : static_cast<size_t>(buf[0] & 0x0f) * 4;  // IPv4 raw sockets see the IP header
            if (static_cast<size_t>(n) < off + 8) continue;
            const unsigned char* icmp = buf + off;
            if (icmp[0] == (v6 ? 129 : 0) && (icmp[4] << 8 | icmp[5]) == id) ++replies;
        }
    };
    for (int seq = 0; seq < count; ++seq) {
        unsigned char m[16] = {static_cast<unsigned char>(v6 ? 128 : 8), 0, 0, 0, static_cast<unsigned char>(id >> 8),
                               static_cast<unsigned char>(id), static_cast<unsigned char>(seq >> 8), static_cast<unsigned char>(seq)};
        if (!v6) {
            uint16_t c = checksum(m, sizeof m);
            m[2] = static_cast<unsigned char>(c >> 8);
            m[3] = static_cast<unsigned char>(c);
        }
        ::sendto(s, m, sizeof m, 0, reinterpret_cast<sockaddr*>(&ss), len);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        drain();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    drain();
    return replies;
}

void add_client_addresses(Net& n, const std::vector<std::string>& cidrs) {
    for (const std::string& a : cidrs) run_checked({"ip", "-n", n.cli, "addr", "add", a, "dev", "veth1", "nodad"});
}

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
                             "ip saddr @blocked4", "ip6 saddr & ffff:ffff:ffff:ffff:: == @blocked6",
                             "update @ssh_rate4 { ip saddr limit rate over 1/minute burst 3 packets } counter packets 0 bytes 0 jump ssh_over",
                             "update @ssh_rate6 { ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 1/minute burst 3 packets }",
                             "ip saddr != @ssh_rate4", "add @blocked4 { ip saddr timeout 10m }",
                             "add @blocked6 { ip6 saddr & ffff:ffff:ffff:ffff:: timeout 10m }",
                             "icmpv6 type mld-listener-query ip6 saddr fe80::/10 ip6 hoplimit 1",
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
    EXPECT_EQ(st["blocked"][0]["address"], "fd00:231::/64");
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

// RFC 4890 4.4.1: MLD (queries 130, reports 131, 143, done 132) from a link-local source with
// hop limit 1 must be accepted; the same from another source or with a larger hop limit is not MLD.
TEST(Firewall, AcceptsMldFromLinkLocalSourcesWithHopLimitOne) {
    NEEDS_ROOT();
    Net n;
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    for (uint8_t type : {130, 131, 132, 143}) {
        const std::string counter = "Icmp6InType" + std::to_string(type);  // the server's ICMPv6 layer saw it
        const uint64_t before = n.snmp6(counter);
        ASSERT_EQ(n.in_client([&] { return send_mld(type, "fe80::2", 1); }), 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        EXPECT_EQ(n.snmp6(counter), before + 1) << "type " << int(type) << " from fe80::2 with hop limit 1";
        ASSERT_EQ(n.in_client([&] { return send_mld(type, "fd00:231::2", 1); }), 0);
        ASSERT_EQ(n.in_client([&] { return send_mld(type, "fe80::2", 2); }), 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        EXPECT_EQ(n.snmp6(counter), before + 1) << "type " << int(type) << " from a global source or with hop limit 2";
    }
    EXPECT_EQ(n.rule_packets("mld"), 4u);
}

// Brute-force blocking counts and blocks an IPv6 source by its /64: a client that rotates its
// addresses inside the /64 is blocked all the same.
TEST(Firewall, CountsAndBlocksIPv6ByTheSlash64) {
    NEEDS_ROOT();
    Net n;
    add_client_addresses(n, {"fd00:231::a/64", "fd00:231::b/64", "fd00:231::c/64", "fd00:231::d/64", "fd00:231::e/64"});
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    for (const char* source : {"fd00:231::a", "fd00:231::b", "fd00:231::c"}) EXPECT_TRUE(n.connect("fd00:231::1", 22, 1200, source)) << source;
    EXPECT_FALSE(n.connect("fd00:231::1", 22, 1200, "fd00:231::d")) << "the fourth address of the /64";
    EXPECT_FALSE(n.connect("fd00:231::1", 22, 1200, "fd00:231::e")) << "the whole /64 is blocked";
    EXPECT_GT(n.blocked_ms("fd00:231::/64"), 500000u) << n.status().dump();
    EXPECT_TRUE(n.connect("10.231.0.1", 22));
    // unblock takes any address of the /64 (or the prefix) and frees the whole /64.
    RunResult r = n.firewall({"unblock", "fd00:231::77"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(n.connect("fd00:231::1", 22, 1200, "fd00:231::e"));
}

// When the rate set is full, a new SSH connection from a source it cannot count is dropped, not
// let through uncounted.
TEST(Firewall, AFullRateSetDropsNewSshConnections) {
    NEEDS_ROOT();
    Net n;
    add_client_addresses(n, {"10.231.0.3/24", "10.231.0.4/24"});
    write_text(n.s / "fw.toml", "[ssh.brute_force]\nmax_sources = 2\n");
    RunResult r = n.firewall({"apply", "--policy", (n.s / "fw.toml").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    add_client_addresses(n, {"fd00:231::77/64"});
    EXPECT_TRUE(n.connect("10.231.0.1", 22, 1200, "10.231.0.2"));
    EXPECT_TRUE(n.connect("10.231.0.1", 22, 1200, "10.231.0.3"));
    EXPECT_FALSE(n.connect("10.231.0.1", 22, 1200, "10.231.0.4")) << "a third source with a rate set of two";
    EXPECT_TRUE(n.connect("10.231.0.1", 22, 1200, "10.231.0.2")) << "a counted source still gets in";
    EXPECT_GE(n.rule_packets("rate set full (IPv4)"), 1u);
    // IPv6 counts /64s: two of them fill the set, a third /64 is dropped.
    add_client_addresses(n, {"fd00:231:0:1::2/128", "fd00:231:0:2::2/128"});
    run_checked({"ip", "-n", n.srv, "-6", "route", "add", "fd00:231::/48", "dev", "veth0"});
    EXPECT_TRUE(n.connect("fd00:231::1", 22, 1200, "fd00:231::2"));
    EXPECT_TRUE(n.connect("fd00:231::1", 22, 1200, "fd00:231:0:1::2"));
    EXPECT_FALSE(n.connect("fd00:231::1", 22, 1200, "fd00:231:0:2::2")) << "a third /64 with a rate set of two";
    EXPECT_TRUE(n.connect("fd00:231::1", 22, 1200, "fd00:231::77")) << "an address of a counted /64";
    EXPECT_GE(n.rule_packets("rate set full (IPv6)"), 1u);
}

// Re-applying (the same policy, or a changed one) keeps the blocked sources with their remaining
// time, and an unchanged policy keeps the rate counters too.
TEST(Firewall, ReapplyingKeepsTheBlocklistAndTheRates) {
    NEEDS_ROOT();
    Net n;
    add_client_addresses(n, {"10.231.0.3/24"});
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    for (int i = 1; i <= 3; ++i) EXPECT_TRUE(n.connect("10.231.0.1", 22)) << "attempt " << i;
    EXPECT_FALSE(n.connect("10.231.0.1", 22));
    for (int i = 1; i <= 3; ++i) EXPECT_TRUE(n.connect("fd00:231::1", 22)) << "attempt " << i;
    EXPECT_FALSE(n.connect("fd00:231::1", 22));
    for (int i = 1; i <= 2; ++i) EXPECT_TRUE(n.connect("10.231.0.1", 22, 1200, "10.231.0.3")) << "attempt " << i;
    const uint64_t left4 = n.blocked_ms("10.231.0.2"), left6 = n.blocked_ms("fd00:231::/64");
    ASSERT_GT(left4, 0u) << n.status().dump();
    ASSERT_GT(left6, 0u);
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));

    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    const uint64_t again4 = n.blocked_ms("10.231.0.2"), again6 = n.blocked_ms("fd00:231::/64");
    EXPECT_GT(again4, 0u) << n.status().dump();
    EXPECT_LT(again4, left4);
    EXPECT_GT(again6, 0u);
    EXPECT_LT(again6, left6);
    EXPECT_FALSE(n.connect("10.231.0.1", 22, 600));
    EXPECT_FALSE(n.connect("fd00:231::1", 22, 600));
    // 10.231.0.3 keeps its count: its third connection is let in, its fourth blocks it.
    EXPECT_TRUE(n.connect("10.231.0.1", 22, 1200, "10.231.0.3"));
    EXPECT_FALSE(n.connect("10.231.0.1", 22, 1200, "10.231.0.3"));

    // A changed policy (a longer block, another port) keeps the blocked sources, never longer.
    write_text(n.s / "fw.toml", "[ssh.brute_force]\nblock = \"20m\"\nwindow = \"2m\"\n[inbound]\ntcp = [8080]\n");
    RunResult r = n.firewall({"apply", "--policy", (n.s / "fw.toml").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GT(n.blocked_ms("10.231.0.2"), 0u) << n.status().dump();
    EXPECT_LE(n.blocked_ms("10.231.0.2"), again4);
    EXPECT_GT(n.blocked_ms("fd00:231::/64"), 0u);
    EXPECT_LE(n.blocked_ms("fd00:231::/64"), again6);
    EXPECT_GT(n.blocked_ms("10.231.0.3"), 0u);
    EXPECT_FALSE(n.connect("10.231.0.1", 8080, 600)) << "blocked means blocked for every port";
    EXPECT_NE(n.nft_list().find("timeout 20m"), std::string::npos);
}

// A changed blocklist set is replaced with every entry carried over, in one batch, however many.
TEST(Firewall, ReapplyingCarriesAThousandsLongBlocklist) {
    NEEDS_ROOT();
    Net n;
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);
    std::string elements;
    for (int i = 0; i < 6000; ++i)
        elements += (i ? ", " : "") + ("10.40." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1)) + " timeout 5m";
    write_text(n.s / "many.nft", "add element inet cairn blocked4 { " + elements + " }\n");
    run_checked({"ip", "netns", "exec", n.srv, "nft", "-f", (n.s / "many.nft").string()});
    write_text(n.s / "fw.toml", "[ssh.brute_force]\nblock = \"20m\"\n");
    RunResult r = n.firewall({"apply", "--policy", (n.s / "fw.toml").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("6000 blocked kept"), std::string::npos) << r.out;
    json st = n.status();
    EXPECT_EQ(st["blocked"].size(), 6000u);
    uint64_t most = 0;
    for (const json& b : st["blocked"]) most = std::max(most, b["expires_ms"].get<uint64_t>());
    EXPECT_LE(most, 300000u);
}

// docs/firewall.md: "echo-request accept, rate-limited" holds per packet, also inside one flow.
TEST(Firewall, TheEchoLimitHoldsWithinOneFlow) {
    NEEDS_ROOT();
    Net n;
    ASSERT_EQ(n.firewall({"apply"}).exit_code, 0);  // 5 per second
    for (const char* address : {"10.231.0.1", "fd00:231::1"}) {
        // 100 requests in about 0.5 s: the bucket (5) and its refill (5/s) allow about 8. The
        // bound follows the time the flood really took (a busy machine sends more slowly).
        const auto start = std::chrono::steady_clock::now();
        const int replies = n.in_client([&] { return echo_flood(address, 100); });
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_GE(replies, 1) << address;
        EXPECT_LE(replies, 5 + static_cast<int>(5 * seconds) + 2) << address << ", " << seconds << " s";
        EXPECT_LT(replies, 50) << address;
        std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // refill for the next family
    }
}

// At boot, a policy that cannot be loaded falls back to the built-in lockdown (exit 3), loudly.
TEST(Firewall, BootFallsBackToTheLockdownOnABadPolicy) {
    NEEDS_ROOT();
    Net n;
    write_text(n.s / "bad.toml", "[inbound]\ntcp = [8080]\n[ssh]\nport = 99999\n");
    RunResult r = n.firewall({"apply", "--boot", "--policy", (n.s / "bad.toml").string()});
    EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
    EXPECT_NE(r.err.find("bad.toml:4: ssh.port"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("falling back to the built-in lockdown"), std::string::npos) << r.err;
    EXPECT_TRUE(n.connect("10.231.0.1", 22));
    EXPECT_FALSE(n.connect("10.231.0.1", 8080, 600));
    EXPECT_TRUE(n.connect("fd00:231::1", 22));
    EXPECT_FALSE(n.connect("fd00:231::1", 8080, 600));
    EXPECT_EQ(n.firewall({"status"}).exit_code, 0);
    // A good policy at boot is simply loaded.
    write_text(n.s / "good.toml", "[inbound]\ntcp = [8080]\n");
    r = n.firewall({"apply", "--boot", "--policy", (n.s / "good.toml").string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(n.connect("10.231.0.1", 8080));
}

// Exit 1 from `apply --boot` means nothing could be loaded (here: no CAP_NET_ADMIN).
TEST(Firewall, BootSaysWhenNothingCouldBeLoaded) {
    NEEDS_ROOT();
    Net n;
    write_text(n.s / "bad.toml", "[ssh]\nport = 0\n");
    fs::permissions(n.s.path(), fs::perms::others_exec, fs::perm_options::add);
    fs::permissions(n.s / "bad.toml", fs::perms::others_read, fs::perm_options::add);
    RunResult r = run({"ip", "netns", "exec", n.srv, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                       "--bounding-set=-all", CAIRN_FIREWALL_BINARY, "apply", "--boot", "--policy", (n.s / "bad.toml").string()});
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find("falling back to the built-in lockdown"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("NO FIREWALL"), std::string::npos) << r.err;
    EXPECT_EQ(n.firewall({"status"}).exit_code, 1);
}

// Licence: cairn-firewall links libnftnl (GPL-2.0-or-later) and must not link OpenSSL.
TEST(Firewall, TheProgramDoesNotLinkOpenSsl) {
    std::string needed = run_checked({"readelf", "-d", CAIRN_FIREWALL_BINARY});
    EXPECT_NE(needed.find("libnftnl"), std::string::npos);
    EXPECT_EQ(needed.find("libcrypto"), std::string::npos) << needed;
    EXPECT_EQ(needed.find("libssl"), std::string::npos) << needed;
}
