#include "provisioning/provision_cli.hpp"

#include <gtest/gtest.h>

#include <sstream>

#include "common/encoding.hpp"
#include "provisioning/tpm.hpp"
#include "tpm/swtpm.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;
using cairn::tpm::Swtpm;
using nlohmann::json;

class ProvisionCliTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    Swtpm swtpm{scratch / "tpm"};
    std::unique_ptr<cairn::test::DpsFixture> dps;
    std::string registration_id;

    void SetUp() override {
        std::string ek = Tpm({swtpm.tcti()}).endorsement_key();
        registration_id = tpm_registration_id(ek);
        json enrollments = {{"enrollments", {{{"registrationId", registration_id},
                                              {"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", base64_encode(ek)}}}}}}}}};
        dps = std::make_unique<cairn::test::DpsFixture>(scratch / "dps", enrollments);
        cairn::test::write_text(scratch / "config.toml",
                                "trust_bundle_cert = \"file://" + dps->trust_bundle().string() + "\"\n[provisioning]\nsource = \"dps\"\n"
                                "global_endpoint = \"" + dps->endpoint() + "\"\nid_scope = \"" + cairn::test::dps_scope + "\"\n"
                                "[provisioning.attestation]\nmethod = \"tpm\"\n[tpm]\ntcti = \"" + swtpm.tcti() + "\"\n");
    }

    int run(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr) {
        args.insert(args.end(), {"--config", (scratch / "config.toml").string(), "--state-dir", (scratch / "state").string()});
        std::ostringstream o, e;
        int rc = provision_command(args, o, e);
        if (out) *out = o.str();
        if (err) *err = e.str();
        return rc;
    }
};

TEST_F(ProvisionCliTest, TpmInfoStatusReprovisionCheck) {
    std::string out, err;
    EXPECT_EQ(run({"tpm-info"}, &out), 0);
    EXPECT_NE(out.find("Registration Id:\n" + registration_id + "\n"), std::string::npos) << out;
    EXPECT_NE(out.find("Endorsement Key:\n"), std::string::npos);
    const size_t ek_at = out.find("Endorsement Key:\n") + 17;
    const std::string ek_line = out.substr(ek_at, out.find('\n', ek_at) - ek_at);
    EXPECT_EQ(run({"tpm-info", "--json"}, &out), 0);
    const json info = json::parse(out);
    EXPECT_EQ(info["registration_id"], registration_id);
    EXPECT_EQ(info["endorsement_key"], ek_line);

    EXPECT_EQ(run({"status"}, &out), 1);
    EXPECT_NE(out.find("State: Not provisioned"), std::string::npos) << out;

    EXPECT_EQ(run({"reprovision"}, &out, &err), 0) << err;
    EXPECT_NE(out.find("Registered"), std::string::npos) << out;

    EXPECT_EQ(run({"status"}, &out), 0);
    EXPECT_NE(out.find("State: Provisioned"), std::string::npos) << out;
    EXPECT_NE(out.find("Device ID: " + registration_id), std::string::npos) << out;
    EXPECT_NE(out.find("Hub: hub-"), std::string::npos) << out;
    EXPECT_EQ(run({"status", "--json"}, &out), 0);
    EXPECT_EQ(json::parse(out)["identity"]["registration_id"], registration_id);

    EXPECT_EQ(run({"check"}, &out), 0) << out;
    for (const char* id : {"config-well-formed", "tpm-reachable", "ek-present", "dps-reachable", "host-local-time", "identity-readable"})
        EXPECT_NE(out.find(std::string("\u221a ") + id), std::string::npos) << id << "\n" << out;
    EXPECT_EQ(run({"check", "--json"}, &out), 0);
    json checks = json::parse(out);
    EXPECT_TRUE(checks["ok"].get<bool>());
    EXPECT_EQ(checks["checks"].size(), 6u);
}

TEST_F(ProvisionCliTest, CheckReportsWhatIsWrong) {
    dps->stop();
    swtpm.stop();
    std::string out;
    EXPECT_EQ(run({"check", "--json"}, &out), 1);
    json checks = json::parse(out);
    std::map<std::string, std::string> results;
    for (auto& c : checks["checks"]) results[c["id"]] = c["result"];
    EXPECT_EQ(results["config-well-formed"], "OK");
    EXPECT_EQ(results["tpm-reachable"], "Error");
    EXPECT_EQ(results["dps-reachable"], "Error");
    EXPECT_EQ(results["identity-readable"], "Warning");
    cairn::test::write_text(scratch / "config.toml", "[provisioning]\nsourc = 1\n");
    EXPECT_EQ(run({"check"}, &out), 1);
    EXPECT_NE(out.find("\u00d7 config-well-formed"), std::string::npos) << out;
    EXPECT_NE(out.find("provisioning.sourc"), std::string::npos) << out;
}

TEST_F(ProvisionCliTest, UsageAndErrorsAreOneLine) {
    std::string out, err;
    EXPECT_EQ(run({"frobnicate"}, &out, &err), 2);
    EXPECT_NE(err.find("Usage: cairnctl provision"), std::string::npos);
    EXPECT_EQ(run({"status", "--bogus"}, &out, &err), 2);
    EXPECT_NE(err.find("unknown argument '--bogus'"), std::string::npos);
    ASSERT_EQ(dps->admin("DELETE", "/admin/enrollments/" + registration_id).status, 204);  // EK no longer enrolled
    EXPECT_EQ(run({"reprovision"}, &out, &err), 1);
    EXPECT_NE(err.find("cairnctl provision: provisioning:"), std::string::npos) << err;
    EXPECT_NE(err.find("no TPM enrollment"), std::string::npos) << err;
}
