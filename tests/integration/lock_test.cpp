// `cairn lock`: writes the lock beside the recipe, keeps one made for the same package list,
// resolves again when the list changed or with --update; a build installs what it names.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

std::string recipe(const std::string& packages) {
    return R"(name = "locked"
version = "1"

[kernel]
enabled = false

[disk]
size = "auto"
partitions = [
  { role = "root", size = "256MiB" },
  { role = "root-verity" },
]

[rootfs]
filesystem = "ext4"
packages = [)" + packages + "]\n";
}

RunResult cairn_lock(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {test::cairn_binary().string(), "lock"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
}

}  // namespace

TEST(Lock, KeptForTheSameListResolvedAgainWhenItChangesAndInstalledByTheBuild) {
    if (!test::is_root()) GTEST_SKIP() << "installing Debian packages needs root";
    Scratch dir;
    test::write_text(dir / "r.toml", recipe("\"tree\""));
    RunResult r = cairn_lock({(dir / "r.toml").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("wrote " + (dir / "r.lock").string()), std::string::npos) << r.err;
    const std::string first = read_file(dir / "r.lock");
    nlohmann::json lock = nlohmann::json::parse(first);
    bool has_tree = false;
    for (const auto& p : lock["packages"]) has_tree = has_tree || p["name"] == "tree";
    EXPECT_TRUE(has_tree);

    r = cairn_lock({(dir / "r.toml").string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("kept"), std::string::npos) << r.err;
    EXPECT_EQ(read_file(dir / "r.lock"), first);

    r = cairn_lock({(dir / "r.toml").string(), "--update"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("updated"), std::string::npos) << r.err;

    // --lock into a folder that does not exist yet: it is made (a fresh build tree's test-images/).
    r = cairn_lock({(dir / "r.toml").string(), "--lock", (dir / "new/folder/r.lock").string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(fs::is_regular_file(dir / "new/folder/r.lock"));

    // The build installs exactly the lock, and leaves it in its output.
    r = run({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", (dir / "out").string(), "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(read_file(dir / "out/packages.lock"), read_file(dir / "r.lock"));
    nlohmann::json manifest = nlohmann::json::parse(read_file(dir / "out/manifest.json"));
    EXPECT_TRUE(manifest["packages"]["from_lock_file"].get<bool>());

    // The list changed: the build refuses the old lock; `cairn lock` resolves again.
    test::write_text(dir / "r.toml", recipe("\"tree\", \"less\""));
    r = run({test::cairn_binary().string(), "build", (dir / "r.toml").string(), "-o", (dir / "out2").string(), "--quiet"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("this lock was made for another package request"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "out2"));
    r = cairn_lock({(dir / "r.toml").string(), "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"name\":\"less\""), std::string::npos);
    EXPECT_NE(read_file(dir / "r.lock"), first);

    // A recipe without packages has nothing to lock.
    test::write_text(dir / "none.toml", "name = \"none\"\nversion = \"1\"\n[kernel]\nenabled = false\n[disk]\nsize = \"auto\"\npartitions = [ { role = \"root\", size = \"8MiB\" }, { role = \"root-verity\" } ]\n");
    r = cairn_lock({(dir / "none.toml").string()});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("installs no Debian packages"), std::string::npos) << r.err;
}
