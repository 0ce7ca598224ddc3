// Bad input to `cairn build`: one clear line naming the recipe key or file, a non-zero exit,
// and nothing in the output directory that looks finished.
#include <gtest/gtest.h>

#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using cairn::test::Scratch;
namespace fs = std::filesystem;

namespace {

const std::string header = R"(name = "cairn-test"
version = "1"
compatible = "cairn-test-x86_64"

[kernel]
enabled = false
)";

const std::string small_disk = R"(
[disk]
size = "64MiB"
partitions = [
  { role = "esp", size = "2MiB" },
  { role = "root", size = "8MiB" },
  { role = "root-verity", size = "1MiB" },
  { role = "data", size = "rest" },
]
)";

struct Case {
    std::string name;
    std::string recipe;
    std::string expect;
};

}  // namespace

TEST(BuildErrors, OneClearLineAndNoPartialOutput) {
    Scratch dir;
    test::write_text(dir / "big/blob", "");
    test::write_random(dir / "big/blob", 12 << 20, 1);  // 12 MiB of noise does not fit an 8 MiB root
    test::write_text(dir / "bad-firewall.toml", "[ssh]\nport = 0\n");
    fs::copy_file(test::source_dir() / "recipes/keys/ssh-admin.pub", dir / "admin.pub");
    fs::copy_file(test::source_dir() / "recipes/keys/ssh-admin", dir / "admin");
    test::write_text(dir / "not-a-key.pub", "ssh-ed25519 this-is-not-base64\n");
    const std::string passwd = "\n[[rootfs.add]]\ntype = \"file\"\npath = \"/etc/passwd\"\ncontent = \"root:x:0:0::/root:/bin/sh\\nsshd:x:100:65534::/run/sshd:/bin/false\\n\"\n";
    const std::string root_key = "\n[ssh]\nauthorized_keys = { root = [\"admin.pub\"] }\n";
    std::vector<Case> cases = {
        {"bad-toml", "name = \n", "not valid TOML"},
        {"unknown-key", header + small_disk + "\n[rootfs]\nfilesytem = \"erofs\"\n", "rootfs.filesytem: unknown key"},
        {"missing-file", header + small_disk + "\n[[rootfs.add]]\ntype = \"tar\"\nsource = \"missing.tar.gz\"\n", "rootfs.add[0].source:"},
        {"too-big-tree", header + small_disk + "\n[[rootfs.add]]\ntype = \"tree\"\nsource = \"big\"\n", "does not fit in partition root_a"},
        {"disk-too-small", header + R"(
[disk]
size = "16MiB"
partitions = [
  { role = "root", size = "8MiB" },
  { role = "root-verity", size = "1MiB" },
  { role = "data", size = "8MiB" },
]
)", "does not fit on a 16 MiB disk"},
        {"unknown-package", header + small_disk + "\n[[rootfs.add]]\ntype = \"deb\"\npackage = \"cairn-no-such-package\"\n",
         "rootfs.add[0].package: unknown Debian package 'cairn-no-such-package'"},
        {"bad-firewall-policy", header + small_disk + "\n[firewall]\npolicy = \"bad-firewall.toml\"\n",
         "firewall: cairn-firewall: " + (dir / "bad-firewall.toml").string() + ":2: ssh.port"},
        {"ssh-nobody", header + small_disk + "\n[ssh]\nvsock = false\n", "ssh: nobody could log in"},
        {"ssh-no-sshd-user", header + small_disk + root_key, "ssh: the image's /etc/passwd has no user 'sshd'"},
        {"ssh-private-key", header + small_disk + "\n[ssh]\nauthorized_keys = { root = [\"admin\"] }\n" + passwd,
         "authorized_keys.root[0]: " + (dir / "admin").string() + " holds a private key"},
        {"ssh-not-a-key", header + small_disk + "\n[ssh]\ntrusted_user_ca_keys = \"not-a-key.pub\"\n" + passwd,
         "trusted_user_ca_keys: " + (dir / "not-a-key.pub").string() + " is not an OpenSSH public key file"},
        {"ssh-unknown-user", header + small_disk + "\n[ssh]\nauthorized_keys = { alice = [\"admin.pub\"] }\n" + passwd,
         "authorized_keys.alice: the image's /etc/passwd has no user 'alice'"},
        {"missing-libraries", header + small_disk + "\n[[rootfs.add]]\ntype = \"host-file\"\nsource = \"/usr/bin/ls\"\npath = \"/bin/ls\"\n",
         "/bin/ls needs /lib64/ld-linux-x86-64.so.2 (its interpreter), libselinux.so.1, libc.so.6"},
        {"unknown-owner", header + small_disk + "\n[[rootfs.add]]\ntype = \"directory\"\npath = \"/x\"\nowner = \"alice\"\n",
         "rootfs.add[0].owner: no user 'alice'"},
    };
    // Debian package sets (as root: maintainer scripts; the mirror for resolving): a package that
    // does not exist, and a .deb of the user's whose dependency cannot be had.
    if (test::is_root()) {
        test::write_text(dir / "broken-pkg/DEBIAN/control",
                         "Package: cairn-broken\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t.invalid>\n"
                         "Depends: libcairn-does-not-exist (>= 2)\nDescription: t\n");
        run_checked({"dpkg-deb", "--root-owner-group", "--build", (dir / "broken-pkg").string(), (dir / "broken.deb").string()});
        cases.push_back({"unknown-debian-package", header + small_disk + "\n[rootfs]\npackages = [\"cairn-no-such-package\"]\n",
                         "rootfs: unknown package 'cairn-no-such-package'"});
        test::write_text(dir / "stale-lock.lock", "{\n  \"format\": 1,\n  \"request\": \"" + std::string(64, '0') + "\",\n  \"packages\": [\n  ]\n}\n");
        cases.push_back({"stale-lock", header + small_disk + "\n[rootfs]\npackages = [\"openssh-server\"]\n",
                         "stale-lock.lock: this lock was made for another package request"});
        cases.push_back({"unsatisfiable-deb", header + small_disk + "\n[rootfs]\ndebs = [\"broken.deb\"]\n",
                         "cairn-broken : Depends: libcairn-does-not-exist (>= 2) but it is not installable"});
    }
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        fs::path recipe = dir / (c.name + ".toml");
        test::write_text(recipe, c.recipe);
        fs::path out = dir / ("out-" + c.name);
        RunResult r = run({test::cairn_binary().string(), "build", recipe.string(), "-o", out.string(), "--quiet"});
        EXPECT_EQ(r.exit_code, 2);
        EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
        EXPECT_NE(r.err.find(recipe.string()), std::string::npos) << "the message names the recipe: " << r.err;
        std::string trimmed = trim(r.err, "\n");
        EXPECT_EQ(trimmed.find('\n'), std::string::npos) << "one line: " << r.err;
        if (fs::exists(out)) {
            for (const auto& e : fs::directory_iterator(out)) ADD_FAILURE() << "left behind: " << e.path();
        }
    }
}

TEST(BuildErrors, UsageMistakes) {
    EXPECT_EQ(run({test::cairn_binary().string()}).exit_code, 2);
    RunResult r = run({test::cairn_binary().string(), "build", "recipes/minimal.toml"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("-o DIR"), std::string::npos) << r.err;
    r = run({test::cairn_binary().string(), "frobnicate"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos);
    r = run({test::cairn_binary().string(), "--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("build RECIPE -o DIR"), std::string::npos);
    EXPECT_NE(r.out.find("inspect IMAGE"), std::string::npos);
    r = run({test::cairn_binary().string(), "inspect", "/nonexistent/disk.raw"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("/nonexistent/disk.raw"), std::string::npos);
    // An option without its value, or with one that is no number, is named.
    const std::vector<std::pair<std::vector<std::string>, std::string>> mistakes = {
        {{"build", "recipes/minimal.toml", "-o"}, "cairn: build: -o needs a value"},
        {{"build", "recipes/minimal.toml", "-o", "/nonexistent/out", "--image-version", ""}, "cairn: build: --image-version: '' is not a version (it is empty)"},
        {{"build", "recipes/minimal.toml", "-o", "/nonexistent/out", "--image-version", "not a version!"},
         "cairn: build: --image-version: 'not a version!' is not a version (it starts with 'n': a version starts with a digit, such as 1.0 or 2.1.0-rc1)"},
        {{"qemu", "disk.raw", "--timeout", "5m"}, "cairn: qemu: --timeout: '5m' is not a whole number"},
        {{"qemu", "disk.raw", "--forward", "2222:99999"}, "cairn: qemu: --forward: 99999 is out of range (1 to 65535)"},
    };
    for (const auto& [words, said] : mistakes) {
        std::vector<std::string> argv = {test::cairn_binary().string()};
        argv.insert(argv.end(), words.begin(), words.end());
        r = run(argv);
        EXPECT_EQ(r.exit_code, 2) << words.back();
        EXPECT_NE(r.err.find(said + "\nTry 'cairn --help'."), std::string::npos) << r.err;
    }
}
