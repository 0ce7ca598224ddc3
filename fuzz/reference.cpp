// A reference document (attestation/reference.hpp): a verifier parses it from a bundle's manifest
// or from what a device sends (its ESP's reference.json), before or without trusting it.
#include "attestation/reference.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::attestation;
    cairn::fuzz::expect_only_errors([&] {
        ReferenceDocument doc = parse_reference(cairn::fuzz::text(data, size), "fuzz.reference");
        // What to_json writes, parse_reference reads back the same.
        const std::string text = to_json(doc);
        if (to_json(parse_reference(text, "fuzz.reference (again)")) != text) __builtin_trap();
    });
    return 0;
}
