#include "provisioning/dps_client.hpp"

#include <gtest/gtest.h>

#include "common/encoding.hpp"
#include "http/server.hpp"
#include "provisioning/sas.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;
using nlohmann::json;

namespace {

const std::string device_key = base64_encode(std::string_view("client-device-key-0123456789abcd"));
const std::string group_key = base64_encode(std::string_view("client-group-key-0123456789abcde"));

json sym(const std::string& key) { return {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", key}}}}; }

}  // namespace

class DpsClientTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    std::unique_ptr<cairn::test::DpsFixture> dps;

    void start(std::vector<std::string> extra = {}) {
        cairn::test::TestPki pki(scratch / "dps" / "pki");
        pki.device("enrolled", "x509-device");
        json enrollments = json::parse(R"({
            "enrollments": [
              {"registrationId": "sym-device"},
              {"registrationId": "off-device", "provisioningStatus": "disabled"},
              {"registrationId": "x509-device",
               "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificateFile": "pki/enrolled.pem"}}}}}],
            "enrollmentGroups": [
              {"enrollmentGroupId": "keys"},
              {"enrollmentGroupId": "factory-ca",
               "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificateFile": "pki/root.pem"}}}}}]
        })");
        enrollments["enrollments"][0]["attestation"] = sym(device_key);
        enrollments["enrollments"][1]["attestation"] = sym(device_key);
        enrollments["enrollmentGroups"][0]["attestation"] = sym(group_key);
        dps = std::make_unique<cairn::test::DpsFixture>(scratch / "dps", enrollments, extra);
    }
};

TEST_F(DpsClientTest, SymmetricKeyIndividual) {
    start();
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "sym-device";
    config.symmetric_key = device_key;
    config.payload = json{{"modelId", "cairn:1"}};
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned()) << r.registration_state.dump();
    EXPECT_EQ(r.device_id, "sym-device");
    EXPECT_TRUE(r.assigned_hub == "hub-one.example" || r.assigned_hub == "hub-two.example") << r.assigned_hub;
    EXPECT_EQ(r.substatus, "initialAssignment");
    EXPECT_EQ(r.payload["request_payload"]["modelId"], "cairn:1");
    EXPECT_EQ(r.requests, 2);  // PUT, then one GET
    auto log = dps->requests();
    ASSERT_EQ(log.size(), 2u);
    EXPECT_EQ(log[0]["method"], "PUT");
    EXPECT_EQ(log[1]["method"], "GET");
}

TEST_F(DpsClientTest, SymmetricKeyGroupDerivesTheDeviceKey) {
    start();
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "member-17";
    config.symmetric_key = group_key;
    config.symmetric_key_is_group = true;
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned());
    EXPECT_EQ(r.registration_state["symmetricKey"]["enrollmentGroupId"], "keys");
    // The same, with the key derived beforehand (what a factory writes to the device).
    config.symmetric_key = derive_device_key(group_key, "member-17");
    config.symmetric_key_is_group = false;
    EXPECT_TRUE(register_device(config).assigned());
}

TEST_F(DpsClientTest, X509IndividualWithRegistrationIdFromTheCertificate) {
    start();
    auto config = dps->client(AttestationMethod::X509);
    config.identity_cert = dps->pki() / "enrolled-chain.pem";
    config.identity_pk = dps->pki() / "enrolled.key";
    EXPECT_EQ(resolve_registration_id(config), "x509-device");
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned());
    EXPECT_EQ(r.device_id, "x509-device");
}

TEST_F(DpsClientTest, X509GroupThroughTheIntermediate) {
    start();
    auto chain = dps->pki().device("line-7", "factory-device-7");
    auto config = dps->client(AttestationMethod::X509);
    config.identity_cert = chain;
    config.identity_pk = dps->pki() / "line-7.key";
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned());
    EXPECT_EQ(r.registration_state["x509"]["enrollmentGroupId"], "factory-ca");
}

TEST_F(DpsClientTest, CertificateFromAnUnknownCaIsRefused) {
    start();
    auto chain = dps->pki().device("stranger", "stranger-device", "unknown-root");
    auto config = dps->client(AttestationMethod::X509);
    config.identity_cert = chain;
    config.identity_pk = dps->pki() / "stranger.key";
    cairn::test::expect_error([&] { register_device(config); }, {"stranger-device", "HTTP 401", "401002", "Invalid certificate"});
}

TEST_F(DpsClientTest, DisabledEnrollment) {
    start();
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "off-device";
    config.symmetric_key = device_key;
    RegistrationResult r = register_device(config);
    EXPECT_EQ(r.status, "disabled");
    EXPECT_FALSE(r.assigned());
    EXPECT_NE(r.error_message.find("disabled"), std::string::npos);
}

TEST_F(DpsClientTest, ForgedKeyIsRefusedWithoutRetrying) {
    start();
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "sym-device";
    config.symmetric_key = base64_encode(std::string_view("forged-key-0123456789abcdef01234"));
    cairn::test::expect_error([&] { register_device(config); }, {"registration of 'sym-device'", "HTTP 401", "401002", "signature"});
    EXPECT_EQ(dps->requests().size(), 1u);
}

TEST_F(DpsClientTest, ClockSkewIsAbsorbedOrResynchronised) {
    // The service's clock runs two hours ahead of the device's: a one-hour token looks expired;
    // the client learns the offset from the Date header and sends a fresh one.
    start({"--clock-offset", "7200"});
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "sym-device";
    config.symmetric_key = device_key;
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned());
    auto log = dps->requests();
    ASSERT_GE(log.size(), 3u);
    EXPECT_EQ(log[0]["status"], 401);
    EXPECT_NE(log[0]["note"].get<std::string>().find("expired"), std::string::npos);
    // A token that is really expired (lifetime below zero) stays refused after one resync.
    config.token_lifetime_s = -60;
    cairn::test::expect_error([&] { register_device(config); }, {"HTTP 401", "expired"});
}

TEST_F(DpsClientTest, ServerErrorsAndThrottlingAreRetried) {
    start();
    ASSERT_EQ(dps->admin("POST", "/admin/faults", R"({"status":500,"count":2})").status, 204);
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "sym-device";
    config.symmetric_key = device_key;
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned());
    EXPECT_EQ(r.requests, 4);
    ASSERT_EQ(dps->admin("POST", "/admin/faults", R"({"status":429,"count":1,"retryAfter":1})").status, 204);
    auto t0 = std::chrono::steady_clock::now();
    r = register_device(config);
    EXPECT_TRUE(r.assigned());
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(950));  // Retry-After honoured
    // Faults beyond the attempts allowed: a clear error.
    ASSERT_EQ(dps->admin("POST", "/admin/faults", R"({"status":503,"count":10,"retryAfter":0})").status, 204);
    config.retry.max_attempts = 3;
    cairn::test::expect_error([&] { register_device(config); }, {"HTTP 503", "after 3 attempts"});
}

TEST_F(DpsClientTest, ServiceDownIsRetriedThenReported) {
    start();
    dps->stop();
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "sym-device";
    config.symmetric_key = device_key;
    config.retry.max_attempts = 3;
    cairn::test::expect_error([&] { register_device(config); }, {"cannot reach the provisioning service after 3 attempts", "localhost"});
    // It comes back while the client is still retrying.
    config.retry.max_attempts = 20;
    config.retry.base_delay_ms = 200;
    // (swtpm and cairn-dps die with the thread that started them: restart from this one.)
    RegistrationResult r;
    std::string failure;
    std::thread client([&] {
        try {
            r = register_device(config);
        } catch (const std::exception& e) {
            failure = e.what();
        }
    });
    ::usleep(600000);
    dps->start();
    client.join();
    EXPECT_EQ(failure, "");
    EXPECT_TRUE(r.assigned());
    EXPECT_GT(r.requests, 2);
}

TEST_F(DpsClientTest, PollsWhileAssigning) {
    start({"--assign-delay-ms", "1200"});
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "sym-device";
    config.symmetric_key = device_key;
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned());
    EXPECT_GE(r.requests, 3);  // an operation that takes 1.2 s: at least one GET finds it still assigning
}

TEST_F(DpsClientTest, UntrustedServerAndMalformedRepliesAreClearErrors) {
    start();
    auto config = dps->client(AttestationMethod::SymmetricKey);
    config.registration_id = "sym-device";
    config.symmetric_key = device_key;
    config.trust_bundle = dps->pki() / "unknown-root.pem";
    cairn::test::expect_error([&] { register_device(config); }, {"provisioning:", "SSL"});
    EXPECT_EQ(dps->requests().size(), 0u);

    // A server that answers with broken JSON (the real service cannot be made to).
    http::HttpsServerConfig server_config;
    server_config.certificate_chain = dps->pki() / "server-chain.pem";
    server_config.private_key = dps->pki() / "server.key";
    http::HttpsServer broken(server_config, [](const http::HttpRequest&) {
        http::HttpResponse r;
        r.status = 202;
        r.body = "{\"operationId\": ";
        return r;
    });
    config.trust_bundle = dps->pki() / "root.pem";
    config.global_endpoint = "https://localhost:" + std::to_string(broken.port());
    cairn::test::expect_error([&] { register_device(config); }, {"registration", "not valid JSON"});
}

TEST_F(DpsClientTest, ConfigurationMistakes) {
    DpsClientConfig config;
    config.global_endpoint = "https://localhost:1/";
    cairn::test::expect_error([&] { register_device(config); }, {"id_scope is empty"});
    config.id_scope = "s";
    cairn::test::expect_error([&] { register_device(config); }, {"without a key"});
    config.symmetric_key = "a2V5";
    cairn::test::expect_error([&] { register_device(config); }, {"registration_id is required"});
    config.registration_id = "d";
    config.global_endpoint = "http://localhost:1";
    cairn::test::expect_error([&] { register_device(config); }, {"not an https:// URL"});
    config.method = AttestationMethod::X509;
    cairn::test::expect_error([&] { register_device(config); }, {"identity_cert and identity_pk"});
    EXPECT_EQ(tpm_registration_id("abc"), "xj4bnp4pahh6uqkbidpf3lrceoyagyndsylxvhfucd7wd4qacwwq");
}

TEST(DpsReplies, ReadWithoutTheNetwork) {
    using nlohmann::json;
    json status = parse_dps_reply(R"({"operationId":"op-1","status":"assigned","registrationState":
        {"assignedHub":"hub.example","deviceId":"d1","substatus":"initialAssignment","payload":{"a":1}}})", "registration");
    RegistrationResult r = registration_result(status, "d1", "");
    EXPECT_TRUE(r.assigned());
    EXPECT_EQ(r.operation_id, "op-1");
    EXPECT_EQ(r.assigned_hub, "hub.example");
    EXPECT_EQ(r.payload["a"], 1);
    EXPECT_THROW(parse_dps_reply("[1]", "registration"), cairn::Error);
    EXPECT_THROW(parse_dps_reply("{", "registration"), cairn::Error);
    EXPECT_THROW(registration_result(json{{"status", "assigned"}}, "d1", "op"), cairn::Error);
    // Found by fuzz/dps_reply: a field of another type threw nlohmann's type_error out of register_device.
    cairn::test::expect_error([] { registration_result(json{{"status", 1}}, "d1", "op"); }, {"registration of 'd1'", "\"status\"", "not a string"});
    EXPECT_THROW(registration_result(json{{"registrationState", {{"deviceId", 5}}}}, "d1", "op"), cairn::Error);
    int64_t code = 0;
    EXPECT_EQ(dps_error_message(R"({"errorCode":401002,"message":"Unauthorized"})", &code), "Unauthorized");
    EXPECT_EQ(code, 401002);
    EXPECT_EQ(dps_error_message(""), "(no body)");
    // Found by fuzz/dps_reply: a number too large for a double is nlohmann's out_of_range, not parse_error.
    EXPECT_THROW(parse_dps_reply(R"({"status":1e400})", "registration"), cairn::Error);
    EXPECT_EQ(dps_error_message(R"({"errorCode":1e400})"), R"({"errorCode":1e400})");
}
