// Boot time of an image Cairn built, in QEMU with OVMF Secure Boot and swtpm on this machine:
// seconds from QEMU start to `ready`, and cairn-init's share (kernel start to switch_root, and
// the time spent in cairn-init itself), first boot (formats log and data) and a second boot.
// Usage: boot_bench [--rounds N] [IMAGE_DIR...] (default build/test-images/minimal). Goals: <= 15 s, <= 1 s.
// With several images (e.g. build/test-images/minimal build/test-images/eflow), each is booted in
// turn in the same run and its times are also given as a ratio to the first image's (the
// Debian/systemd image's goal: <= 1.5x the minimal image's).
// `ready` does not mean the same on both: the minimal image's init prints it once it has started
// its services, systemd's image once multi-user.target is reached, that is once they are up. So
// each boot also gives "up": QEMU start to `ready` and the updater serving on D-Bus (the
// "cairn-updated: serving" line both print), a point that means the same on both. An image
// without an updater (no [update]: its manifest.json has no "update") has no "up". With several
// rounds, each ratio also comes as the range of the rounds' own pairs (the same round's boots of
// both images): how much one round moves with the machine's noise.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "qemu/machine.hpp"

using namespace cairn;
namespace fs = std::filesystem;

namespace {

struct Times {
    double first = 0, second = 0;        // QEMU start -> ready
    double first_up = 0, second_up = 0;  // QEMU start -> ready and the updater serving (0: no updater)
};

constexpr const char* updater_serving = "cairn-updated: serving";

// "12.34 s", or "n/a" for an "up" time an image without an updater does not have.
std::string seconds_or_na(double seconds) {
    char text[32] = "n/a";
    if (seconds > 0) std::snprintf(text, sizeof text, "%.2f s", seconds);
    return text;
}

bool has_updater(const fs::path& image_dir) {
    const fs::path manifest = image_dir / "manifest.json";
    if (!fs::exists(manifest)) return false;
    return nlohmann::json::parse(read_file(manifest), nullptr, false).contains("update");
}

Times boot_twice(const fs::path& image_dir, bool updater) {
    Times times;
    TempDir work(fs::temp_directory_path(), "cairn-boot-bench-");
    run_checked({"cp", "--sparse=always", (image_dir / "disk.raw").string(), (work.path() / "disk.raw").string()});
    // On disk before the clock starts: the copy's pages are still dirty in the host's cache (the
    // host writes them back after 30 s), and the guest's first flush (mkfs on a first boot) would
    // make QEMU's fdatasync write them all inside the timed boot: the more the image holds (the
    // Debian image 650 MB, the minimal one 290 MB), the longer. A device's disk has no such debt.
    run_checked({"sync", (work.path() / "disk.raw").string()});
    qemu::Config config;
    config.disk = work.path() / "disk.raw";
    config.state_dir = work.path() / "state";
    qemu::Machine m(config);
    for (const char* boot : {"first boot", "second boot"}) {
        auto t0 = std::chrono::steady_clock::now();
        m.start();
        m.wait_for("cairn: ready", std::chrono::seconds(300));
        double ready = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double up = 0;
        if (updater) {
            m.wait_for(updater_serving, std::chrono::seconds(120));
            up = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        }
        const bool first_boot = boot == std::string("first boot");
        (first_boot ? times.first : times.second) = ready;
        (first_boot ? times.first_up : times.second_up) = up;
        if (first_boot) {  // what QEMU runs with (asked once the clock is stopped)
            std::string accel = m.accelerator();
            if (const std::string why = qemu::kvm_unusable_reason(); accel == "tcg" && !why.empty()) accel += " (" + why + ")";
            std::printf("%s, accelerator %s\n", image_dir.c_str(), accel.c_str());
        }
        std::smatch match;
        std::string console = m.console();
        double switch_at = 0, in_init = 0;
        if (std::regex_search(console, match, std::regex(R"(switching to \S+ at ([0-9.]+) s \(([0-9]+) ms in cairn-init\))"))) {
            switch_at = std::stod(match[1]);
            in_init = std::stod(match[2]) / 1000;
        }
        std::printf("%-12s QEMU start -> ready %6.2f s (goal <= 15 s), up %s   kernel start -> switch_root %5.2f s   in cairn-init %5.3f s (goal <= 1 s)\n",
                    boot, ready, seconds_or_na(up).c_str(), switch_at, in_init);
        m.kill();
    }
    return times;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) try {
    std::vector<fs::path> images;
    int rounds = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--rounds" && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
        else if (a == "-h" || a == "--help") {
            std::printf("Usage: boot_bench [--rounds N] [IMAGE_DIR...]\n  Boots each image twice per round, the images in turn, and gives each\n"
                        "  one's median over the rounds (a ratio to the first image's when there are several):\n"
                        "  QEMU start to `ready`, and to \"up\" (`ready` and the updater serving on D-Bus),\n"
                        "  for images with an updater ([update] in the recipe). With several rounds, the\n"
                        "  range of the rounds' own ratios too (one round's boots of both images).\n");
            return 0;
        } else images.push_back(a);
    }
    if (images.empty()) images.push_back("build/test-images/minimal");
    // Rounds interleave the images, so that a slow spell of the machine falls on all of them.
    std::vector<std::vector<double>> first(images.size()), second(images.size()), first_up(images.size()), second_up(images.size());
    std::vector<bool> updater;
    for (const auto& image : images) updater.push_back(has_updater(image));
    for (int r = 0; r < rounds; ++r)
        for (size_t i = 0; i < images.size(); ++i) {
            Times t = boot_twice(images[i], updater[i]);
            first[i].push_back(t.first);
            second[i].push_back(t.second);
            first_up[i].push_back(t.first_up);
            second_up[i].push_back(t.second_up);
        }
    if (rounds > 1)
        for (size_t i = 0; i < images.size(); ++i)
            std::printf("median of %d rounds, %s: first boot %.2f s (up %s), second boot %.2f s (up %s)\n", rounds, images[i].c_str(),
                        median(first[i]), seconds_or_na(median(first_up[i])).c_str(), median(second[i]), seconds_or_na(median(second_up[i])).c_str());
    for (size_t i = 1; i < images.size(); ++i) {
        std::printf("ratio %s / %s, to ready: first boot %.2f, second boot %.2f\n", images[i].filename().c_str(), images[0].filename().c_str(),
                    median(first[i]) / median(first[0]), median(second[i]) / median(second[0]));
        if (median(first_up[i]) > 0 && median(first_up[0]) > 0)
            std::printf("ratio %s / %s, to up:    first boot %.2f, second boot %.2f\n", images[i].filename().c_str(), images[0].filename().c_str(),
                        median(first_up[i]) / median(first_up[0]), median(second_up[i]) / median(second_up[0]));
        if (rounds > 1)  // how far the machine's noise moves one round's pair: a ratio near the goal needs more rounds
            for (const auto& [boot, times] : {std::pair{"first boot", &first}, std::pair{"second boot", &second}}) {
                std::vector<double> pairs;
                for (int r = 0; r < rounds; ++r) pairs.push_back((*times)[i][r] / (*times)[0][r]);
                std::printf("  per round, %s to ready: %.2f to %.2f (median %.2f)\n", boot, *std::min_element(pairs.begin(), pairs.end()),
                            *std::max_element(pairs.begin(), pairs.end()), median(pairs));
            }
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "boot_bench: %s\n", e.what());
    return 2;
}
