// `cairnctl config import`: an IoT Edge 1.1 config.yaml turned into config.toml text. What it
// writes must itself be TOML that parse_config reads (or refuses with an Error).
#include "fuzz/fuzz.hpp"
#include "provisioning/config.hpp"
#include "provisioning/config_import.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] {
        std::string toml = cairn::provisioning::import_iotedge_config(std::string(cairn::fuzz::text(data, size)), "/fuzz/config.yaml");
        (void)cairn::provisioning::parse_config(toml, "/fuzz/imported.toml");
    });
    return 0;
}
