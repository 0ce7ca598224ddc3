// A package lock file (JSON, imager/package_lock.hpp): it comes with a recipe from wherever the
// recipe came from.
#include "fuzz/fuzz.hpp"
#include "imager/package_lock.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] {
        auto lock = cairn::imager::parse_lock(cairn::fuzz::text(data, size), "fuzz.lock");
        (void)cairn::imager::lock_text(lock);
    });
    return 0;
}
