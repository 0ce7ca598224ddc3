// An image recipe (TOML). Relative paths resolve against the shipped recipes/ folder, so the seeds
// (the shipped recipes) find the files they name.
#include "fuzz/fuzz.hpp"
#include "imager/recipe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] {
        (void)cairn::imager::parse_recipe(cairn::fuzz::text(data, size), CAIRN_FUZZ_RECIPES_DIR "/fuzz.toml");
    });
    return 0;
}
