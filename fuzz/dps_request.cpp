// Whole requests to the DPS-compatible service (device, admin and simulated-hub APIs): an HTTP head
// parsed as the server parses it, the rest as the body, handed to DpsService::handle. The admin
// token is known ("Bearer fuzz") so the fuzzer reaches the enrollment parsers behind it.
#include "fuzz/fuzz.hpp"
#include "provisioning/dps_service.hpp"
#include "http/server.hpp"

namespace {

nlohmann::json enrollments() {
    return nlohmann::json::parse(R"({
        "idScope": "0ne00000A1B",
        "iotHubs": ["hub-a.example", "hub-b.example"],
        "enrollments": [
          {"registrationId": "sym-device", "deviceId": "sym-device-id",
           "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "ZGV2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ="}},
           "initialTwin": {"tags": {"site": "lab"}}},
          {"registrationId": "off-device", "provisioningStatus": "disabled",
           "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "ZGV2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ="}}}],
        "enrollmentGroups": [
          {"enrollmentGroupId": "sym-group",
           "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "Z3JvdXAta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="}}}]
    })");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::provisioning;
    static const nlohmann::json documents = enrollments();
    std::string_view input = cairn::fuzz::text(data, size);
    size_t end = input.find("\r\n\r\n");
    cairn::http::HttpRequest request;
    if (!cairn::http::parse_request_head(input.substr(0, end), request)) return 0;
    request.body = end == std::string_view::npos ? "" : input.substr(end + 4);
    cairn::fuzz::expect_only_errors([&] {
        cairn::http::decode_request_target(request);
        DpsServiceConfig config;
        config.admin_token = "fuzz";
        DpsService service(config, documents);
        (void)service.handle(request);
        // A second request against the state the first one left (an operation to poll, an enrollment put).
        (void)service.handle(request);
    });
    return 0;
}
