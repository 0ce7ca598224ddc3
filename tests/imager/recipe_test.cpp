#include "imager/recipe.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;
using cairn::test::write_text;

namespace {

const char* base_recipe = R"(name = "t"
version = "1.0"
compatible = "cairn-test"
seed = "s"

[disk]
size = "1GiB"
partitions = [
  { role = "esp", size = "16MiB" },
  { role = "root", size = "128MiB" },
  { role = "root-verity" },
  { role = "data", size = "rest" },
]
)";

std::string load_error(const std::filesystem::path& file) {
    try {
        load_recipe(file);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Recipe, ShippedRecipesLoad) {
    for (const char* name : {"minimal.toml", "eflow.toml"}) {
        Recipe r = load_recipe(test::source_dir() / "recipes" / name);
        EXPECT_FALSE(r.rootfs.steps.empty()) << name;
        EXPECT_TRUE(r.rootfs.verity);
        EXPECT_EQ(r.kernel.package, "linux-image-cloud-amd64");
    }
    for (const char* name : {"minimal.toml", "eflow.toml"}) {
        Recipe r = load_recipe(test::source_dir() / "recipes" / name);
        EXPECT_TRUE(r.attestation.enabled) << name << ": the shipped recipes sign their reference values";
        EXPECT_EQ(r.attestation.cert.filename(), "attestation-signer.pem");
    }
    Recipe eflow = load_recipe(test::source_dir() / "recipes/eflow.toml");
    EXPECT_EQ(eflow.layout.disk_size, 0u);  // auto
    EXPECT_EQ(eflow.rootfs.filesystem, "ext4");
}

TEST(Recipe, ReadsTopLevelAndDefaults) {
    Scratch dir;
    write_text(dir / "r.toml", base_recipe);
    Recipe r = load_recipe(dir / "r.toml");
    EXPECT_EQ(r.name, "t");
    EXPECT_EQ(r.compatible, "cairn-test");
    EXPECT_EQ(r.layout.disk_size, 1ull << 30);
    ASSERT_EQ(r.layout.partitions.size(), 4u);
    EXPECT_TRUE(r.layout.partitions[3].rest);
    // root-verity without a size gets room for a full root partition's tree: 128 MiB -> 32768 blocks -> 258 hash blocks.
    ASSERT_TRUE(r.layout.partitions[2].size);
    EXPECT_EQ(*r.layout.partitions[2].size, 2u << 20);
    EXPECT_EQ(r.rootfs.filesystem, "erofs");
    EXPECT_TRUE(r.kernel.enabled);
}

TEST(Recipe, ReadsRootfsSteps) {
    Scratch dir;
    write_text(dir / "files/hello", "hi\n");
    write_text(dir / "r.toml", std::string(base_recipe) + R"(
[kernel]
enabled = false

[rootfs]
filesystem = "ext4"

[[rootfs.add]]
type = "file"
path = "/etc/hello"
source = "files/hello"
mode = "0600"
owner = 1000
group = "users"

[[rootfs.add]]
type = "symlink"
path = "/bin/sh"
target = "busybox"

[[rootfs.add]]
type = "deb"
package = "busybox-static"

[[rootfs.add]]
type = "directory"
path = "/srv"
mode = 0o750
)");
    Recipe r = load_recipe(dir / "r.toml");
    ASSERT_EQ(r.rootfs.steps.size(), 4u);
    const Step& f = r.rootfs.steps[0];
    EXPECT_EQ(f.kind, Step::Kind::File);
    EXPECT_EQ(f.source, dir.path() / "files/hello");  // relative to the recipe
    EXPECT_EQ(f.mode, 0600u);
    EXPECT_EQ(f.owner->number, 1000u);
    EXPECT_EQ(f.group->name, "users");
    EXPECT_EQ(r.rootfs.steps[1].target, "busybox");
    EXPECT_EQ(r.rootfs.steps[2].package, "busybox-static");
    EXPECT_EQ(r.rootfs.steps[2].path, "/");
    EXPECT_EQ(r.rootfs.steps[3].mode, 0750u);
    EXPECT_FALSE(r.kernel.enabled);
    EXPECT_EQ(r.rootfs.filesystem, "ext4");
}

struct BadCase {
    const char* name;
    std::string text;
    std::string expect;  // in the message
};

TEST(Recipe, BadInputNamesFileLineAndKey) {
    std::string b = base_recipe;
    std::vector<BadCase> cases = {
        {"not-toml", "name = \"x\nversion = ", "not valid TOML"},
        {"unknown-top", b + "colour = \"red\"\n", "colour: unknown key"},
        {"unknown-in-partition", "name=\"t\"\nversion=\"1\"\ncompatible=\"c\"\n[disk]\nsize=\"1GiB\"\npartitions=[{role=\"root\", size=\"1MiB\", colour=1}]\n",
         "disk.partitions[0].colour: unknown key"},
        {"unknown-role", "name=\"t\"\nversion=\"1\"\ncompatible=\"c\"\n[disk]\nsize=\"1GiB\"\npartitions=[{role=\"boot\", size=\"1MiB\"}]\n",
         "disk.partitions[0].role: unknown role 'boot'"},
        {"bad-size", "name=\"t\"\nversion=\"1\"\ncompatible=\"c\"\n[disk]\nsize=\"1 parsec\"\npartitions=[{role=\"root\", size=\"1MiB\"}]\n",
         "disk.size: '1 parsec' is not a size"},
        {"missing-name", "version=\"1\"\ncompatible=\"c\"\n", "name: missing"},
        {"missing-file", b + "[[rootfs.add]]\ntype = \"file\"\npath = \"/x\"\nsource = \"nope.txt\"\n", "rootfs.add[0].source:"},
        {"bad-mode", b + "[[rootfs.add]]\ntype = \"directory\"\npath = \"/x\"\nmode = \"rwx\"\n", "rootfs.add[0].mode: must be permission bits"},
        {"relative-image-path", b + "[[rootfs.add]]\ntype = \"directory\"\npath = \"x\"\n", "rootfs.add[0].path: 'x' must be an absolute path"},
        {"dotdot", b + "[[rootfs.add]]\ntype = \"directory\"\npath = \"/a/../b\"\n", "must not contain '..'"},
        {"unknown-step", b + "[[rootfs.add]]\ntype = \"rpm\"\n", "rootfs.add[0].type: unknown type 'rpm'"},
        {"unknown-fs", b + "[rootfs]\nfilesystem = \"btrfs\"\n", "rootfs.filesystem: unknown filesystem 'btrfs'"},
        {"no-verity-partition", "name=\"t\"\nversion=\"1\"\ncompatible=\"c\"\n[disk]\nsize=\"1GiB\"\npartitions=[{role=\"root\", size=\"1MiB\"}]\n",
         "no \"root-verity\" partition"},
        {"decimal-megabytes", "name=\"t\"\nversion=\"1\"\ncompatible=\"c\"\n[disk]\nsize=\"1GiB\"\npartitions=[{role=\"root\", size=\"64MB\"}]\n[rootfs]\nverity=false\n",
         "disk.partitions[0].size: \"64MB\" is 61.0 MiB (MB means 10^6 bytes): sizes are whole MiB; did you mean \"64MiB\"?"},
        {"decimal-disk", "name=\"t\"\nversion=\"1\"\ncompatible=\"c\"\n[disk]\nsize=\"2GB\"\npartitions=[{role=\"root\", size=\"64MiB\"}]\n[rootfs]\nverity=false\n",
         "disk.size: \"2GB\" is 1.9 GiB (GB means 10^9 bytes)"},
        {"bad-version", "name=\"t\"\nversion=\"not a version!\"\ncompatible=\"c\"\n", "version: 'not a version!' is not a version"},
        {"os-release-from-a-step", b + "[[rootfs.add]]\ntype = \"file\"\npath = \"/etc/os-release\"\ncontent = \"ID=x\\n\"\n",
         "rootfs.add[0].path: /etc/os-release is made from the recipe's name and version; give extra fields in [os_release]"},
        {"os-release-version-field", b + "[os_release]\nVERSION_ID = \"3\"\n", "os_release.VERSION_ID: made from the recipe"},
        {"os-release-bad-field", b + "[os_release]\nhome-url = \"x\"\n", "os_release.home-url: not an os-release field name"},
        {"two-roots", "name=\"t\"\nversion=\"1\"\ncompatible=\"c\"\n[disk]\nsize=\"1GiB\"\npartitions=[{role=\"root\", size=\"1MiB\"},{role=\"root\", size=\"1MiB\"}]\n[rootfs]\nverity=false\n",
         "a second \"root\" partition"},
    };
    Scratch dir;
    for (const auto& c : cases) {
        auto file = dir / (std::string(c.name) + ".toml");
        write_text(file, c.text);
        std::string e = load_error(file);
        EXPECT_NE(e.find(c.expect), std::string::npos) << c.name << ": " << e;
        EXPECT_EQ(e.rfind(file.string() + ":", 0), 0u) << c.name << " does not start with the file: " << e;
    }
    EXPECT_NE(load_error(dir / "absent.toml").find("recipe not found"), std::string::npos);
}

TEST(Recipe, EveryMissingInputFileInOnePass) {
    Scratch dir;
    write_text(dir / "r.toml", std::string(base_recipe) + R"(
[boot]
key = "keys/db.key"
cert = "keys/db.pem"

[update]
trust_anchor = "keys/ca.pem"

[[rootfs.add]]
type = "tree"
source = "overlay"

[[rootfs.add]]
type = "directory"
path = "/srv"

[[rootfs.add]]
type = "file"
path = "/etc/motd"
source = "files/motd"
)");
    const std::string e = load_error(dir / "r.toml");
    const std::string f = (dir / "r.toml").string();
    for (const std::string& part : {f + ": 5 input files are missing",
                                    f + ":16: boot.key: " + (dir / "keys/db.key").string() + ": no such file or directory",
                                    f + ":17: boot.cert: " + (dir / "keys/db.pem").string(),
                                    f + ":20: update.trust_anchor: " + (dir / "keys/ca.pem").string(),
                                    f + ":24: rootfs.add[0].source: " + (dir / "overlay").string(),
                                    f + ":33: rootfs.add[2].source: " + (dir / "files/motd").string()})
        EXPECT_NE(e.find(part), std::string::npos) << e << "\nlacks: " << part;
}

TEST(Recipe, ReadsAttestation) {
    Scratch dir;
    for (const char* f : {"k.pem", "c.pem", "ca.pem", "db.key", "db.pem"}) write_text(dir / f, "");
    const std::string boot_update = "[boot]\nkey = \"db.key\"\ncert = \"db.pem\"\n[update]\ntrust_anchor = \"ca.pem\"\n";
    write_text(dir / "r.toml", std::string(base_recipe) + boot_update + "[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\nkey_passphrase = \"pw\"\n");
    Recipe r = load_recipe(dir / "r.toml");
    EXPECT_TRUE(r.attestation.enabled);
    EXPECT_EQ(r.attestation.key, dir / "k.pem");
    EXPECT_EQ(r.attestation.cert, dir / "c.pem");
    EXPECT_EQ(r.attestation.key_passphrase, "pw");
    EXPECT_TRUE(r.attestation.agent) << "the agent comes with [attestation] unless left out";
    EXPECT_TRUE(r.attestation.config.empty());
    write_text(dir / "agent.toml", std::string(base_recipe) + boot_update + "[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\nconfig = \"c.pem\"\n");
    EXPECT_EQ(load_recipe(dir / "agent.toml").attestation.config, dir / "c.pem");
    write_text(dir / "no-agent.toml", std::string(base_recipe) + boot_update + "[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\nagent = false\n");
    EXPECT_FALSE(load_recipe(dir / "no-agent.toml").attestation.agent);
    write_text(dir / "none.toml", std::string(base_recipe) + boot_update);
    EXPECT_FALSE(load_recipe(dir / "none.toml").attestation.enabled);

    struct Case {
        const char* name;
        std::string text, expect;
    };
    for (const Case& c : std::vector<Case>{
             {"no-key", boot_update + "[attestation]\ncert = \"c.pem\"\n", "attestation.key: missing"},
             {"no-cert", boot_update + "[attestation]\nkey = \"k.pem\"\n", "attestation.cert: missing"},
             {"unknown", boot_update + "[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\nbank = \"sha1\"\n", "attestation.bank: unknown key"},
             {"absent-file", boot_update + "[attestation]\nkey = \"nope.pem\"\ncert = \"c.pem\"\n", "attestation.key: " + (dir / "nope.pem").string()},
             {"no-boot", "[update]\ntrust_anchor = \"ca.pem\"\n[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\n", "attestation: needs a [boot] table"},
             {"agent-not-bool", boot_update + "[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\nagent = \"yes\"\n", "attestation.agent: "},
             {"config-without-agent", boot_update + "[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\nagent = false\nconfig = \"c.pem\"\n",
              "attestation.config: is the agent's configuration, but agent = false"},
             {"no-update", "[boot]\nkey = \"db.key\"\ncert = \"db.pem\"\n[attestation]\nkey = \"k.pem\"\ncert = \"c.pem\"\n",
              "attestation: needs an [update] table"},
         }) {
        write_text(dir / (std::string(c.name) + ".toml"), std::string(base_recipe) + c.text);
        const std::string e = load_error(dir / (std::string(c.name) + ".toml"));
        EXPECT_NE(e.find(c.expect), std::string::npos) << c.name << ": " << e;
    }
}

TEST(Recipe, CompatibleFollowsTheName) {
    Scratch dir;
    // A copied recipe that kept another product's compatible string is warned about.
    write_text(dir / "copied.toml", std::string(base_recipe));
    Recipe copied = load_recipe(dir / "copied.toml");
    ASSERT_EQ(copied.warnings.size(), 1u);
    EXPECT_NE(copied.warnings[0].find("compatible 'cairn-test' does not start with the recipe's name 't'"), std::string::npos) << copied.warnings[0];
    EXPECT_EQ(copied.warnings[0].rfind((dir / "copied.toml").string() + ":3: compatible:", 0), 0u) << copied.warnings[0];
    // Without one, it is made from the name.
    std::string text = base_recipe;
    text.replace(text.find("compatible = \"cairn-test\"\n"), std::string("compatible = \"cairn-test\"\n").size(), "");
    write_text(dir / "derived.toml", text);
    Recipe derived = load_recipe(dir / "derived.toml");
    EXPECT_EQ(derived.compatible, "t-x86_64");
    EXPECT_TRUE(derived.warnings.empty());
    // The shipped recipes agree with themselves.
    for (const char* name : {"minimal.toml", "eflow.toml"}) {
        Recipe r = load_recipe(test::source_dir() / "recipes" / name);
        EXPECT_TRUE(r.warnings.empty()) << name << ": " << (r.warnings.empty() ? "" : r.warnings[0]);
    }
}

TEST(Recipe, OsReleaseIsMadeFromNameAndVersion) {
    Scratch dir;
    write_text(dir / "r.toml", std::string(base_recipe) + "\n[os_release]\nNAME = \"Cairn \\\"t\\\"\"\nHOME_URL = \"https://example.org/\"\n");
    Recipe r = load_recipe(dir / "r.toml");
    r.version = "2.0.0";  // as --image-version does
    EXPECT_EQ(os_release_text(r),
              "NAME=\"Cairn \\\"t\\\"\"\n"
              "ID=t\n"
              "VERSION_ID=2.0.0\n"
              "PRETTY_NAME=\"Cairn \\\"t\\\" 2.0.0\"\n"
              "IMAGE_ID=t\n"
              "IMAGE_VERSION=2.0.0\n"
              "HOME_URL=\"https://example.org/\"\n");
}

TEST(Recipe, ErrorsCarryTheLineNumber) {
    Scratch dir;
    write_text(dir / "r.toml", std::string(base_recipe) + "\n[rootfs]\nfilesystem = \"zfs\"\n");
    std::string e = load_error(dir / "r.toml");
    EXPECT_NE(e.find("r.toml:16: rootfs.filesystem"), std::string::npos) << e;
}

TEST(Recipe, ReadsDebianPackages) {
    Scratch dir;
    write_text(dir / "app_1.0_amd64.deb", "not read when the recipe is");
    write_text(dir / "my.sources", "Types: deb\n");
    write_text(dir / "r.toml", std::string(base_recipe) + R"(
[rootfs]
base = "minbase"
packages = ["systemd", "openssh-server", "curl=7.88.1-10+deb12u8", "libc6:amd64"]
debs = ["app_1.0_amd64.deb"]
sources = "my.sources"
)");
    Recipe r = load_recipe(dir / "r.toml");
    const auto& p = r.rootfs.packages;
    EXPECT_TRUE(p.enabled());
    EXPECT_EQ(p.base, "minbase");
    EXPECT_EQ(p.names, (std::vector<std::string>{"systemd", "openssh-server", "curl=7.88.1-10+deb12u8", "libc6:amd64"}));
    ASSERT_EQ(p.debs.size(), 1u);
    EXPECT_EQ(p.debs[0], dir / "app_1.0_amd64.deb");
    EXPECT_EQ(p.sources, dir / "my.sources");
    EXPECT_EQ(p.lock, dir / "r.lock");

    write_text(dir / "none.toml", base_recipe);
    EXPECT_FALSE(load_recipe(dir / "none.toml").rootfs.packages.enabled());
}

// Package names go to apt-get's command line: nothing there may read as an option or a pattern.
TEST(Recipe, PackageNamesAreCheckedBeforeAptSeesThem) {
    for (const char* good : {"systemd", "g++", "libstdc++6", "linux-image-6.1.0-28-cloud-amd64", "xy=1:2.3~rc1-4+b1", "libc6:amd64"})
        EXPECT_TRUE(is_package_spec(good)) << good;
    for (const char* bad : {"", "a", "-oDir=/", "Systemd", "?essential", "foo bar", "foo=", "foo=-1", "foo:", "foo:AMD64", "foo/bookworm", "../x.deb"})
        EXPECT_FALSE(is_package_spec(bad)) << bad;

    Scratch dir;
    write_text(dir / "r.toml", std::string(base_recipe) + "\n[rootfs]\npackages = [\"openssh-server\", \"-oAPT::Get::Trivial-Only=1\"]\n");
    std::string e = load_error(dir / "r.toml");
    EXPECT_NE(e.find("r.toml:"), std::string::npos) << e;
    EXPECT_NE(e.find("rootfs.packages: '-oAPT::Get::Trivial-Only=1' is not a Debian package name"), std::string::npos) << e;

    write_text(dir / "r.toml", std::string(base_recipe) + "\n[rootfs]\nbase = \"standard\"\n");
    e = load_error(dir / "r.toml");
    EXPECT_NE(e.find("rootfs.base: unknown base 'standard' (essential, minbase or important"), std::string::npos) << e;

    write_text(dir / "r.toml", std::string(base_recipe) + "\n[rootfs]\ndebs = [\"missing.deb\"]\n");
    e = load_error(dir / "r.toml");
    EXPECT_NE(e.find("rootfs.debs[0]: " + (dir / "missing.deb").string() + ": no such file"), std::string::npos) << e;

    write_text(dir / "s.sources", "");
    write_text(dir / "r.toml", std::string(base_recipe) + "\n[rootfs]\nsources = \"s.sources\"\n");
    e = load_error(dir / "r.toml");
    EXPECT_NE(e.find("rootfs.sources: names apt sources but the recipe installs no packages"), std::string::npos) << e;
}

// [update] config: the device's update.toml, checked as the device reads it, when the recipe is read.
TEST(Recipe, TheUpdateConfigIsCheckedWhenTheRecipeIsRead) {
    Scratch dir;
    write_text(dir / "ca.pem", "not checked here\n");
    write_text(dir / "good.toml", "[channel]\nurl = \"https://u.example/m/stable.json\"\nreboot = \"02:00-04:00\"\n");
    write_text(dir / "bad.toml", "[channel]\nurl = \"https://u.example/m/stable.json\"\nreboot = \"sometime\"\n");
    const std::string update = "[update]\ntrust_anchor = \"ca.pem\"\nconfig = ";
    write_text(dir / "good-recipe.toml", std::string(base_recipe) + update + "\"good.toml\"\n");
    EXPECT_EQ(load_recipe(dir / "good-recipe.toml").update.config, dir / "good.toml");
    write_text(dir / "bad-recipe.toml", std::string(base_recipe) + update + "\"bad.toml\"\n");
    const std::string e = load_error(dir / "bad-recipe.toml");
    EXPECT_EQ(e.rfind((dir / "bad-recipe.toml").string() + ":", 0), 0u) << e;
    EXPECT_NE(e.find("update.config"), std::string::npos) << e;
    EXPECT_NE(e.find("bad.toml:3"), std::string::npos) << e;
    EXPECT_NE(e.find("channel.reboot"), std::string::npos) << e;
    write_text(dir / "absent-recipe.toml", std::string(base_recipe) + update + "\"absent.toml\"\n");
    EXPECT_NE(load_error(dir / "absent-recipe.toml").find("update.config"), std::string::npos);
}
