// dm-verity format: cairn::verity::format against `veritysetup format` over the same data, page cache warm.
//
// usage: verity_bench [DATA_FILE [ROUNDS]]
// Without DATA_FILE, a 1 GiB random file is made in a temporary directory under $TMPDIR (or /tmp). Each round
// runs both formats with the same salt and UUID; the best of ROUNDS (default 3) is printed for each. Exits
// non-zero if the root hashes or hash devices differ.
#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/sha256_blocks.hpp"
#include "common/subprocess.hpp"
#include "common/uuid.hpp"
#include "imager/verity.hpp"

using namespace cairn;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t default_size = 1ull << 30;
constexpr size_t buffer_size = 4 << 20;

void write_random_file(const fs::path& path, uint64_t size) {
    UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
    std::vector<uint64_t> buffer(buffer_size / 8);
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (uint64_t done = 0; done < size;) {
        for (auto& word : buffer) {  // splitmix64
            uint64_t z = (state += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            word = z ^ (z >> 31);
        }
        size_t n = static_cast<size_t>(std::min<uint64_t>(buffer_size, size - done));
        pwrite_exact(fd.get(), buffer.data(), n, done, path.string());
        done += n;
    }
}

void read_through(const fs::path& path, uint64_t size) {
    UniqueFd fd = open_file(path, O_RDONLY);
    std::vector<char> buffer(buffer_size);
    for (uint64_t done = 0; done < size;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(buffer_size, size - done));
        pread_exact(fd.get(), buffer.data(), n, done, path.string());
        done += n;
    }
}

std::string veritysetup() {
    if (auto found = find_program("veritysetup")) return found->string();
    for (const char* path : {"/usr/sbin/veritysetup", "/sbin/veritysetup"})
        if (fs::exists(path)) return path;
    fail("veritysetup not found (package cryptsetup-bin)");
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string figure(double seconds, uint64_t bytes) {
    char text[64];
    std::snprintf(text, sizeof text, "%.2f s (%.2f GB/s)", seconds, static_cast<double>(bytes) / 1e9 / seconds);
    return text;
}

int bench(int argc, char** argv) {
    if (argc > 3 || (argc > 1 && std::string(argv[1]).starts_with("-"))) {
        std::fprintf(stderr, "usage: %s [DATA_FILE [ROUNDS]]\n", argv[0]);
        return 2;
    }
    const unsigned rounds = argc > 2 ? static_cast<unsigned>(std::stoul(argv[2])) : 3;
    if (rounds == 0) fail("ROUNDS must be at least 1");
    TempDir tmp(fs::temp_directory_path(), "cairn-verity-bench-");
    fs::path data = argc > 1 ? fs::path(argv[1]) : tmp.path() / "data.img";
    if (argc <= 1) write_random_file(data, default_size);

    verity::Params p;
    p.data_blocks = fs::file_size(data) / p.data_block_size;
    if (p.data_blocks == 0) fail(data.string() + ": smaller than one 4096-byte block");
    const uint64_t bytes = p.data_blocks * p.data_block_size;
    const Digest salt = sha256("cairn verity bench salt");
    p.salt.assign(salt.begin(), salt.end());
    p.uuid = Uuid::derive("cairn verity bench", "hash device");
    read_through(data, bytes);  // warm the page cache for both contenders

    const fs::path ours_path = tmp.path() / "cairn.hash", theirs_path = tmp.path() / "veritysetup.hash";
    const std::vector<std::string> theirs_argv{veritysetup(),
                                               "format",
                                               "--hash=sha256",
                                               "--salt=" + to_hex(p.salt),
                                               "--uuid=" + p.uuid.str(),
                                               "--data-blocks=" + std::to_string(p.data_blocks),
                                               data.string(),
                                               theirs_path.string()};
    std::printf("dm-verity format of %s: %.2f GiB, %llu blocks, %u threads (SHA-256 on %s), best of %u rounds\n", data.c_str(),
                static_cast<double>(bytes) / (1 << 30), static_cast<unsigned long long>(p.data_blocks),
                std::max(1u, std::thread::hardware_concurrency()), sha256_blocks_engine().c_str(), rounds);
    std::fflush(stdout);

    double best_ours = 1e100, best_theirs = 1e100;
    for (unsigned round = 0; round < rounds; ++round) {
        fs::remove(ours_path);
        fs::remove(theirs_path);

        auto start = std::chrono::steady_clock::now();
        verity::Result ours;
        {
            UniqueFd dfd = open_file(data, O_RDONLY);
            UniqueFd hfd = open_file(ours_path, O_RDWR | O_CREAT | O_TRUNC);
            ours = verity::format(dfd.get(), 0, hfd.get(), 0, p);
        }
        best_ours = std::min(best_ours, seconds_since(start));

        start = std::chrono::steady_clock::now();
        std::string output = run_checked(theirs_argv);
        best_theirs = std::min(best_theirs, seconds_since(start));

        std::string theirs_root;
        std::istringstream lines(output);
        for (std::string line; std::getline(lines, line);)
            if (line.rfind("Root hash:", 0) == 0) std::istringstream(line.substr(10)) >> theirs_root;
        if (theirs_root != to_hex(ours.root_hash)) {
            std::fprintf(stderr, "verity_bench: root hashes differ: cairn %s, veritysetup %s\n",
                         to_hex(ours.root_hash).c_str(), theirs_root.empty() ? "(none)" : theirs_root.c_str());
            return 1;
        }
        if (read_file(ours_path) != read_file(theirs_path)) {
            std::fprintf(stderr, "verity_bench: hash devices differ although the root hashes agree\n");
            return 1;
        }
    }
    std::printf("cairn %s  veritysetup %s  ratio %.1fx\n", figure(best_ours, bytes).c_str(),
                figure(best_theirs, bytes).c_str(), best_theirs / best_ours);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return bench(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "verity_bench: %s\n", e.what());
        return 1;
    }
}
