// `cairn build` cleans up after itself: an interrupted build (SIGINT, SIGTERM) removes its
// temporary folder and every program it started, says so and exits 128 + the signal; a folder
// left by a build that was killed outright is swept by the next build into the same output
// folder; and two builds into one folder at once cannot both run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

// A small recipe without a kernel; `extra` adds steps.
std::string recipe_text(const std::string& extra = "") {
    return R"(name = "cairn-test"
version = "1"
compatible = "cairn-test-x86_64"

[disk]
size = "auto"
partitions = [
  { role = "root", size = "16MiB" },
  { role = "root-verity" },
]

[kernel]
enabled = false

[[rootfs.add]]
type = "file"
path = "/etc/hostname"
content = "t\n"
)" + extra;
}

std::vector<fs::path> temporaries(const fs::path& out) {
    std::vector<fs::path> found;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(out, ec))
        if (e.path().filename().string().starts_with(".cairn-build-")) found.push_back(e.path());
    return found;
}

// Waits up to 60 s for `done`; false on timeout.
bool wait_for(const std::function<bool()>& done) {
    for (int i = 0; i < 600; ++i) {
        if (done()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
}

bool alive(pid_t pid) {
    // A process that is gone, or a zombie nobody reaped yet, no longer runs.
    std::string stat;
    try {
        stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    } catch (const std::exception&) {
        return false;
    }
    size_t paren = stat.rfind(')');
    return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

// A stand-in for a slow mkfs.erofs, first in PATH: it notes its pid and sleeps. The real one
// finishes too fast for a signal to land while it runs.
fs::path slow_mkfs(const Scratch& dir) {
    const fs::path bin = dir / "slow-bin";
    test::write_text(bin / "mkfs.erofs", "#!/bin/sh\necho $$ > " + (dir / "mkfs.pid").string() + "\nexec sleep 600\n");
    fs::permissions(bin / "mkfs.erofs", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
    return bin;
}

void interrupt_while_mkfs_runs(int sig, bool to_group) {
    SCOPED_TRACE(sig == SIGINT ? "SIGINT" : "SIGTERM");
    Scratch dir;
    test::write_text(dir / "r.toml", recipe_text());
    const fs::path out = dir / "out";
    const fs::path bin = slow_mkfs(dir);
    RunOptions o;
    o.extra_env = {"PATH=" + bin.string() + ":" + std::getenv("PATH")};
    Process build({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", out.string(), "--quiet"}, dir / "log", o);
    ASSERT_TRUE(wait_for([&] { return fs::exists(dir / "mkfs.pid") && !read_file(dir / "mkfs.pid").empty(); }))
        << read_file(dir / "log");
    const pid_t mkfs = std::stoi(read_file(dir / "mkfs.pid"));
    ASSERT_EQ(temporaries(out).size(), 1u);
    const fs::path temporary = temporaries(out)[0];
    // Ctrl-C in a terminal reaches the whole foreground process group; `kill` only cairn.
    if (to_group) build.signal(sig);
    else ::kill(build.pid(), sig);
    auto status = build.wait(30000);
    ASSERT_TRUE(status.has_value()) << "cairn build did not stop";
    const std::string log = read_file(dir / "log");
    EXPECT_EQ(*status, 128 + sig) << log;
    EXPECT_NE(log.find("cairn: build interrupted, removed " + temporary.string()), std::string::npos) << log;
    EXPECT_TRUE(temporaries(out).empty()) << log;
    EXPECT_TRUE(wait_for([&] { return !alive(mkfs); })) << "mkfs.erofs (pid " << mkfs << ") was left running";
    if (alive(mkfs)) ::kill(mkfs, SIGKILL);
}

}  // namespace

TEST(BuildInterrupt, SigintRemovesTheTemporaryFolderAndStopsSubprocesses) { interrupt_while_mkfs_runs(SIGINT, true); }

TEST(BuildInterrupt, SigtermRemovesTheTemporaryFolderAndStopsSubprocesses) { interrupt_while_mkfs_runs(SIGTERM, false); }

TEST(BuildInterrupt, StaleTemporaryFoldersAreSweptByTheNextBuild) {
    Scratch dir;
    test::write_text(dir / "r.toml", recipe_text());
    const fs::path out = dir / "out";
    // What a build killed with SIGKILL leaves: a temporary folder, some of it read-only.
    test::write_text(out / ".cairn-build-Xy12ab/tree/etc/hostname", "t\n");
    fs::permissions(out / ".cairn-build-Xy12ab/tree/etc", fs::perms::owner_read | fs::perms::owner_exec);
    test::write_text(out / "keep-me", "the user's\n");
    RunResult r = run({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", out.string(), "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(temporaries(out).empty()) << "the stale folder is still there";
    EXPECT_TRUE(fs::exists(out / "keep-me"));
    EXPECT_TRUE(fs::exists(out / "manifest.json"));
    EXPECT_FALSE(fs::exists(out / ".cairn-build.lock")) << "the lock file goes when the build ends";
}

TEST(BuildInterrupt, TwoBuildsIntoOneFolderDoNotRace) {
    Scratch dir;
    // The first build waits on a FIFO (a tar step reading it) until the test lets it go.
    ASSERT_EQ(::mkfifo((dir / "slow.tar").c_str(), 0600), 0);
    test::write_text(dir / "slow.toml", recipe_text("\n[[rootfs.add]]\ntype = \"tar\"\nsource = \"slow.tar\"\n"));
    test::write_text(dir / "r.toml", recipe_text());
    const fs::path out = dir / "out";
    Process first({test::cairn_binary().string(), "build", (dir / "slow.toml").string(), "-o", out.string(), "--quiet"}, dir / "log");
    ASSERT_TRUE(wait_for([&] { return temporaries(out).size() == 1; })) << read_file(dir / "log");
    const fs::path temporary = temporaries(out)[0];

    const auto started = std::chrono::steady_clock::now();
    RunResult second = run({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", out.string(), "--quiet"});
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10)) << "the second build waited";
    EXPECT_EQ(second.exit_code, 2) << second.err;
    EXPECT_NE(second.err.find(out.string()), std::string::npos) << second.err;
    EXPECT_NE(second.err.find("another cairn build"), std::string::npos) << second.err;
    EXPECT_TRUE(fs::exists(temporary)) << "the second build swept the running build's folder";
    EXPECT_FALSE(fs::exists(out / "manifest.json"));

    // Stop the first build; the folder is free again.
    ::kill(first.pid(), SIGTERM);
    auto status = first.wait(30000);
    ASSERT_TRUE(status.has_value());
    EXPECT_EQ(*status, 128 + SIGTERM) << read_file(dir / "log");
    EXPECT_TRUE(temporaries(out).empty());
    second = run({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", out.string(), "--quiet"});
    EXPECT_EQ(second.exit_code, 0) << second.err;
    EXPECT_TRUE(fs::exists(out / "manifest.json"));
}
