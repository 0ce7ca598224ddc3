#include "provisioning/agent.hpp"

#include <gtest/gtest.h>

#include "common/file.hpp"
#include "common/encoding.hpp"
#include "provisioning/tpm.hpp"
#include "tpm/swtpm.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;
using cairn::tpm::Swtpm;
using nlohmann::json;

namespace {
const std::string device_key = base64_encode(std::string_view("agent-device-key-0123456789abcde"));
}

class AgentTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    std::unique_ptr<cairn::test::DpsFixture> dps;
    std::filesystem::path state = scratch / "state";

    void start_dps(json extra_enrollments = json::array(), std::vector<std::string> extra_args = {}) {
        json enrollments = {{"enrollments", {{{"registrationId", "agent-device"},
                                              {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", device_key}}}}}}}}};
        for (auto& e : extra_enrollments) enrollments["enrollments"].push_back(e);
        dps = std::make_unique<cairn::test::DpsFixture>(scratch / "dps", enrollments, extra_args);
    }

    ProvisioningConfig config(ReprovisioningMode mode = ReprovisioningMode::Dynamic) {
        ProvisioningConfig c;
        c.source = "dps";
        c.global_endpoint = dps->endpoint();
        c.id_scope = cairn::test::dps_scope;
        c.trust_bundle = dps->trust_bundle();
        c.method = AttestationMethod::SymmetricKey;
        c.registration_id = "agent-device";
        c.symmetric_key = device_key;
        c.mode = mode;
        c.hub_endpoint = dps->endpoint();  // cairn-dps plays the hub too
        return c;
    }

    void set_hub_status(const std::string& device_id, const std::string& status) {
        auto reply = dps->admin("PUT", "/admin/devices/" + device_id, json{{"hubStatus", status}}.dump());
        ASSERT_EQ(reply.status, 200) << reply.body;
    }

    size_t registrations() {
        size_t n = 0;
        for (auto& r : dps->requests()) n += r["method"] == "PUT";
        return n;
    }
};

TEST_F(AgentTest, StoresTheIdentityAndReusesItOnStart) {
    start_dps();
    ProvisionOutcome first = provision(config(), state, Trigger::Startup);
    EXPECT_TRUE(first.registered);
    EXPECT_EQ(first.identity.device_id, "agent-device");
    json stored = json::parse(cairn::read_file(state / "device_info.json"));
    EXPECT_EQ(stored["hub_name"], first.identity.hub_name);
    EXPECT_EQ(stored["method"], "symmetric_key");
    EXPECT_EQ(std::filesystem::status(state / "device_info.json").permissions() & std::filesystem::perms::others_read, std::filesystem::perms::none);
    ProvisionOutcome second = provision(config(), state, Trigger::Startup);  // a reboot
    EXPECT_FALSE(second.registered);
    EXPECT_EQ(second.identity.hub_name, first.identity.hub_name);
    EXPECT_EQ(registrations(), 1u);
    EXPECT_EQ(IdentityStore(state).last_attempt()["outcome"], "used stored identity");
}

TEST_F(AgentTest, ModesDecideWhenToRegisterAgain) {
    start_dps();
    provision(config(), state, Trigger::Startup);
    EXPECT_TRUE(provision(config(ReprovisioningMode::AlwaysOnStartup), state, Trigger::Startup).registered);
    EXPECT_EQ(registrations(), 2u);
    EXPECT_TRUE(provision(config(ReprovisioningMode::Dynamic), state, Trigger::HubError).registered);
    EXPECT_FALSE(provision(config(ReprovisioningMode::OnErrorOnly), state, Trigger::HubError).registered);
    EXPECT_TRUE(provision(config(ReprovisioningMode::OnErrorOnly), state, Trigger::Api).registered);
    EXPECT_EQ(registrations(), 4u);
    // An unusable stored identity (corrupt, or for another method) makes even OnErrorOnly register.
    cairn::write_file_atomic(state / "device_info.json", "{broken");
    EXPECT_TRUE(provision(config(ReprovisioningMode::OnErrorOnly), state, Trigger::Startup).registered);
    auto c = config(ReprovisioningMode::OnErrorOnly);
    c.id_scope = "0NE0000CA1R";  // scope compares without case
    EXPECT_FALSE(provision(c, state, Trigger::Startup).registered);
}

TEST_F(AgentTest, FailuresKeepTheStoredIdentity) {
    start_dps();
    ProvisionOutcome first = provision(config(), state, Trigger::Startup);
    const std::string before = cairn::read_file(state / "device_info.json");
    // Disabled enrollment.
    json enrollment = {{"provisioningStatus", "disabled"}, {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", device_key}}}}}};
    ASSERT_EQ(dps->admin("PUT", "/admin/enrollments/agent-device", enrollment.dump()).status, 200);
    cairn::test::expect_error([&] { provision(config(), state, Trigger::Api); }, {"'disabled'", "agent-device", "stored identity is kept"});
    EXPECT_EQ(cairn::read_file(state / "device_info.json"), before);
    EXPECT_EQ(IdentityStore(state).last_attempt()["outcome"], "failed");
    // Service down.
    dps->stop();
    auto c = config();
    c.global_endpoint = dps->endpoint();
    cairn::test::expect_error([&] {
        auto quick = c;
        quick.retry.max_attempts = 3;
        quick.retry.base_delay_ms = 50;
        provision(quick, state, Trigger::Api);
    }, {"cannot reach"});
    EXPECT_EQ(cairn::read_file(state / "device_info.json"), before);
    // The stored identity still serves a normal start.
    EXPECT_EQ(provision(c, state, Trigger::Startup).identity.hub_name, first.identity.hub_name);
}

TEST_F(AgentTest, TpmRoundTripAndRestartWithoutRegistering) {
    Swtpm swtpm(scratch / "tpm");
    std::string ek;
    {
        Tpm tpm({swtpm.tcti()});
        ek = tpm.endorsement_key();
    }
    const std::string id = tpm_registration_id(ek);
    start_dps(json::array({{{"registrationId", id}, {"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", base64_encode(ek)}}}}}}}));
    auto c = config();
    c.method = AttestationMethod::Tpm;
    c.registration_id = "";
    c.tpm.tcti = swtpm.tcti();
    ProvisionOutcome outcome = provision(c, state, Trigger::Startup);
    EXPECT_TRUE(outcome.registered);
    EXPECT_EQ(outcome.identity.registration_id, id);
    swtpm.restart();  // a reboot: TPM state kept, identity kept
    ProvisionOutcome restarted = provision(c, state, Trigger::Startup);
    EXPECT_FALSE(restarted.registered);
    EXPECT_EQ(restarted.reason, "stored identity is valid (the hub accepts it)") << "the hub check's SAS is signed inside the TPM";
    EXPECT_TRUE(Tpm({swtpm.tcti()}).has_authentication_key());
    // The hub disables the device: Dynamic registers again, through the TPM.
    set_hub_status(id, "disabled");
    ProvisionOutcome again = provision(c, state, Trigger::Startup);
    EXPECT_TRUE(again.registered);
    EXPECT_NE(again.reason.find("HTTP 403"), std::string::npos) << again.reason;
}

// cairn-dps with --state, killed with SIGKILL after a TPM device registered and started again: the
// simulated hub still knows the device and the key of its TPM challenge, so the agent's Dynamic
// check at the next start passes and nothing registers again.
TEST_F(AgentTest, ATpmDeviceStaysKnownWhenTheServiceRestartsOnItsStateFile) {
    Swtpm swtpm(scratch / "tpm");
    std::string ek;
    {
        Tpm tpm({swtpm.tcti()});
        ek = tpm.endorsement_key();
    }
    const std::string id = tpm_registration_id(ek);
    start_dps(json::array({{{"registrationId", id}, {"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", base64_encode(ek)}}}}}}}),
              {"--state", (scratch / "dps-state" / "dps.sqlite").string()});
    auto c = config();
    c.method = AttestationMethod::Tpm;
    c.registration_id = "";
    c.tpm.tcti = swtpm.tcti();
    ASSERT_TRUE(provision(c, state, Trigger::Startup).registered);
    const size_t puts = registrations();  // the challenge and its answer
    dps->kill();
    dps->start();
    ProvisionOutcome restarted = provision(c, state, Trigger::Startup);
    EXPECT_FALSE(restarted.registered);
    EXPECT_EQ(restarted.reason, "stored identity is valid (the hub accepts it)");
    EXPECT_EQ(registrations(), puts);
    const json known = json::parse(dps->admin("GET", "/admin/registrations").body);
    EXPECT_EQ(known[id]["status"], "assigned") << known.dump();
}

// Dynamic mode asks the hub at start: a disabled device or a refused credential registers again;
// the other modes never ask; a hub that cannot be reached keeps the identity.
TEST_F(AgentTest, DynamicRegistersAgainWhenTheHubRefusesTheDevice) {
    start_dps();
    provision(config(), state, Trigger::Startup);
    EXPECT_EQ(provision(config(), state, Trigger::Startup).reason, "stored identity is valid (the hub accepts it)");
    EXPECT_EQ(registrations(), 1u);

    set_hub_status("agent-device", "disabled");
    EXPECT_FALSE(provision(config(ReprovisioningMode::OnErrorOnly), state, Trigger::Startup).registered) << "OnErrorOnly never asks the hub";
    ProvisionOutcome o = provision(config(), state, Trigger::Startup);
    EXPECT_TRUE(o.registered);
    EXPECT_NE(o.reason.find("the hub refused the device (HTTP 403"), std::string::npos) << o.reason;
    EXPECT_EQ(registrations(), 2u);
    EXPECT_FALSE(provision(config(), state, Trigger::Startup).registered) << "a new registration enables the device at the hub again";

    set_hub_status("agent-device", "credentialRevoked");
    o = provision(config(), state, Trigger::Startup);
    EXPECT_TRUE(o.registered);
    EXPECT_NE(o.reason.find("HTTP 401"), std::string::npos) << o.reason;

    // A wrong device key is refused by the hub as well (the SAS check is real).
    auto wrong = config();
    wrong.symmetric_key = cairn::base64_encode(std::string_view("some-other-key-0123456789abcdef"));
    cairn::provisioning::IdentityStore store(state);
    HubAnswer answer = ask_hub(wrong, *store.read().identity);
    EXPECT_EQ(answer.kind, HubAnswer::Refused) << answer.detail;
    EXPECT_EQ(ask_hub(config(), *store.read().identity).kind, HubAnswer::Accepted);

    // No hub to ask: the stored identity stays.
    auto unreachable = config();
    unreachable.hub_endpoint = "https://127.0.0.1:1/";
    o = provision(unreachable, state, Trigger::Startup);
    EXPECT_FALSE(o.registered);
    EXPECT_NE(o.reason.find("the hub could not be asked"), std::string::npos) << o.reason;

    // The admin API says what it cannot do.
    auto reply = dps->admin("PUT", "/admin/devices/nobody", json{{"hubStatus", "disabled"}}.dump());
    EXPECT_EQ(reply.status, 400);
    EXPECT_NE(reply.body.find("no device 'nobody'"), std::string::npos) << reply.body;
    reply = dps->admin("PUT", "/admin/devices/agent-device", json{{"hubStatus", "asleep"}}.dump());
    EXPECT_EQ(reply.status, 400);
}

// A failed attempt's message may quote a service reply that is not UTF-8 (dps_error_message keeps
// up to 200 bytes of it): recording it must not throw nlohmann's type_error.
TEST(IdentityStore, RecordsAnAttemptWhoseMessageIsNotUtf8) {
    cairn::test::Scratch scratch;
    IdentityStore store(scratch / "state");
    store.record_attempt({{"outcome", "failed"}, {"error", std::string("HTTP 500: \xff\xfe garbled")}});
    EXPECT_EQ(store.last_attempt()["outcome"], "failed");
}
