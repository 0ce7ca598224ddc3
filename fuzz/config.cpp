// The device's provisioning config.toml (IoT Identity Service schema).
#include "fuzz/fuzz.hpp"
#include "provisioning/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] {
        auto config = cairn::provisioning::parse_config(std::string(cairn::fuzz::text(data, size)), "/fuzz/config.toml");
        (void)cairn::provisioning::client_config(config);
    });
    return 0;
}
