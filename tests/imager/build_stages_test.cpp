// The build pipeline: which stages a recipe's build runs, in which order, and what the context
// holds before the first stage runs.
#include "imager/build_stages.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::imager;
using cairn::test::Scratch;

namespace {

const char* no_boot_recipe = R"(name = "stages"
version = "1"
compatible = "stages-x86_64"

[disk]
size = "auto"
partitions = [
  { role = "root", size = "64MiB" },
  { role = "root-verity" },
]

[kernel]
enabled = false

[[rootfs.add]]
type = "directory"
path = "/etc"
)";

std::vector<std::string> stages_of(const std::filesystem::path& recipe, const std::filesystem::path& work) {
    BuildOptions o;
    o.recipe = recipe;
    o.out_dir = work;
    o.epoch = 1;
    BuildContext c(o, work);
    return planned_stages(c);
}

}  // namespace

TEST(BuildPipeline, StageNamesAreUniqueAndEveryStageRuns) {
    std::set<std::string_view> names;
    for (const Stage& s : build_pipeline()) {
        EXPECT_TRUE(names.insert(s.name).second) << s.name;
        EXPECT_NE(s.run, nullptr) << s.name;
    }
    // What the stages leave for each other: the manifest is composed after everything it
    // describes, and published last.
    ASSERT_GE(build_pipeline().size(), 2u);
    EXPECT_EQ(build_pipeline().back().name, "publish");
    EXPECT_EQ(build_pipeline()[build_pipeline().size() - 2].name, "manifest");
}

TEST(BuildPipeline, ARecipeWithoutKernelOrBootSkipsTheirStages) {
    Scratch dir;
    test::write_text(dir / "r.toml", no_boot_recipe);
    EXPECT_EQ(stages_of(dir / "r.toml", dir / "work"),
              (std::vector<std::string>{"staging", "root-tree", "device-files", "check-libraries", "sbom", "early-boot", "read-ahead", "root-filesystem", "disk-roots", "verity", "esps", "disk",
                                        "manifest", "publish"}));
}

TEST(BuildPipeline, TheContextKnowsEverySlotsRootBeforeTheFirstStage) {
    Scratch dir;
    test::write_text(dir / "r.toml", no_boot_recipe);
    BuildOptions o;
    o.recipe = dir / "r.toml";
    o.out_dir = dir / "work";
    o.epoch = 42;
    BuildContext c(o, dir / "work");
    EXPECT_EQ(c.epoch, 42);
    ASSERT_EQ(c.roots.size(), 2u);  // a root is one per slot
    EXPECT_EQ(c.roots[0].slot, 'a');
    EXPECT_EQ(c.roots[0].root_label, "root_a");
    EXPECT_EQ(c.roots[0].verity_label, "root_a_verity");
    EXPECT_EQ(c.roots[1].slot, 'b');
    EXPECT_EQ(c.roots[1].root_label, "root_b");
    EXPECT_EQ(c.tree.staging(), dir / "work" / "staging" / "tree");  // the kernel unpacks beside it, on the same filesystem
}

TEST(BuildPipeline, TheMinimalRecipeRunsEveryStageButPackagesAndConversions) {
    const auto recipe = test::source_dir() / "recipes/minimal.toml";
    Scratch dir;
    std::vector<std::string> all;
    for (const Stage& s : build_pipeline())
        if (s.name != "disk-formats" && s.name != "packages" && s.name != "image-var") all.emplace_back(s.name);  // --format; [rootfs] packages
    EXPECT_EQ(stages_of(recipe, dir / "work"), all);
}

TEST(BuildPipeline, TheDebianRecipeInstallsPackagesFirstAndMovesVarBeforeTheFilesystem) {
    const auto recipe = test::source_dir() / "recipes/eflow.toml";
    Scratch dir;
    const std::vector<std::string> stages = stages_of(recipe, dir / "work");
    ASSERT_FALSE(stages.empty());
    auto at = [&](const char* name) { return std::find(stages.begin(), stages.end(), name) - stages.begin(); };
    // The tree's place first, then the kernel starts unpacking beside it while the packages install.
    EXPECT_EQ(stages[0], "staging");
    EXPECT_EQ(stages[1], "kernel-ahead");
    EXPECT_EQ(stages[2], "packages");
    EXPECT_LT(at("root-tree"), at("kernel"));  // the kernel's modules go in after the recipe's steps, as before
    EXPECT_LT(at("sbom"), at("image-var"));  // the SBOM reads dpkg's database where dpkg left it
    EXPECT_LT(at("image-var"), at("root-filesystem"));
    EXPECT_EQ(at("read-ahead"), at("root-filesystem") - 1);  // the tree is final: its list is the root's
    // disk.raw takes the roots while verity, the UKIs and the ESPs are made, and is finished last.
    EXPECT_EQ(at("disk-roots"), at("root-filesystem") + 1);
    EXPECT_LT(at("esps"), at("disk"));
    // The reference values come from the signed UKIs, and the signed document goes onto the ESPs.
    EXPECT_EQ(at("reference"), at("ukis") + 1);
    EXPECT_EQ(at("esps"), at("reference") + 1);
    EXPECT_EQ(std::find(stages.begin(), stages.end(), "disk-formats"), stages.end());
}
