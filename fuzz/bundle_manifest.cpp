// An update bundle's manifest (JSON): parsed before the signature is known to be good only in
// `cairnctl bundle info`, but a parser of bytes from a file all the same.
#include "fuzz/fuzz.hpp"
#include "updater/bundle.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::updater;
    cairn::fuzz::expect_only_errors([&] {
        BundleManifest m = BundleManifest::parse(cairn::fuzz::text(data, size), "fuzz.manifest");
        (void)m.to_json();
        (void)cairn::compare_versions(m.version, "0.1.0");
        (void)cairn::compare_versions("0.1.0", m.version);
        for (const char* role : {"root", "root-verity", "esp"})
            for (const char* slot : {"a", "b"}) (void)m.find(role, slot);
    });
    return 0;
}
