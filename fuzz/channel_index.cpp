// A channel's index (updater/channel.hpp), as any server or network in between may send it to
// a device: JSON, a base64 signature and its CMS structure, checked against the test trust anchor
// before any field is used; and bundle names resolved against the index's URL.
#include "fuzz/fuzz.hpp"
#include "updater/channel.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::updater;
    const std::string_view text = cairn::fuzz::text(data, size);
    cairn::fuzz::expect_only_errors([&] {
        const ChannelIndex i = open_channel_file(text, CAIRN_FUZZ_RECIPES_DIR "/keys/update-ca.pem", 1800000000, "fuzz.json");
        (void)resolve_bundle_url("https://u.example/m/stable.json", i.bundle);
    });
    // The same bytes as a bundle name: resolved, or refused, never anything but http(s).
    cairn::fuzz::expect_only_errors([&] {
        const std::string url = resolve_bundle_url("https://u.example/m/stable.json?t=1", std::string(text.substr(0, 512)));
        if (!is_bundle_url(url)) __builtin_trap();
    });
    return 0;
}
