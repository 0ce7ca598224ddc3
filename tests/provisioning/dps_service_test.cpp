#include "provisioning/dps_service.hpp"

#include <gtest/gtest.h>

#include "common/file.hpp"
#include "common/encoding.hpp"
#include "provisioning/sas.hpp"
#include "store/sqlite.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;
using nlohmann::json;

namespace {

const std::string scope = "0ne00000A1B";
const std::string device_key = base64_encode(std::string_view("device-key-0123456789abcdef01234"));
const std::string group_key = base64_encode(std::string_view("group-key-0123456789abcdef012345"));

http::HttpRequest request(const std::string& method, const std::string& path, const std::string& body = "",
                    const std::string& authorization = "", const std::string& version = "2021-06-01") {
    http::HttpRequest r;
    r.method = method;
    r.path = path;
    if (!version.empty()) r.query["api-version"] = version;
    r.body = body;
    if (!authorization.empty()) r.headers["authorization"] = authorization;
    return r;
}

std::string token(const std::string& registration_id, const std::string& key_b64, int64_t lifetime = 3600) {
    return make_sas_token(sas_resource(scope, registration_id), unix_seconds(std::chrono::system_clock::now()) + lifetime,
                          key_signer(base64_decode(key_b64, "key")));
}

}  // namespace

class DpsServiceTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    cairn::test::TestPki pki{scratch / "pki"};

    json enrollments() {
        pki.device("enrolled", "x509-device");
        json doc = json::parse(R"({
            "iotHubs": ["hub-a.example", "hub-b.example", "hub-c.example"],
            "enrollments": [
              {"registrationId": "sym-device", "deviceId": "sym-device-id",
               "attestation": {"type": "symmetricKey", "symmetricKey": {}}, "initialTwin": {"tags": {"site": "lab"}}},
              {"registrationId": "off-device", "provisioningStatus": "disabled",
               "attestation": {"type": "symmetricKey", "symmetricKey": {}}},
              {"registrationId": "x509-device", "iotHubs": ["x509-hub.example"],
               "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {}}}}}],
            "enrollmentGroups": [
              {"enrollmentGroupId": "sym-group", "attestation": {"type": "symmetricKey", "symmetricKey": {}}},
              {"enrollmentGroupId": "ca-group", "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {}}}}}]
        })");
        doc["idScope"] = scope;
        doc["enrollments"][0]["attestation"]["symmetricKey"]["primaryKey"] = device_key;
        doc["enrollments"][1]["attestation"]["symmetricKey"]["primaryKey"] = device_key;
        doc["enrollments"][2]["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"] = cairn::read_file(pki / "enrolled.pem");
        doc["enrollmentGroups"][0]["attestation"]["symmetricKey"]["primaryKey"] = group_key;
        doc["enrollmentGroups"][1]["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"] = cairn::read_file(pki / "intermediate.pem");
        return doc;
    }

    // Registers and fetches the operation; returns the final operation JSON.
    json register_and_poll(DpsService& dps, http::HttpRequest put, const std::string& registration_id) {
        http::HttpResponse r = dps.handle(put);
        EXPECT_EQ(r.status, 202) << r.body;
        if (r.status != 202) return json::parse(r.body);
        json accepted = json::parse(r.body);
        EXPECT_EQ(accepted["status"], "assigning");
        bool has_retry_after = false;
        for (auto& [k, v] : r.headers) has_retry_after = has_retry_after || (k == "Retry-After" && v == "3");
        EXPECT_TRUE(has_retry_after);
        http::HttpRequest get = request("GET", "/" + scope + "/registrations/" + registration_id + "/operations/" + accepted["operationId"].get<std::string>());
        get.headers = put.headers;
        get.peer_chain.clear();
        for (auto& c : put.peer_chain) get.peer_chain.push_back(copy_certificate(c.get()));
        http::HttpResponse done = dps.handle(get);
        EXPECT_EQ(done.status, 200) << done.body;
        return json::parse(done.body);
    }

    std::string body(const std::string& registration_id, json extra = json::object()) {
        extra["registrationId"] = registration_id;
        return extra.dump();
    }
};

TEST_F(DpsServiceTest, SymmetricKeyIndividualIsAssignedWithTwinAndPayload) {
    DpsService dps({}, enrollments());
    json op = register_and_poll(dps,
                                request("PUT", "/" + scope + "/registrations/sym-device/register",
                                        body("sym-device", {{"payload", {{"model", "x1"}}}}), token("sym-device", device_key)),
                                "sym-device");
    EXPECT_EQ(op["status"], "assigned");
    const json& state = op["registrationState"];
    EXPECT_EQ(state["deviceId"], "sym-device-id");
    EXPECT_EQ(state["substatus"], "initialAssignment");
    EXPECT_TRUE(state["assignedHub"].get<std::string>().ends_with(".example"));
    EXPECT_EQ(state["payload"]["request_payload"]["model"], "x1");
    EXPECT_EQ(state["initialTwin"]["tags"]["site"], "lab");
    EXPECT_TRUE(state.contains("symmetricKey"));
    EXPECT_EQ(dps.registrations()["sym-device"]["assignedHub"], state["assignedHub"]);
}

TEST_F(DpsServiceTest, GroupKeyDerivesDeviceKeysAndSpreadsOverHubs) {
    DpsService dps({}, enrollments());
    std::set<std::string> hubs;
    for (int i = 0; i < 12; ++i) {
        const std::string id = "group-member-" + std::to_string(i);
        json op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/" + id + "/register", body(id),
                                                 token(id, derive_device_key(group_key, id))), id);
        ASSERT_EQ(op["status"], "assigned");
        EXPECT_EQ(op["registrationState"]["deviceId"], id);
        EXPECT_EQ(op["registrationState"]["symmetricKey"]["enrollmentGroupId"], "sym-group");
        hubs.insert(op["registrationState"]["assignedHub"].get<std::string>());
    }
    EXPECT_GE(hubs.size(), 2u);  // hashed allocation uses more than one hub
    // The group key itself is not a device key.
    http::HttpResponse r = dps.handle(request("PUT", "/" + scope + "/registrations/m/register", body("m"), token("m", group_key)));
    EXPECT_EQ(r.status, 401);
}

TEST_F(DpsServiceTest, ForgedExpiredAndMisdirectedTokensAreRefused) {
    DpsService dps({}, enrollments());
    const std::string path = "/" + scope + "/registrations/sym-device/register";
    const std::string other = base64_encode(std::string_view("another-key-0123456789abcdef0123"));
    http::HttpResponse r = dps.handle(request("PUT", path, body("sym-device"), token("sym-device", other)));
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(json::parse(r.body)["errorCode"], 401002);
    r = dps.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key, -60)));
    EXPECT_EQ(r.status, 401);
    EXPECT_NE(r.body.find("expired"), std::string::npos);
    r = dps.handle(request("PUT", path, body("sym-device"), token("someone-else", device_key)));
    EXPECT_EQ(r.status, 401);
    r = dps.handle(request("PUT", path, body("sym-device"), "SharedAccessSignature garbage"));
    EXPECT_EQ(r.status, 401);
    r = dps.handle(request("PUT", path, body("sym-device")));
    EXPECT_EQ(r.status, 401);
    // A service whose clock runs 10 minutes ahead refuses a 5-minute token; one of an hour passes.
    DpsServiceConfig ahead;
    ahead.clock_offset_seconds = 600;
    DpsService skewed(ahead, enrollments());
    EXPECT_EQ(skewed.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key, 300))).status, 401);
    EXPECT_EQ(skewed.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key, 3600))).status, 202);
}

TEST_F(DpsServiceTest, DisabledEnrollmentGetsDisabled) {
    DpsService dps({}, enrollments());
    json op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/off-device/register", body("off-device"),
                                             token("off-device", device_key)), "off-device");
    EXPECT_EQ(op["status"], "disabled");
    EXPECT_EQ(op["registrationState"]["status"], "disabled");
    EXPECT_FALSE(op["registrationState"].contains("assignedHub"));
}

TEST_F(DpsServiceTest, X509IndividualAndGroup) {
    DpsService dps({}, enrollments());
    auto with_chain = [&](http::HttpRequest r, const std::filesystem::path& chain) {
        r.peer_chain = load_pem_certificates(chain);
        return r;
    };
    json op = register_and_poll(dps, with_chain(request("PUT", "/" + scope + "/registrations/x509-device/register", body("x509-device")),
                                                pki / "enrolled-chain.pem"), "x509-device");
    EXPECT_EQ(op["registrationState"]["assignedHub"], "x509-hub.example");
    EXPECT_TRUE(op["registrationState"].contains("x509"));
    pki.device("member", "ca-member-1");
    op = register_and_poll(dps, with_chain(request("PUT", "/" + scope + "/registrations/ca-member-1/register", body("ca-member-1")),
                                           pki / "member-chain.pem"), "ca-member-1");
    EXPECT_EQ(op["registrationState"]["x509"]["enrollmentGroupId"], "ca-group");
    // CN must be the registration ID.
    http::HttpResponse r = dps.handle(with_chain(request("PUT", "/" + scope + "/registrations/other/register", body("other")), pki / "member-chain.pem"));
    EXPECT_EQ(r.status, 401);
    EXPECT_NE(r.body.find("CN"), std::string::npos);
    // A certificate from an unknown CA.
    pki.device("stranger", "stranger-1", "unknown-root");
    r = dps.handle(with_chain(request("PUT", "/" + scope + "/registrations/stranger-1/register", body("stranger-1")), pki / "stranger-chain.pem"));
    EXPECT_EQ(r.status, 401);
    EXPECT_NE(r.body.find("Invalid certificate"), std::string::npos);
}

TEST_F(DpsServiceTest, ProtocolErrors) {
    DpsService dps({}, enrollments());
    const std::string path = "/" + scope + "/registrations/sym-device/register";
    EXPECT_EQ(dps.handle(request("PUT", path, "{not json", token("sym-device", device_key))).status, 400);
    EXPECT_EQ(dps.handle(request("PUT", path, body("other"), token("sym-device", device_key))).status, 400);
    EXPECT_EQ(dps.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key), "")).status, 400);
    EXPECT_EQ(dps.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key), "1999-01-01")).status, 400);
    EXPECT_EQ(dps.handle(request("PUT", "/wrongscope/registrations/sym-device/register", body("sym-device"))).status, 404);
    EXPECT_EQ(dps.handle(request("GET", path, "", token("sym-device", device_key))).status, 405);
    EXPECT_EQ(dps.handle(request("GET", "/" + scope + "/registrations/sym-device/operations/nope", "", token("sym-device", device_key))).status, 404);
    // TPM without a challenge maker configured.
    EXPECT_EQ(dps.handle(request("PUT", path, body("sym-device", {{"tpm", {{"endorsementKey", "AAAA"}}}}))).status, 401);
}

TEST_F(DpsServiceTest, InjectedFaultsAndRequestLog) {
    DpsServiceConfig config;
    config.request_log = scratch / "requests.jsonl";
    DpsService dps(config, enrollments());
    dps.inject_faults(429, 2, 7);
    const std::string path = "/" + scope + "/registrations/sym-device/register";
    http::HttpResponse r = dps.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key)));
    EXPECT_EQ(r.status, 429);
    EXPECT_NE(std::find(r.headers.begin(), r.headers.end(), std::pair<std::string, std::string>("Retry-After", "7")), r.headers.end());
    EXPECT_EQ(dps.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key))).status, 429);
    EXPECT_EQ(dps.handle(request("PUT", path, body("sym-device"), token("sym-device", device_key))).status, 202);
    json log = dps.request_log();
    ASSERT_EQ(log.size(), 3u);
    EXPECT_EQ(log[0]["status"], 429);
    EXPECT_EQ(log[2]["registrationId"], "sym-device");
    EXPECT_EQ(log[2]["note"], "assigning");
    EXPECT_NE(cairn::read_file(scratch / "requests.jsonl").find("\"status\":202"), std::string::npos);
}

TEST_F(DpsServiceTest, AdminApi) {
    DpsServiceConfig config;
    config.admin_token = "s3cret";
    DpsService dps(config, enrollments());
    auto admin = [&](const std::string& method, const std::string& path, const std::string& b = "") {
        http::HttpRequest r = request(method, path, b, "Bearer s3cret", "");
        return dps.handle(r);
    };
    EXPECT_EQ(dps.handle(request("GET", "/admin/enrollments", "", "Bearer wrong", "")).status, 401);
    json enrollment = {{"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", device_key}}}}}};
    EXPECT_EQ(admin("PUT", "/admin/enrollments/new-device", enrollment.dump()).status, 200);
    json op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/new-device/register", body("new-device"),
                                             token("new-device", device_key)), "new-device");
    EXPECT_EQ(op["status"], "assigned");
    enrollment["provisioningStatus"] = "disabled";
    EXPECT_EQ(admin("PUT", "/admin/enrollments/new-device", enrollment.dump()).status, 200);
    op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/new-device/register", body("new-device"),
                                        token("new-device", device_key)), "new-device");
    EXPECT_EQ(op["status"], "disabled");
    EXPECT_EQ(admin("GET", "/admin/enrollments/new-device").status, 200);
    EXPECT_EQ(admin("DELETE", "/admin/enrollments/new-device").status, 204);
    EXPECT_EQ(admin("DELETE", "/admin/enrollments/new-device").status, 404);
    EXPECT_EQ(admin("PUT", "/admin/enrollments/bad", R"({"attestation":{"type":"magic"}})").status, 400);
    EXPECT_EQ(admin("POST", "/admin/faults", R"({"status":500,"count":1})").status, 204);
    EXPECT_EQ(dps.handle(request("PUT", "/" + scope + "/registrations/x/register", body("x"))).status, 500);
    EXPECT_GE(json::parse(admin("GET", "/admin/requests").body).size(), 3u);
    EXPECT_EQ(json::parse(admin("GET", "/admin/registrations").body).count("new-device"), 1u);
    // Off without a token.
    DpsService closed({}, enrollments());
    EXPECT_EQ(closed.handle(request("GET", "/admin/enrollments", "", "Bearer ", "")).status, 404);
}

TEST_F(DpsServiceTest, EnrollmentFilesJsonAndToml) {
    cairn::test::write_text(scratch / "e.toml", "idScope = \"" + scope + "\"\niotHubs = [\"h.example\"]\n"
                                                "[[enrollments]]\nregistrationId = \"t1\"\n"
                                                "[enrollments.attestation]\ntype = \"x509\"\n"
                                                "[enrollments.attestation.x509.clientCertificates.primary]\ncertificateFile = \"pki/root.pem\"\n");
    json doc = load_enrollments_file(scratch / "e.toml");
    EXPECT_NE(doc["enrollments"][0]["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"].get<std::string>().find("BEGIN CERTIFICATE"),
              std::string::npos);
    DpsService dps({}, doc);
    EXPECT_EQ(dps.id_scope(), scope);
    cairn::test::write_text(scratch / "bad.json", "{\"idScope\": ");
    cairn::test::expect_error([&] { load_enrollments_file(scratch / "bad.json"); }, {"bad.json", "not valid JSON"});
    cairn::test::expect_error([&] { DpsService({}, json{{"idScope", "s"}, {"enrollments", {{{"registrationId", "r"}}}}}); },
                              {"enrollments['r'].attestation"});
    cairn::test::expect_error([&] { DpsService({}, json{{"iotHubs", json::array()}}); }, {"idScope missing"});
}

// An individual enrollment decides for its registration ID, whatever its attestation: a key
// derived from a group's, or a certificate from a group's CA, does not register it.
TEST_F(DpsServiceTest, AnIndividualEnrollmentTakesPrecedenceOverEveryGroup) {
    DpsService dps({}, enrollments());
    const std::string x509_path = "/" + scope + "/registrations/x509-device/register";
    http::HttpResponse r = dps.handle(request("PUT", x509_path, body("x509-device"), token("x509-device", derive_device_key(group_key, "x509-device"))));
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_NE(r.body.find("individual"), std::string::npos) << r.body;
    // The same once the individual enrollment is disabled.
    json disabled = enrollments()["enrollments"][2];
    disabled["provisioningStatus"] = "disabled";
    dps.put_enrollment(disabled);
    r = dps.handle(request("PUT", x509_path, body("x509-device"), token("x509-device", derive_device_key(group_key, "x509-device"))));
    EXPECT_EQ(r.status, 401) << r.body;
    // A certificate under the group's CA whose CN is an ID enrolled individually by symmetric key.
    pki.device("impostor", "sym-device");
    http::HttpRequest put = request("PUT", "/" + scope + "/registrations/sym-device/register", body("sym-device"));
    put.peer_chain = load_pem_certificates(pki / "impostor-chain.pem");
    r = dps.handle(put);
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_TRUE(dps.registrations().empty()) << dps.registrations().dump();
    // Group members without an individual enrollment still register.
    json op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/member-1/register", body("member-1"),
                                             token("member-1", derive_device_key(group_key, "member-1"))), "member-1");
    EXPECT_EQ(op["status"], "assigned");
}

TEST_F(DpsServiceTest, RegistrationIdsFollowDpsRules) {
    EXPECT_TRUE(is_valid_registration_id("abc-1.2_3:4"));
    EXPECT_TRUE(is_valid_registration_id(std::string(128, 'a')));
    for (const std::string& bad : std::vector<std::string>{"", "Upper", "a b", "a/b", "\xc3\xa9", "a!", std::string(129, 'a')})
        EXPECT_FALSE(is_valid_registration_id(bad)) << bad;
    DpsService dps({}, enrollments());
    for (const std::string& bad : std::vector<std::string>{"Sym-Device", "sym%device", "\xff\xfe", std::string(129, 'a')}) {
        http::HttpResponse r = dps.handle(request("PUT", "/" + scope + "/registrations/" + bad + "/register", "{}", token(bad, device_key)));
        EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
        json reply = json::parse(r.body);
        EXPECT_EQ(reply["errorCode"], 400003);
        EXPECT_TRUE(reply.contains("trackingId"));
        r = dps.handle(request("GET", "/" + scope + "/registrations/" + bad + "/operations/x", "", token(bad, device_key)));
        EXPECT_EQ(r.status, 400) << bad;
    }
    EXPECT_EQ(dps.request_log().size(), 8u);  // each refusal logged, bytes that are not UTF-8 included
    // 128 characters is allowed: refused for want of an enrollment, not for its form.
    const std::string longest(128, 'z');
    EXPECT_EQ(dps.handle(request("PUT", "/" + scope + "/registrations/" + longest + "/register", body(longest), token(longest, device_key))).status, 401);
    // Enrollments are held to the same rule.
    json doc = enrollments();
    doc["enrollments"][0]["registrationId"] = "Sym-Device";
    cairn::test::expect_error([&] { DpsService({}, doc); }, {"'Sym-Device'", "registration ID"});
}

TEST_F(DpsServiceTest, AdminTokenMustMatchExactly) {
    DpsServiceConfig config;
    config.admin_token = "s3cret";
    DpsService dps(config, enrollments());
    for (const std::string& wrong : std::vector<std::string>{"Bearer s3cre", "Bearer s3cret2", "Bearer S3cret", "Bearer ", "s3cret", "Bearer  s3cret", ""})
        EXPECT_EQ(dps.handle(request("GET", "/admin/enrollments", "", wrong, "")).status, 401) << wrong;
    EXPECT_EQ(dps.handle(request("GET", "/admin/enrollments", "", "Bearer s3cret", "")).status, 200);
}

TEST_F(DpsServiceTest, StoredOperationsAreBoundedPerRegistrationAndInTotal) {
    DpsServiceConfig config;
    config.max_operations_per_registration = 2;
    config.max_operations = 3;
    DpsService dps(config, enrollments());
    auto put = [&](const std::string& id, const std::string& key) {
        http::HttpResponse r = dps.handle(request("PUT", "/" + scope + "/registrations/" + id + "/register", body(id), token(id, key)));
        EXPECT_EQ(r.status, 202) << r.body;
        return json::parse(r.body)["operationId"].get<std::string>();
    };
    auto get = [&](const std::string& id, const std::string& key, const std::string& op) {
        return dps.handle(request("GET", "/" + scope + "/registrations/" + id + "/operations/" + op, "", token(id, key))).status;
    };
    const std::string op1 = put("sym-device", device_key), op2 = put("sym-device", device_key), op3 = put("sym-device", device_key);
    EXPECT_EQ(get("sym-device", device_key, op1), 404);  // the device's oldest went
    EXPECT_EQ(get("sym-device", device_key, op2), 200);
    EXPECT_EQ(get("sym-device", device_key, op3), 200);
    const std::string m1 = derive_device_key(group_key, "member-1"), m2 = derive_device_key(group_key, "member-2");
    const std::string op4 = put("member-1", m1);
    EXPECT_EQ(get("sym-device", device_key, op2), 200);  // three in all: room for it
    const std::string op5 = put("member-2", m2);
    EXPECT_EQ(get("sym-device", device_key, op2), 404);  // the oldest overall went
    EXPECT_EQ(get("sym-device", device_key, op3), 200);
    EXPECT_EQ(get("member-1", m1, op4), 200);
    EXPECT_EQ(get("member-2", m2, op5), 200);
}

// Anyone may send a TPM enrollment's EK (it is public); that must not take the challenge away
// from the device answering it, nor the key of a device that answered.
TEST_F(DpsServiceTest, APendingTpmChallengeCannotBeReplaced) {
    DpsServiceConfig config;
    config.tpm_challenge_ttl_seconds = 1;
    json doc = enrollments();
    const std::string ek = "endorsement-key-public-area-0123";
    doc["enrollments"].push_back({{"registrationId", "tpm-device"}, {"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", base64_encode(ek)}}}}}});
    DpsService dps(config, doc);
    int made = 0;
    dps.set_tpm_challenge_maker([&](const std::string&, const std::string& srk) {
        ++made;
        return TpmChallenge{"blob:" + srk + ":" + std::to_string(made), "hmac-key-" + std::to_string(made)};
    });
    const std::string path = "/" + scope + "/registrations/tpm-device/register";
    auto tpm_body = [&](const std::string& srk) {
        return body("tpm-device", {{"tpm", {{"endorsementKey", base64_encode(ek)}, {"storageRootKey", base64_encode(srk)}}}});
    };
    auto challenge = [&](const std::string& srk) { return dps.handle(request("PUT", path, tpm_body(srk))); };

    http::HttpResponse first = challenge("device-srk");
    ASSERT_EQ(first.status, 401) << first.body;
    const std::string blob = json::parse(first.body)["authenticationKey"];
    http::HttpResponse other = challenge("someone-elses-srk");
    EXPECT_EQ(other.status, 409) << other.body;
    EXPECT_NE(std::find_if(other.headers.begin(), other.headers.end(), [](auto& h) { return h.first == "Retry-After"; }), other.headers.end());
    http::HttpResponse again = challenge("device-srk");  // the device lost the reply and asks again: the same challenge
    EXPECT_EQ(again.status, 401);
    EXPECT_EQ(json::parse(again.body)["authenticationKey"], blob);
    EXPECT_EQ(made, 1);

    const std::string sas = token("tpm-device", base64_encode(std::string_view("hmac-key-1")));
    json op = register_and_poll(dps, request("PUT", path, tpm_body("device-srk"), sas), "tpm-device");
    EXPECT_EQ(op["status"], "assigned");
    EXPECT_EQ(op["registrationState"]["tpm"]["authenticationKey"], blob);
    // A new challenge after that is issued, but the device's answered key keeps working.
    EXPECT_EQ(challenge("someone-elses-srk").status, 401);
    EXPECT_EQ(made, 2);
    EXPECT_EQ(dps.handle(request("POST", "/" + scope + "/registrations/tpm-device", "", sas)).status, 200);
    EXPECT_EQ(challenge("a-third-srk").status, 409);
    // An unanswered challenge expires; then another SRK gets a fresh one.
    ::usleep(1200000);
    EXPECT_EQ(challenge("a-third-srk").status, 401);
    EXPECT_EQ(made, 3);
}

TEST_F(DpsServiceTest, TheRequestLogFileIsRotated) {
    DpsServiceConfig config;
    config.request_log = scratch / "requests.jsonl";
    config.request_log_max_bytes = 1000;
    DpsService dps(config, enrollments());
    for (int i = 0; i < 30; ++i)
        dps.handle(request("PUT", "/" + scope + "/registrations/sym-device/register", body("sym-device"), token("sym-device", device_key)));
    EXPECT_NO_THROW(dps.handle(request("PUT", "/" + scope + "/registrations/\xff/register", "{}")));  // logged though not UTF-8
    ASSERT_TRUE(std::filesystem::exists(scratch / "requests.jsonl.1"));
    EXPECT_LE(std::filesystem::file_size(scratch / "requests.jsonl"), 1000u);
    EXPECT_LE(std::filesystem::file_size(scratch / "requests.jsonl.1"), 1000u);
    EXPECT_GT(std::filesystem::file_size(scratch / "requests.jsonl"), 0u);
    EXPECT_EQ(cairn::read_file(scratch / "requests.jsonl").back(), '\n');
}

// With a state file, a new service on the same file carries on where the old one stopped: its
// operations can be polled, its registrations and hub devices are known, enrollments put over the
// admin API are there, and a TPM challenge issued before the restart is answered after it.
TEST_F(DpsServiceTest, AStateFileKeepsEverythingAcrossARestart) {
    DpsServiceConfig config;
    config.admin_token = "s3cret";
    config.state_file = scratch / "state" / "dps.sqlite";
    json doc = enrollments();
    const std::string ek = "endorsement-key-public-area-0123";
    doc["enrollments"].push_back({{"registrationId", "tpm-device"}, {"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", base64_encode(ek)}}}}}});
    const std::string tpm_path = "/" + scope + "/registrations/tpm-device/register";
    const std::string tpm_body = body("tpm-device", {{"tpm", {{"endorsementKey", base64_encode(ek)}, {"storageRootKey", base64_encode(std::string_view("srk"))}}}});
    auto with_chain = [&](http::HttpRequest r) {
        r.peer_chain = load_pem_certificates(pki / "enrolled-chain.pem");
        return r;
    };
    auto admin = [&](DpsService& dps, const std::string& method, const std::string& path, const std::string& b = "") {
        return dps.handle(request(method, path, b, "Bearer s3cret", ""));
    };
    std::string sym_operation, x509_operation, blob;
    {
        DpsService dps(config, doc);
        int made = 0;
        dps.set_tpm_challenge_maker([&](const std::string&, const std::string&) {
            ++made;
            return TpmChallenge{"the-blob", "hmac-key-before"};
        });
        http::HttpResponse r = dps.handle(request("PUT", "/" + scope + "/registrations/sym-device/register", body("sym-device"), token("sym-device", device_key)));
        ASSERT_EQ(r.status, 202) << r.body;
        sym_operation = json::parse(r.body)["operationId"];
        r = dps.handle(with_chain(request("PUT", "/" + scope + "/registrations/x509-device/register", body("x509-device"))));
        ASSERT_EQ(r.status, 202) << r.body;
        x509_operation = json::parse(r.body)["operationId"];
        r = dps.handle(request("PUT", tpm_path, tpm_body));
        ASSERT_EQ(r.status, 401) << r.body;
        blob = json::parse(r.body)["authenticationKey"];
        EXPECT_EQ(made, 1);
        json enrollment = {{"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", device_key}}}}}};
        EXPECT_EQ(admin(dps, "PUT", "/admin/enrollments/admin-device", enrollment.dump()).status, 200);
        json group = {{"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", group_key}}}}}, {"iotHubs", {"admin-hub.example"}}};
        EXPECT_EQ(admin(dps, "PUT", "/admin/enrollmentGroups/admin-group", group.dump()).status, 200);
        EXPECT_EQ(admin(dps, "DELETE", "/admin/enrollmentGroups/sym-group").status, 204);  // stored, but the file puts it back
        dps.set_hub_status("sym-device-id", "disabled");
    }
    DpsService dps(config, doc);
    int made = 0;
    dps.set_tpm_challenge_maker([&](const std::string&, const std::string&) {
        ++made;
        return TpmChallenge{"another-blob", "hmac-key-after"};
    });
    // The operations issued before the restart.
    http::HttpResponse r = dps.handle(request("GET", "/" + scope + "/registrations/sym-device/operations/" + sym_operation, "", token("sym-device", device_key)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body)["registrationState"]["deviceId"], "sym-device-id");
    r = dps.handle(with_chain(request("GET", "/" + scope + "/registrations/x509-device/operations/" + x509_operation)));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body)["registrationState"]["assignedHub"], "x509-hub.example");
    // The registrations and the hub's devices, with their credentials and status.
    r = dps.handle(request("POST", "/" + scope + "/registrations/sym-device", "", token("sym-device", device_key)));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(dps.registrations().size(), 2u);
    json devices = dps.hub_devices();
    ASSERT_EQ(devices.size(), 2u) << devices.dump();
    EXPECT_EQ(devices[0]["deviceId"], "sym-device-id");
    EXPECT_EQ(devices[0]["hubStatus"], "disabled");
    EXPECT_EQ(dps.handle(with_chain(request("GET", "/devices/x509-device/messages/deviceBound", "", "", ""))).status, 204);
    EXPECT_EQ(dps.handle(request("GET", "/devices/sym-device-id/messages/deviceBound", "", "", "")).status, 403);
    // The admin API's enrollments; the file's group is back.
    EXPECT_EQ(admin(dps, "GET", "/admin/enrollments/admin-device").status, 200);
    EXPECT_EQ(json::parse(admin(dps, "GET", "/admin/enrollmentGroups").body).size(), 3u);
    json op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/admin-device/register", body("admin-device"),
                                             token("admin-device", device_key)), "admin-device");
    EXPECT_EQ(op["status"], "assigned");
    // The TPM challenge issued before the restart, answered after it (no new one was made).
    const std::string sas = token("tpm-device", base64_encode(std::string_view("hmac-key-before")));
    op = register_and_poll(dps, request("PUT", tpm_path, tpm_body, sas), "tpm-device");
    EXPECT_EQ(op["status"], "assigned");
    EXPECT_EQ(op["registrationState"]["tpm"]["authenticationKey"], blob);
    EXPECT_EQ(made, 0);
}

// The enrollments document goes over what is stored: a key changed in the file wins.
TEST_F(DpsServiceTest, TheEnrollmentsFileIsPutOverTheStoredOnes) {
    DpsServiceConfig config;
    config.state_file = scratch / "dps.sqlite";
    json doc = enrollments();
    { DpsService dps(config, doc); }
    doc["enrollments"][0]["provisioningStatus"] = "disabled";
    DpsService dps(config, doc);
    json op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/sym-device/register", body("sym-device"),
                                             token("sym-device", device_key)), "sym-device");
    EXPECT_EQ(op["status"], "disabled");
    // A bad document changes nothing: the service is not made.
    json bad = doc;
    bad["enrollments"].push_back(doc["enrollments"][0]);
    cairn::test::expect_error([&] { DpsService again(config, bad); }, {"appears twice"});
}

TEST_F(DpsServiceTest, AStateFileThatIsNotOursIsRefusedNamingIt) {
    DpsServiceConfig config;
    config.state_file = scratch / "garbage.sqlite";
    cairn::test::write_text(config.state_file, std::string(8192, 'g'));
    cairn::test::expect_error([&] { DpsService dps(config, enrollments()); }, {config.state_file.string(), "not a database"});
    config.state_file = scratch / "later.sqlite";
    {
        cairn::store::Database db(config.state_file);
        db.exec("PRAGMA user_version = 99");
    }
    cairn::test::expect_error([&] { DpsService dps(config, enrollments()); },
                              {config.state_file.string(), "schema is version 99", "newer than this program"});
}

// Operations issued before a restart still count against the bounds after it.
TEST_F(DpsServiceTest, TheOperationBoundsHoldAcrossARestart) {
    DpsServiceConfig config;
    config.state_file = scratch / "dps.sqlite";
    config.max_operations_per_registration = 2;
    json doc = enrollments();
    auto put = [&](DpsService& dps) {
        http::HttpResponse r = dps.handle(request("PUT", "/" + scope + "/registrations/sym-device/register", body("sym-device"), token("sym-device", device_key)));
        EXPECT_EQ(r.status, 202) << r.body;
        return json::parse(r.body)["operationId"].get<std::string>();
    };
    auto get = [&](DpsService& dps, const std::string& op) {
        return dps.handle(request("GET", "/" + scope + "/registrations/sym-device/operations/" + op, "", token("sym-device", device_key))).status;
    };
    std::string op1, op2;
    {
        DpsService dps(config, doc);
        op1 = put(dps);
        op2 = put(dps);
    }
    DpsService dps(config, doc);
    const std::string op3 = put(dps);
    EXPECT_EQ(get(dps, op1), 404);
    EXPECT_EQ(get(dps, op2), 200);
    EXPECT_EQ(get(dps, op3), 200);
}

// A state file edited behind the service's back (a row that is no longer JSON, a stored enrollment
// that no longer parses) costs the requests that touch it a 500 naming what is wrong; the service
// and its other devices go on.
TEST_F(DpsServiceTest, TamperedStoredRowsAreAnsweredWithAnError) {
    DpsServiceConfig config;
    config.state_file = scratch / "dps.sqlite";
    json doc = enrollments();
    std::string operation;
    {
        DpsService dps(config, doc);
        dps.put_enrollment({{"registrationId", "admin-device"}, {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", device_key}}}}}});
        http::HttpResponse r = dps.handle(request("PUT", "/" + scope + "/registrations/sym-device/register", body("sym-device"), token("sym-device", device_key)));
        ASSERT_EQ(r.status, 202) << r.body;
        operation = json::parse(r.body)["operationId"];
    }
    {
        cairn::store::Database db(config.state_file);
        db.exec("UPDATE operation SET result = '{not json'");
        db.exec("UPDATE enrollment SET document = '{\"registrationId\": \"admin-device\"}' WHERE id = 'admin-device'");
    }
    DpsService dps(config, doc);
    http::HttpResponse r = dps.handle(request("GET", "/" + scope + "/registrations/sym-device/operations/" + operation, "", token("sym-device", device_key)));
    EXPECT_EQ(r.status, 500);
    EXPECT_NE(r.body.find("stored operation"), std::string::npos) << r.body;
    r = dps.handle(request("PUT", "/" + scope + "/registrations/admin-device/register", body("admin-device"), token("admin-device", device_key)));
    EXPECT_EQ(r.status, 500);
    EXPECT_NE(r.body.find("attestation"), std::string::npos) << r.body;
    json op = register_and_poll(dps, request("PUT", "/" + scope + "/registrations/sym-device/register", body("sym-device"),
                                             token("sym-device", device_key)), "sym-device");
    EXPECT_EQ(op["status"], "assigned");
}
