// The fixed 64-byte head of an update bundle (magic, format, manifest/signature sizes, payload offset).
#include "fuzz/fuzz.hpp"
#include "updater/bundle.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] {
        auto header = cairn::updater::decode_header(cairn::fuzz::text(data, size), "fuzz.bundle");
        // What a reader derives from it before trusting anything else must not wrap.
        (void)cairn::updater::encode_header(header);
    });
    return 0;
}
