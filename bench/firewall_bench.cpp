// Whole-ruleset apply latency: Cairn's libnftnl batch (in-process, and the cairn-firewall program)
// against `nft -f` of the same rules (the listing nft itself prints of Cairn's table), in the same
// run, in a private network namespace. Prints medians and ratios. Root only.
// Usage: firewall_bench [RUNS=50]
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "firewall/nftables.hpp"

using namespace cairn;
using Clock = std::chrono::steady_clock;

namespace {
template <typename F>
double median_ms(int runs, F f) {
    std::vector<double> t;
    for (int i = 0; i < runs; ++i) {
        auto t0 = Clock::now();
        f();
        t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
    const int runs = argc > 1 ? std::atoi(argv[1]) : 50;
    if (::geteuid() != 0) {
        std::fprintf(stderr, "firewall_bench: needs root (a network namespace, nftables)\n");
        return 2;
    }
    if (::unshare(CLONE_NEWNET) != 0) {
        std::perror("unshare(CLONE_NEWNET)");
        return 1;
    }
    try {
        firewall::Policy policy;
        firewall::apply(policy);
        // The same rules as nft text: what nft prints of our table, counters zeroed, with a flush.
        std::string listing = run_checked({"nft", "-s", "list", "table", "inet", "cairn"});
        TempDir dir("/tmp");
        write_file_atomic(dir.path() / "rules.nft", "table inet cairn\ndelete table inet cairn\n" + listing);
        std::string self = std::string(argv[0]);
        std::string program = self.substr(0, self.rfind('/')) + "/../firewall/cairn-firewall";

        double ours = median_ms(runs, [&] { firewall::apply(policy); });
        double ours_program = median_ms(runs, [&] { run_checked({program, "apply", "--policy", "/dev/null"}); });
        double nft = median_ms(runs, [&] { run_checked({"nft", "-f", (dir.path() / "rules.nft").string()}); });
        std::printf("Whole-ruleset apply (table inet cairn, %d runs, medians)\n", runs);
        std::printf("  cairn, libnftnl batch in-process   %7.2f ms   (goal <= 5 ms)\n", ours);
        std::printf("  cairn-firewall apply (a process)   %7.2f ms\n", ours_program);
        std::printf("  nft -f (same rules)                %7.2f ms\n", nft);
        std::printf("  nft -f / cairn in-process: %.1fx;  nft -f / cairn-firewall: %.1fx\n", nft / ours, nft / ours_program);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "firewall_bench: %s\n", e.what());
        return 1;
    }
}
