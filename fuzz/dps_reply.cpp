// The DPS service's reply bodies as the device reads them: registration and operation status,
// and error bodies.
#include "fuzz/fuzz.hpp"
#include "provisioning/dps_client.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::provisioning;
    const std::string body(cairn::fuzz::text(data, size));
    int64_t code = 0;
    (void)dps_error_message(body, &code);
    cairn::fuzz::expect_only_errors([&] {
        nlohmann::json status = parse_dps_reply(body, "registration");
        (void)registration_result(status, "fuzz-device", "fuzz-operation");
    });
    return 0;
}
