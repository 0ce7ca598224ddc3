// Installs from a server (issue 15's numbers), all in one run, with the update engine on a disk
// image file (a fake boot control, as the updater's tests use) and Debian's nginx on loopback:
//
//   stream   a 256 MiB root streamed from nginx over TLS (cairn-updated's install_url) against
//            the local-file install of the same bundle into the same slot (goal: ≤ 1.2× its time),
//            slot b wiped before each run so that nothing is reused; median of RUNS each;
//   memory   the peak resident memory of a streaming install of a 64 MiB and a 256 MiB root, each
//            in a process of its own (it must not grow with the bundle);
//   resume   a cut at 50 % of the root (through a fault-injecting proxy, no retry), then the same
//            install again: the bytes downloaded twice (goal: ≤ one block plus what was in flight);
//   scattered 1 block in 16 of a 64 MiB root changed (1024 runs to fetch), through a proxy that
//            adds 20 ms to every request (a link's round trip): up to 64 ranges a request
//            (multipart/byteranges) against one range a request, time and requests;
//   delta    with OLD_DISK and NEW_BUNDLE (bench/update-delta builds them: the minimal recipe and
//            the same recipe with one package changed): a copy of OLD_DISK runs slot a, NEW_BUNDLE is
//            installed into slot b from nginx, by blocks alone and then, given DELTA (`cairn delta`
//            from the old build's bundle), with it beside the bundle; bytes downloaded against the
//            bundle, the slot's payloads and, given ZSTD_PATCH_BYTES, the size of `zstd --patch-from`
//            old→new root.
//
// Usage: update_stream_bench [RUNS=3] [OLD_DISK NEW_BUNDLE [ZSTD_PATCH_BYTES [DELTA]]]
//        update_stream_bench scattered        (that section alone)
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "partitions/disk.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/update_fixture.hpp"
#include "updater/engine.hpp"
#include "updater/fake_boot_control.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Bench {
    fs::path dir;
    UpdateFixture fixture;
    FakeBootControl boot;
    EngineConfig config;
    HttpSettings http;

    Bench(const fs::path& d, uint64_t root_partition)
        : dir(d), fixture((fs::create_directories(d), d), root_partition) {
        config.disk = fixture.disk;
        config.state_file = dir / "state/status.json";
        config.trust_anchor = fixture.trust_anchor;
        config.etc_upper = dir / "etc-upper";
        config.boot_id_file = dir / "boot_id";
        config.release.compatible = "cairn-test";
        config.release.version = "1.0";
        write_file_atomic(config.boot_id_file, "bench\n");
        Engine(boot, config).on_boot();
    }
    void wipe_slot_b() {
        UniqueFd fd = open_file(fixture.disk, O_RDWR);
        for (const auto& e : partitions::read_gpt(fixture.disk).entries) {
            if (e.label != "root_b" && e.label != "root_b_verity" && e.label != "esp_b") continue;
            std::vector<char> zeros(4 * MiB, 0);
            for (uint64_t at = 0; at < e.size; at += zeros.size())
                pwrite_exact(fd.get(), zeros.data(), std::min<uint64_t>(zeros.size(), e.size - at), e.offset + at,
                             "wipe");
        }
        ::fsync(fd.get());
        std::error_code ec;
        fs::remove(config.state_file, ec);
        boot = FakeBootControl();
        Engine(boot, config).on_boot();
    }
    double install_file(const fs::path& bundle) {
        const auto t0 = std::chrono::steady_clock::now();
        Engine(boot, config).install(bundle, {}, {});
        return seconds_since(t0);
    }
    double install_url(const std::string& url) {
        const auto t0 = std::chrono::steady_clock::now();
        Engine(boot, config).install_url(url, http, {}, {});
        return seconds_since(t0);
    }
    Transfer transfer() { return *Engine(boot, config).status().last->transfer; }
};

// `update_stream_bench --install-only DISK STATE TRUST_ANCHOR URL CA`: one streaming install and
// nothing else in the process, so that its peak resident memory is the install's.
int install_only(char** argv) {
    EngineConfig c;
    c.disk = argv[2];
    c.state_file = argv[3];
    c.trust_anchor = argv[4];
    c.etc_upper = fs::path(argv[3]).parent_path() / "none";
    c.boot_id_file = fs::path(argv[3]).parent_path() / "boot_id";
    fs::create_directories(fs::path(argv[3]).parent_path());
    write_file_atomic(c.boot_id_file, "bench\n");
    c.release.compatible = "cairn-test";
    c.release.version = "1.0";
    HttpSettings http;
    http.ca_bundle = argv[6];
    FakeBootControl boot;
    Engine(boot, c).on_boot();
    // The peak of this process's own memory (VmHWM): getrusage's ru_maxrss carries the parent's
    // resident set at fork across exec.
    auto high_water_kib = [] {
        const std::string status = read_file("/proc/self/status");
        const size_t at = status.find("VmHWM:");
        return at == std::string::npos ? -1L : std::atol(status.c_str() + at + 6);
    };
    const long before = high_water_kib();
    Engine(boot, c).install_url(argv[5], http, {}, {});
    std::printf("peak %ld before %ld\n", high_water_kib(), before);
    return 0;
}

// Peak resident memory (KiB) of a process that only streams a bundle with a root of `mib` MiB,
// and what it had before the install; {-1, -1} when it failed.
std::pair<long, long> streaming_peak_kib(const fs::path& dir, uint64_t mib, const TestPki& pki, const Nginx& nginx) {
    Bench b(dir, (mib + 8) * MiB);
    const fs::path bundle = b.fixture.bundle("2.0", "cairn-test", {}, mib * MiB);
    const std::string name = "m" + std::to_string(mib) + ".cairn";
    fs::create_symlink(bundle, nginx.www() / name);
    const RunResult r = run({fs::read_symlink("/proc/self/exe").string(), "--install-only", b.fixture.disk.string(),
                             (dir / "child-state/status.json").string(), b.fixture.trust_anchor.string(),
                             nginx.https_url(name), (pki / "root.pem").string()});
    long peak = -1, before = -1;
    if (r.exit_code != 0 || std::sscanf(r.out.c_str(), "peak %ld before %ld", &peak, &before) != 2)
        std::fprintf(stderr, "memory run: %s%s\n", r.out.c_str(), r.err.c_str());
    return {peak, before};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 7 && std::string(argv[1]) == "--install-only") return install_only(argv);
    const bool scattered_only = argc > 1 && std::string(argv[1]) == "scattered";
    // `update_stream_bench delta OLD_DISK NEW_BUNDLE [ZSTD_PATCH_BYTES [DELTA]]`: the delta section alone.
    const bool delta_only = argc > 3 && std::string(argv[1]) == "delta";
    const int runs = argc > 1 && !scattered_only ? std::max(1, std::atoi(argv[1])) : 3;
    const fs::path work = fs::path("/var/tmp") / ("cairn-stream-bench-" + std::to_string(::getpid()));
    fs::create_directories(work);
    try {
        TestPki pki(work / "pki");
        Nginx nginx(work / "nginx", pki);
        // scattered: many small runs over a link with a round trip
        if (!delta_only) {
            Bench sc(work / "scatter", 72 * MiB);
            sc.fixture.root_bytes = [](const std::string& version, uint64_t size) {
                std::string bytes(size, '\0');
                std::mt19937_64 random(5);
                for (size_t i = 0; i + 8 <= size; i += 8) {
                    const uint64_t v = random();
                    std::memcpy(bytes.data() + i, &v, 8);
                }
                if (version == "2.0")
                    for (uint64_t k = 0; k < size / 4096; k += 16) bytes[k * 4096 + 100] ^= 1;  // 1 block in 16
                return bytes;
            };
            sc.fixture.bundle("1.0", "cairn-test", {}, 64 * MiB);
            sc.fixture.put("1.0", 'a');
            fs::create_symlink(sc.fixture.bundle("2.0", "cairn-test", {}, 64 * MiB), nginx.www() / "s.cairn");
            FaultProxy proxy(nginx.http_port());
            const int latency = 20;
            proxy.set_latency(latency);
            sc.http.allow_http = true;
            std::printf(
                "scattered: 1 block in 16 changed over a 64 MiB root (1024 runs), %d ms added to every request\n",
                latency);
            double times[2];
            size_t requests[2];
            for (bool multi : {true, false}) {
                sc.wipe_slot_b();
                sc.http.multi_range = multi;
                const std::string log_before = nginx.access_log();
                times[multi] = sc.install_url(proxy.url("s.cairn"));
                const std::string log_after = nginx.access_log();
                requests[multi] = static_cast<size_t>(std::count(log_after.begin(), log_after.end(), '\n') -
                                                      std::count(log_before.begin(), log_before.end(), '\n'));
            }
            std::printf("  one range a request      %.2f s, %zu requests\n", times[0], requests[0]);
            std::printf("  up to 64 ranges a request %.2f s, %zu requests\n", times[1], requests[1]);
            std::printf("  ratio %.2f\n", times[1] / times[0]);
        }

        if (!scattered_only) {
            // stream against file
            Bench b(work / "main", 264 * MiB);
            const fs::path bundle = b.fixture.bundle("2.0", "cairn-test", {}, 256 * MiB);
            fs::create_symlink(bundle, nginx.www() / "b.cairn");
            b.http.ca_bundle = pki / "root.pem";
            if (!delta_only) {
            std::vector<double> file_times, stream_times;
            for (int i = 0; i < runs; ++i) {
                b.wipe_slot_b();
                file_times.push_back(b.install_file(bundle));
                b.wipe_slot_b();
                stream_times.push_back(b.install_url(nginx.https_url("b.cairn")));
            }
            const Transfer full = b.transfer();
            const double f = median(file_times), s = median(stream_times);
            std::printf("stream: 256 MiB root, median of %d\n", runs);
            std::printf(
                "  local file  %.2f s\n  from nginx  %.2f s (HTTPS, %llu bytes downloaded)\n  ratio %.2f (goal <= "
                "1.2)\n",
                f, s, static_cast<unsigned long long>(full.downloaded), s / f);

            // memory
            std::printf("memory: peak resident set of a process doing one streaming install\n");
            for (uint64_t mib : {64, 256}) {
                const auto [peak, before] = streaming_peak_kib(work / ("m" + std::to_string(mib)), mib, pki, nginx);
                std::printf("  %3llu MiB root: %.1f MiB (%.1f MiB before the install)\n",
                            static_cast<unsigned long long>(mib), peak / 1024.0, before / 1024.0);
            }

            // resume
            b.wipe_slot_b();
            b.http.allow_http = true;
            const BundleReader reader(bundle, b.fixture.trust_anchor);
            const Payload& root = *reader.manifest().find("root", "b");
            uint64_t first = 0;
            {
                FaultProxy proxy(nginx.http_port());
                proxy.add(Fault{Fault::Kind::cut, root.offset + root.size / 2});
                b.http.max_attempts = 1;
                try {
                    b.install_url(proxy.url("b.cairn"));
                } catch (const std::exception&) {
                }
                first = b.transfer().downloaded;
            }
            b.http.max_attempts = 8;
            b.install_url(nginx.https_url("b.cairn"));
            const uint64_t second = b.transfer().downloaded;
            const long long again = static_cast<long long>(first + second) - static_cast<long long>(full.downloaded);
            std::printf("resume: cut at 50 %% of the root, then the same install\n");
            std::printf("  first try %llu bytes, second %llu, one uncut install %llu: %lld bytes downloaded twice\n",
                        static_cast<unsigned long long>(first), static_cast<unsigned long long>(second),
                        static_cast<unsigned long long>(full.downloaded), again);
            std::printf(
                "  (every try fetches the head: header, manifest and signature; goal: the rest <= one 4 KiB block + "
                "what was in flight)\n");

            }

            // delta ("delta" in the place of RUNS)
            if (argc > 3) {
                const fs::path old_disk = argv[2], new_bundle = argv[3];
                const BundleReader nb(new_bundle, b.fixture.trust_anchor);
                const uint64_t bundle_bytes = fs::file_size(new_bundle);
                const double zstd = argc > 4 ? std::atof(argv[4]) : 0;
                const fs::path delta_file = argc > 5 ? fs::path(argv[5]) : fs::path();
                fs::create_symlink(fs::absolute(new_bundle), nginx.www() / "delta.cairn");
                // A copy of the old disk runs slot a; the new bundle goes into slot b from nginx:
                // adaptive alone, then with the delta from the old build beside the bundle.
                auto install = [&](const std::string& label, const std::string& running_build) {
                    const fs::path disk = work / "delta-disk.raw";
                    fs::remove(disk);
                    fs::remove_all(work / "delta-state");
                    {  // sparse: the EFLOW disk is 12 GB, mostly holes
                        UniqueFd in = open_file(old_disk, O_RDONLY), out = open_file(disk, O_RDWR | O_CREAT | O_TRUNC);
                        const uint64_t size = fs::file_size(old_disk);
                        if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0) fail_errno("ftruncate " + disk.string());
                        copy_sparse(in.get(), 0, out.get(), 0, size, disk.string());
                    }
                    EngineConfig c;
                    c.disk = disk;
                    c.state_file = work / "delta-state/status.json";
                    c.trust_anchor = b.fixture.trust_anchor;
                    c.etc_upper = work / "none";
                    c.boot_id_file = b.config.boot_id_file;
                    c.release.compatible = nb.manifest().compatible;
                    c.release.version = "0";
                    c.release.build_id = running_build;
                    FakeBootControl boot;
                    Engine(boot, c).on_boot();
                    HttpSettings http;
                    http.ca_bundle = pki / "root.pem";
                    const auto t0 = std::chrono::steady_clock::now();
                    Engine(boot, c).install_url(nginx.https_url("delta.cairn"), http, {}, {});
                    const double secs = seconds_since(t0);
                    const Transfer t = *Engine(boot, c).status().last->transfer;
                    std::printf("  %s: downloaded %llu bytes (%llu of them a delta) in %.1f s: %.3f %% of the bundle (%llu), %.3f %% of the "
                                "slot's payloads (%llu)",
                                label.c_str(), static_cast<unsigned long long>(t.downloaded), static_cast<unsigned long long>(t.delta), secs,
                                100.0 * t.downloaded / bundle_bytes, static_cast<unsigned long long>(bundle_bytes),
                                100.0 * t.downloaded / t.payload_bytes, static_cast<unsigned long long>(t.payload_bytes));
                    if (zstd > 0) std::printf("; cairn / zstd = %.2f (goal <= 2)", t.downloaded / zstd);
                    std::printf("\n");
                };
                std::printf("delta: %s onto %s\n", new_bundle.c_str(), old_disk.c_str());
                if (zstd > 0) std::printf("  zstd --patch-from old->new root: %.0f bytes (the floor)\n", zstd);
                std::printf("  RAUC's adaptive updates report ~10 %% for such a change (shared/notes/updates.md)\n");
                install("blocks only (no delta on the server)", "");
                if (!delta_file.empty()) {
                    const std::string name = delta_file.filename().string();
                    const std::string from = name.substr(name.rfind(".from-") + 6);
                    fs::create_symlink(fs::absolute(delta_file), nginx.www() / ("delta.cairn.from-" + from));
                    std::printf("  the delta file: %llu bytes (both slots' trees and ESPs; a device fetches its own)\n",
                                static_cast<unsigned long long>(fs::file_size(delta_file)));
                    install("with the delta from build " + from, from);
                }
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "update_stream_bench: %s\n", e.what());
        fs::remove_all(work);
        return 1;
    }
    fs::remove_all(work);
    return 0;
}
