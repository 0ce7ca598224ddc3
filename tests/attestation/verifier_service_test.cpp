// The verifier's endpoints in-process, against a device played by tpm2-tools on swtpm.
#include "attestation/verifier_service.hpp"

#include <gtest/gtest.h>

#include <regex>

#include "tests/attestation/verifier_fixture.hpp"

using namespace cairn;
using namespace cairn::attestation;
using cairn::test::Reply;
using cairn::test::recorded_log;
using cairn::test::signed_reference;
using nlohmann::json;

namespace {

const std::string admin_token = "verifier-admin";

class VerifierServiceTest : public cairn::test::VerifierDeviceFixture {
protected:
    std::chrono::system_clock::time_point clock = std::chrono::system_clock::now();
    std::unique_ptr<VerifierService> service;
    std::vector<AllowedImage> allowed;  // the image policy config() gives

    VerifierServiceTest() {
        start();
        make_keys();
        service->enroll("dev1", ek_public);
    }

    VerifierConfig config() {
        VerifierConfig c;
        c.state = scratch / "state.db";
        c.update_ca = cairn::test::update_ca();
        c.admin_token = admin_token;
        c.clock = [this] { return clock; };
        c.allowed_images = allowed;
        return c;
    }
    void start() { service = std::make_unique<VerifierService>(config()); }

    Reply raw(const std::string& method, const std::string& target, const std::string& body, bool admin = false) {
        http::HttpRequest r;
        r.method = method;
        r.target = target;
        r.path = target.substr(0, target.find('?'));
        if (target.find('?') != std::string::npos) r.query = parse_query(target.substr(target.find('?') + 1), "query");
        r.body = body;
        if (admin) r.headers["authorization"] = "Bearer " + admin_token;
        const http::HttpResponse response = service->handle(r);
        Reply out{response.status, {}};
        if (!response.body.empty()) out.body = json::parse(response.body);
        return out;
    }
    Reply call(const std::string& method, const std::string& path, const json& body, bool admin = false) override {
        return raw(method, path, body.is_null() ? "" : body.dump(), admin);
    }
    void advance(int seconds) { clock += std::chrono::seconds(seconds); }
};

void expect_error(const Reply& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.body.dump();
    EXPECT_EQ(r.body.value("error", ""), code) << r.body.dump();
    EXPECT_FALSE(r.body.value("message", "").empty()) << r.body.dump();
}

std::vector<std::string> codes(const json& record) {
    std::vector<std::string> out;
    for (const auto& f : record.at("failedChecks")) out.push_back(f.at("code"));
    return out;
}

bool has_code(const json& record, const std::string& code) {
    const auto c = codes(record);
    return std::find(c.begin(), c.end(), code) != c.end();
}

}  // namespace

// The whole exchange of the contract: bind the AK by credential activation, then a round with the
// recorded Secure Boot boot: Healthy, every field of the record right, and stored.
TEST_F(VerifierServiceTest, BindsTheAkAndJudgesASecureBootBootHealthy) {
    Reply n = nonce("dev1");
    ASSERT_EQ(n.status, 200) << n.body.dump();
    EXPECT_FALSE(n.body.at("attestationKeyBound").get<bool>());
    EXPECT_EQ(n.body.at("pcrs"), json({0, 1, 2, 3, 4, 5, 6, 7, 9, 11}));
    EXPECT_EQ(n.body.at("expiresIn"), 120);
    EXPECT_EQ(base64_decode(n.body.at("nonce").get<std::string>(), "nonce").size(), 32u);

    const Reply bound = bind("dev1");
    ASSERT_EQ(bound.status, 200) << bound.body.dump();
    EXPECT_EQ(bound.body.at("attestationKeyName"), cairn::test::hex_of(read_file(path("ak.name"))));
    EXPECT_TRUE(nonce("dev1").body.at("attestationKeyBound").get<bool>());
    const Reply device = call("GET", "/attest/v1/admin/devices/dev1", nullptr, true);
    EXPECT_TRUE(device.body.at("attestationKeyBound").get<bool>());

    const Reply r = attest("dev1", "sb-on");
    ASSERT_EQ(r.status, 200) << r.body.dump();
    const json& rec = r.body;
    EXPECT_EQ(rec.at("deviceId"), "dev1");
    EXPECT_EQ(rec.at("attestSecureBootEnabled"), "Enabled");
    EXPECT_EQ(rec.at("attestationCertValidated"), "Valid");
    EXPECT_EQ(rec.at("bootIntegrityValidated"), "Valid");
    EXPECT_EQ(rec.at("healthStatus"), "Healthy");
    EXPECT_EQ(rec.at("errorMessage"), "");
    EXPECT_EQ(rec.at("linuxKernelVersion"), cairn::test::uki_facts().at("kernel_release"));
    EXPECT_EQ(rec.at("provisioningState"), "Succeeded");
    EXPECT_EQ(rec.at("timestamp"), utc_timestamp(clock));
    EXPECT_TRUE(std::regex_match(rec.at("timestamp").get<std::string>(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)")));
    EXPECT_EQ(rec.at("slot"), "a");
    EXPECT_EQ(rec.at("imageVersion"), "0.1.0");
    EXPECT_EQ(rec.at("failedChecks"), json::array());
    const Reply stored = call("GET", "/attest/v1/devices/dev1/status", nullptr, true);
    EXPECT_EQ(stored.status, 200);
    EXPECT_EQ(stored.body, rec);

    // A second round: the quote's clock has moved on from the first, which the verifier kept.
    advance(10);
    const Reply again = attest("dev1", "sb-on");
    EXPECT_EQ(again.body.at("healthStatus"), "Healthy") << again.body.dump();
    const Reply history = call("GET", "/attest/v1/devices/dev1/history?limit=5", nullptr, true);
    ASSERT_EQ(history.body.size(), 2u);
    EXPECT_EQ(history.body[0], again.body);  // newest first
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/history?limit=1", nullptr, true).body.size(), 1u);
}

TEST_F(VerifierServiceTest, SecureBootOffIsUnhealthy) {
    ASSERT_EQ(bind("dev1").status, 200);
    const Reply r = attest("dev1", "sb-off");
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.body.at("healthStatus"), "Unhealthy");
    EXPECT_EQ(r.body.at("attestSecureBootEnabled"), "Disabled");
    EXPECT_NE(r.body.at("errorMessage").get<std::string>().find("Secure Boot disabled"), std::string::npos) << r.body.dump();
    EXPECT_TRUE(has_code(r.body, "secure-boot-disabled"));
}

// Evidence signed by an AK the verifier has not bound to the device's EK proves nothing of the
// device (anyone can ask for a nonce naming an AK of their own): refused, and nothing recorded, so
// nobody can mark a device Unhealthy by sending evidence of their own.
TEST_F(VerifierServiceTest, EvidenceBeforeBindingIsRefusedAndRecordsNothing) {
    const Reply r = attest("dev1", "sb-on");
    expect_error(r, 403, "evidence-not-authenticated");
    EXPECT_NE(r.body.at("message").get<std::string>().find("ak-not-activated"), std::string::npos) << r.body.dump();
    expect_error(call("GET", "/attest/v1/devices/dev1/status", nullptr, true), 404, "no-status");
    // Bound, the same device's evidence is judged.
    ASSERT_EQ(bind("dev1").status, 200);
    EXPECT_EQ(attest("dev1", "sb-on").status, 200);
}

// A wrong secret binds nothing, and the challenge is gone: the right one afterwards is late.
TEST_F(VerifierServiceTest, AWrongActivationSecretIsRefusedAndBindsNothing) {
    const Reply challenge = call("POST", "/attest/v1/devices/dev1/ak", ak_request());
    ASSERT_EQ(challenge.status, 200) << challenge.body.dump();
    EXPECT_EQ(challenge.body.at("expiresIn"), 300);
    const std::string secret = activate_with_tpm2_tools(challenge.body);
    std::string wrong = secret;
    wrong[0] ^= 1;
    expect_error(call("POST", "/attest/v1/devices/dev1/ak/activate", {{"secret", base64_encode(wrong)}}), 403, "activation-failed");
    EXPECT_FALSE(call("GET", "/attest/v1/admin/devices/dev1", nullptr, true).body.at("attestationKeyBound").get<bool>());
    expect_error(call("POST", "/attest/v1/devices/dev1/ak/activate", {{"secret", base64_encode(secret)}}), 403, "activation-failed");
    EXPECT_FALSE(nonce("dev1").body.at("attestationKeyBound").get<bool>());
    // A late answer is refused too.
    const Reply again = call("POST", "/attest/v1/devices/dev1/ak", ak_request());
    const std::string secret2 = activate_with_tpm2_tools(again.body);
    advance(301);
    expect_error(call("POST", "/attest/v1/devices/dev1/ak/activate", {{"secret", base64_encode(secret2)}}), 403, "activation-failed");
    // Activation without any challenge.
    expect_error(call("POST", "/attest/v1/devices/dev1/ak/activate", {{"secret", base64_encode(secret2)}}), 403, "activation-failed");
}

TEST_F(VerifierServiceTest, AnotherEkOrAnUnknownDeviceIsRefused) {
    // A real EK of another template (ECC) of the same TPM: not the one enrolled.
    run_checked({"tpm2_createek", "-c", path("ek-ecc.ctx"), "-G", "ecc", "-u", path("ek-ecc.pub")}, tools());
    run({"tpm2_flushcontext", "-t"}, tools());
    json body = ak_request();
    body["endorsementKey"] = base64_encode(read_file(path("ek-ecc.pub")));
    expect_error(call("POST", "/attest/v1/devices/dev1/ak", body), 403, "endorsement-key-mismatch");
    expect_error(call("POST", "/attest/v1/devices/nobody/ak", ak_request()), 404, "unknown-device");
    expect_error(nonce("nobody"), 404, "unknown-device");
    // An ECC EK cannot protect a credential the way the contract says (RSA): refused at enrolment.
    expect_error(call("PUT", "/attest/v1/admin/devices/dev2", {{"endorsementKey", body["endorsementKey"]}}, true), 400, "endorsement-key-invalid");
    // An AK that is not an AK: the EK itself (a decryption key).
    body = ak_request();
    body["attestationKey"] = base64_encode(ek_public);
    expect_error(call("POST", "/attest/v1/devices/dev1/ak", body), 400, "ak-invalid");
    expect_error(call("POST", "/attest/v1/devices/dev1/nonce", {{"attestationKey", base64_encode(ek_public)}}), 400, "ak-invalid");
}

// A replayed nonce is refused and records nothing; so is an expired or unknown one.
TEST_F(VerifierServiceTest, ReplayedExpiredAndUnknownNoncesAre409AndChangeNothing) {
    ASSERT_EQ(bind("dev1").status, 200);
    extend_log(recorded_log("sb-on"));
    const Reply n = nonce("dev1");
    const std::string nonce_bytes = base64_decode(n.body.at("nonce").get<std::string>(), "nonce");
    const json ev = evidence(nonce_bytes, recorded_log("sb-on"), signed_reference());
    const Reply first = call("POST", "/attest/v1/devices/dev1/evidence", ev);
    ASSERT_EQ(first.status, 200) << first.body.dump();
    advance(5);
    expect_error(call("POST", "/attest/v1/devices/dev1/evidence", ev), 409, "nonce-invalid");
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/status", nullptr, true).body, first.body);
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/history", nullptr, true).body.size(), 1u);

    const Reply late = nonce("dev1");
    const std::string late_bytes = base64_decode(late.body.at("nonce").get<std::string>(), "nonce");
    advance(121);
    expect_error(call("POST", "/attest/v1/devices/dev1/evidence", evidence(late_bytes, recorded_log("sb-on"), signed_reference())), 409,
                 "nonce-invalid");
    expect_error(call("POST", "/attest/v1/devices/dev1/evidence", evidence(std::string(32, 'x'), recorded_log("sb-on"), signed_reference())), 409,
                 "nonce-invalid");
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/history", nullptr, true).body.size(), 1u);

    // A fresh nonce with an old quote (its extraData is the first nonce): refused, nothing recorded.
    const Reply fresh = nonce("dev1");
    json replay = ev;
    replay["nonce"] = fresh.body.at("nonce");
    const Reply judged = call("POST", "/attest/v1/devices/dev1/evidence", replay);
    expect_error(judged, 403, "evidence-not-authenticated");
    EXPECT_NE(judged.body.at("message").get<std::string>().find("quote-nonce-mismatch"), std::string::npos) << judged.body.dump();
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/history", nullptr, true).body.size(), 1u);
    // The nonce was not spent by the refusal: the device's own round with it is judged.
    const std::string fresh_bytes = base64_decode(fresh.body.at("nonce").get<std::string>(), "nonce");
    EXPECT_EQ(call("POST", "/attest/v1/devices/dev1/evidence", evidence(fresh_bytes, recorded_log("sb-on"), signed_reference())).status, 200);
}

// The per-device cap on outstanding nonces: the oldest goes, the database does not grow.
TEST_F(VerifierServiceTest, OutstandingNoncesAreCapped) {
    std::string first;
    for (int i = 0; i < 20; ++i) {
        const Reply n = nonce("dev1");
        ASSERT_EQ(n.status, 200);
        if (i == 0) first = base64_decode(n.body.at("nonce").get<std::string>(), "nonce");
    }
    auto s = VerifierStore(scratch / "state.db").database().prepare("SELECT COUNT(*) FROM nonces");
    ASSERT_TRUE(s.step());
    EXPECT_EQ(s.integer(0), 8);
    extend_log(recorded_log("sb-on"));
    expect_error(call("POST", "/attest/v1/devices/dev1/evidence", evidence(first, recorded_log("sb-on"), signed_reference())), 409, "nonce-invalid");
}

// A reference document signed outside the update CA, or altered after signing: judged Unhealthy.
TEST_F(VerifierServiceTest, AReferenceNotSignedUnderTheUpdateCaIsUnhealthy) {
    ASSERT_EQ(bind("dev1").status, 200);
    const auto d = scratch / "rogue";
    std::filesystem::create_directories(d);
    auto p = [&](const std::string& n) { return (d / n).string(); };
    write_file_atomic(d / "signer.ext", std::string("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=") +
                                            updater::bundle_signing_eku + "\n");
    run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30", "-subj",
                 "/CN=Rogue CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"});
    run_checked({"openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", p("signer.key"), "-out", p("signer.csr"), "-subj", "/CN=Rogue signer"});
    run_checked({"openssl", "x509", "-req", "-in", p("signer.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial", "-out",
                 p("signer.pem"), "-days", "30", "-extfile", p("signer.ext")});
    cairn::test::SignedReference rogue;
    rogue.document = to_json(cairn::test::recorded_reference());
    rogue.signature = updater::cms_sign(rogue.document, d / "signer.key", d / "signer.pem");
    const Reply r = attest("dev1", "sb-on", rogue);
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.body.at("healthStatus"), "Unhealthy");
    EXPECT_EQ(r.body.at("bootIntegrityValidated"), "Invalid");
    EXPECT_EQ(codes(r.body), std::vector<std::string>{"reference-signature-invalid"});
    EXPECT_NE(r.body.at("errorMessage").get<std::string>().find("reference document"), std::string::npos);

    cairn::test::SignedReference altered = signed_reference();
    altered.document.replace(altered.document.find("0.1.0"), 5, "0.1.1");
    const Reply r2 = attest("dev1", "sb-on", altered);
    EXPECT_EQ(codes(r2.body), std::vector<std::string>{"reference-signature-invalid"}) << r2.body.dump();
    EXPECT_EQ(r2.body.at("healthStatus"), "Unhealthy");
}

// A restart on the same state file keeps the devices, the AK binding, the statuses and the clock.
TEST_F(VerifierServiceTest, ARestartKeepsDevicesBindingsAndStatuses) {
    ASSERT_EQ(bind("dev1").status, 200);
    const Reply first = attest("dev1", "sb-on");
    ASSERT_EQ(first.body.at("healthStatus"), "Healthy");
    service.reset();
    start();
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/status", nullptr, true).body, first.body);
    EXPECT_TRUE(nonce("dev1").body.at("attestationKeyBound").get<bool>());
    advance(1);
    EXPECT_EQ(attest("dev1", "sb-on").body.at("healthStatus"), "Healthy");
    EXPECT_EQ(call("GET", "/attest/v1/devices/dev1/history", nullptr, true).body.size(), 2u);
}

TEST_F(VerifierServiceTest, StaleListsOldAndSilentDevices) {
    service->enroll("silent", ek_public);
    ASSERT_EQ(bind("dev1").status, 200);
    const Reply r = attest("dev1", "sb-on");
    advance(100);
    Reply stale = call("GET", "/attest/v1/stale?olderThan=50", nullptr, true);
    ASSERT_EQ(stale.status, 200) << stale.body.dump();
    EXPECT_EQ(stale.body, json::parse(R"({"devices": [{"deviceId": "dev1", "timestamp": )" + json(r.body.at("timestamp")).dump() +
                                      R"(, "healthStatus": "Healthy"}, {"deviceId": "silent", "timestamp": null, "healthStatus": "Unknown"}]})"));
    stale = call("GET", "/attest/v1/stale?olderThan=200", nullptr, true);
    ASSERT_EQ(stale.body.at("devices").size(), 1u);
    EXPECT_EQ(stale.body["devices"][0]["deviceId"], "silent");
    EXPECT_EQ(call("GET", "/attest/v1/stale", nullptr, true).body.at("devices").size(), 1u);  // default 8 h
    expect_error(call("GET", "/attest/v1/stale?olderThan=-1", nullptr, true), 400, "bad-request");
    expect_error(call("GET", "/attest/v1/stale?olderThan=x", nullptr, true), 400, "bad-request");
}

TEST_F(VerifierServiceTest, AdminApiNeedsTheTokenAndEnrolsAndRemoves) {
    expect_error(call("GET", "/attest/v1/stale", nullptr), 401, "unauthorized");
    expect_error(call("GET", "/attest/v1/devices/dev1/status", nullptr), 401, "unauthorized");
    expect_error(call("GET", "/attest/v1/devices/dev1/history", nullptr), 401, "unauthorized");
    expect_error(call("PUT", "/attest/v1/admin/devices/dev2", {{"endorsementKey", base64_encode(ek_public)}}), 401, "unauthorized");
    expect_error(call("GET", "/attest/v1/devices/dev1/status", nullptr, true), 404, "no-status");
    Reply put = call("PUT", "/attest/v1/admin/devices/dev2", {{"endorsementKey", base64_encode(ek_public)}}, true);
    EXPECT_EQ(put.status, 200) << put.body.dump();
    EXPECT_EQ(nonce("dev2").status, 200);
    EXPECT_EQ(call("DELETE", "/attest/v1/admin/devices/dev2", nullptr, true).status, 204);
    expect_error(call("DELETE", "/attest/v1/admin/devices/dev2", nullptr, true), 404, "unknown-device");
    expect_error(nonce("dev2"), 404, "unknown-device");
    expect_error(call("PUT", "/attest/v1/admin/devices/BAD", {{"endorsementKey", base64_encode(ek_public)}}, true), 400, "invalid-device-id");
    expect_error(call("PUT", "/attest/v1/admin/devices/dev3", {{"endorsementKey", base64_encode("not a TPM2B_PUBLIC")}}, true), 400,
                 "endorsement-key-invalid");
}

// Hostile input: every malformed request is a clear error of the contract's shape, never a crash.
TEST_F(VerifierServiceTest, MalformedRequestsAreClearErrors) {
    const std::string dev = "/attest/v1/devices/dev1";
    expect_error(raw("POST", dev + "/nonce", "{not json"), 400, "bad-request");
    expect_error(raw("POST", dev + "/nonce", "[1,2]"), 400, "bad-request");
    expect_error(raw("POST", dev + "/nonce", ""), 400, "bad-request");
    expect_error(call("POST", dev + "/nonce", {{"attestationKey", 5}}), 400, "bad-request");
    expect_error(call("POST", dev + "/nonce", {{"attestationKey", "!!!not base64"}}), 400, "bad-request");
    expect_error(call("POST", dev + "/nonce", {{"attestationKey", ""}}), 400, "bad-request");
    expect_error(call("POST", dev + "/nonce", json::object()), 400, "bad-request");
    expect_error(call("POST", dev + "/nonce", {{"attestationKey", base64_encode(std::string(5000, 'a'))}}), 400, "field-too-large");
    expect_error(call("POST", dev + "/nonce", {{"attestationKey", std::string(100000, 'A')}}), 400, "field-too-large");
    expect_error(call("POST", dev + "/nonce", {{"attestationKey", base64_encode(std::string("\x00\x05garbage", 9))}}), 400, "ak-invalid");
    expect_error(call("POST", dev + "/ak/activate", {{"secret", base64_encode(std::string(100, 's'))}}), 400, "field-too-large");
    json ev = {{"nonce", base64_encode(std::string(32, 'n'))}, {"quote", "AAAA"}, {"signature", "AAAA"},
               {"eventLog", "AAAA"},  {"reference", "AAAA"},   {"referenceSignature", "AAAA"}};
    for (const char* field : {"nonce", "quote", "signature", "eventLog", "reference", "referenceSignature"}) {
        json bad = ev;
        bad.erase(field);
        expect_error(call("POST", dev + "/evidence", bad), 400, "bad-request");
        bad[field] = "%%%";
        expect_error(call("POST", dev + "/evidence", bad), 400, "bad-request");
    }
    expect_error(call("POST", dev + "/evidence", ev), 409, "nonce-invalid");
    expect_error(call("POST", "/attest/v1/devices/ghost/evidence", ev), 404, "unknown-device");
    expect_error(call("POST", "/attest/v1/devices/Dev1/nonce", {{"attestationKey", base64_encode(ak_public)}}), 400, "invalid-device-id");
    expect_error(call("POST", "/attest/v1/devices/" + std::string(129, 'a') + "/nonce", json::object()), 400, "invalid-device-id");
    expect_error(call("GET", dev + "/nonce", nullptr), 405, "method-not-allowed");
    expect_error(call("POST", dev + "/status", json::object(), true), 405, "method-not-allowed");
    expect_error(call("GET", "/attest/v2/stale", nullptr, true), 404, "not-found");
    expect_error(call("GET", "/", nullptr), 404, "not-found");
    expect_error(call("GET", dev + "/whatever", nullptr), 404, "not-found");
    expect_error(call("GET", dev + "/history?limit=0", nullptr, true), 400, "bad-request");
    expect_error(call("GET", dev + "/history?limit=1000", nullptr, true), 400, "bad-request");

    // A reference that does not parse (its signature is checked, then its contents are needed).
    ASSERT_EQ(bind("dev1").status, 200);
    extend_log(recorded_log("sb-on"));
    const std::string n = base64_decode(nonce("dev1").body.at("nonce").get<std::string>(), "nonce");
    cairn::test::SignedReference junk;
    junk.document = "{\"not\": \"a reference\"}";
    junk.signature = "junk";
    expect_error(call("POST", dev + "/evidence", evidence(n, recorded_log("sb-on"), junk)), 400, "reference-invalid");
    // The error used nothing: the same nonce with a good reference is judged.
    const Reply judged = call("POST", dev + "/evidence", evidence(n, recorded_log("sb-on"), signed_reference()));
    EXPECT_EQ(judged.status, 200) << judged.body.dump();
    EXPECT_EQ(judged.body.value("healthStatus", ""), "Healthy") << judged.body.dump();
    // A log that is garbage: judged (event-log-malformed), not a crash.
    const std::string n2 = base64_decode(nonce("dev1").body.at("nonce").get<std::string>(), "nonce");
    const Reply r = call("POST", dev + "/evidence", evidence(n2, "garbage log", signed_reference()));
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.body.at("healthStatus"), "Unhealthy");
    EXPECT_TRUE(has_code(r.body, "event-log-malformed")) << r.body.dump();
}

TEST(VerifierEnrollments, FileIsParsedWithClearErrors) {
    const std::string ek = base64_encode("ek");
    auto list = parse_enrollments(json::parse(R"({"devices": [{"deviceId": "a", "endorsementKey": ")" + ek + R"("}]})"), "f.json");
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].device_id, "a");
    EXPECT_EQ(list[0].endorsement_key, "ek");
    cairn::test::expect_error([&] { parse_enrollments(json::parse("[]"), "f.json"); }, {"f.json", "devices"});
    cairn::test::expect_error([&] { parse_enrollments(json::parse(R"({"devices": [{"deviceId": "A"}]})"), "f.json"); }, {"f.json", "devices[0]", "'A'"});
    cairn::test::expect_error([&] { parse_enrollments(json::parse(R"({"devices": [{"deviceId": "a"}]})"), "f.json"); }, {"devices[0]", "endorsementKey"});
    cairn::test::expect_error([&] { parse_enrollments(json::parse(R"({"devices": [{"deviceId": "a", "endorsementKey": "%"}]})"), "f.json"); },
                              {"devices[0].endorsementKey"});
}

// The image policy: a release below the minimum, or an image the policy does not list, is
// Unhealthy however sound its boot; at the minimum it is Healthy.
TEST_F(VerifierServiceTest, TheImagePolicyRetiresOldReleasesAndUnlistedImages) {
    ASSERT_EQ(bind("dev1").status, 200);
    const auto reference = cairn::test::recorded_reference();
    allowed = {{reference.image, "0.1.1"}};
    start();
    Reply r = attest("dev1", "sb-on");
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.body.at("healthStatus"), "Unhealthy");
    EXPECT_EQ(r.body.at("bootIntegrityValidated"), "Invalid");
    EXPECT_EQ(r.body.at("attestationCertValidated"), "Valid");
    EXPECT_EQ(codes(r.body), std::vector<std::string>{"image-too-old"}) << r.body.dump();
    EXPECT_NE(r.body.at("errorMessage").get<std::string>().find(reference.image + " " + reference.version + " is older than"), std::string::npos)
        << r.body.dump();

    allowed = {{"another-image", ""}};
    start();
    r = attest("dev1", "sb-on");
    EXPECT_EQ(codes(r.body), std::vector<std::string>{"image-not-allowed"}) << r.body.dump();
    EXPECT_NE(r.body.at("errorMessage").get<std::string>().find("another-image"), std::string::npos) << r.body.dump();

    allowed = {{"another-image", ""}, {reference.image, reference.version}};
    start();
    EXPECT_EQ(attest("dev1", "sb-on").body.at("healthStatus"), "Healthy");
}

TEST(ImagePolicy, APolicyFileNamesTheEntryAtFault) {
    const auto error_of = [](const std::string& text) {
        try {
            parse_image_policy(json::parse(text), "policy.json");
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    const auto ok = parse_image_policy(json::parse(R"({"images": [{"image": "a", "minimumVersion": "1.2.0"}, {"image": "b"}]})"), "p");
    ASSERT_EQ(ok.size(), 2u);
    EXPECT_EQ(ok[0].minimum_version, "1.2.0");
    EXPECT_EQ(ok[1].minimum_version, "");
    EXPECT_NE(error_of(R"([])").find("policy.json: must be an object"), std::string::npos);
    EXPECT_NE(error_of(R"({"images": []})").find("lists no image"), std::string::npos);
    EXPECT_NE(error_of(R"({"images": [{"image": "a"}], "devices": 1})").find("policy.json: devices: unknown key"), std::string::npos);
    EXPECT_NE(error_of(R"({"images": [{"minimumVersion": "1.0"}]})").find("images[0].image: missing"), std::string::npos);
    EXPECT_NE(error_of(R"({"images": [{"image": "a", "minimumVersion": "v1"}]})").find("images[0].minimumVersion: 'v1'"), std::string::npos);
    EXPECT_NE(error_of(R"({"images": [{"image": "a"}, {"image": "a"}]})").find("images[1].image: 'a' is listed twice"), std::string::npos);
    EXPECT_NE(error_of(R"({"images": [{"image": "a", "minimum": "1"}]})").find("images[0].minimum: unknown key"), std::string::npos);
    // No policy: everything passes; versions compare as versions, not as text.
    EXPECT_TRUE(check_image_policy({}, "x", "0.0.1").empty());
    EXPECT_TRUE(check_image_policy({{"x", "1.9.0"}}, "x", "1.10.0").empty());
    EXPECT_EQ(check_image_policy({{"x", "1.10.0"}}, "x", "1.9.0").at(0).code, CheckCode::ImageTooOld);
    EXPECT_EQ(check_image_policy({{"x", "1.0"}}, "x", "not a version").at(0).code, CheckCode::ImageTooOld);
}
