// The cairn-provisiond program: provisions at start, keeps the identity across restarts.
#include <gtest/gtest.h>

#include "common/subprocess.hpp"
#include "common/encoding.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;

TEST(ProvisiondMain, RegistersOnceThenUsesTheStoredIdentity) {
    cairn::test::Scratch scratch;
    const std::string key = base64_encode(std::string_view("provisiond-key-0123456789abcdefg"));
    nlohmann::json enrollments = {{"enrollments", {{{"registrationId", "daemon-device"},
                                                   {"attestation", {{"type", "symmetricKey"}, {"symmetricKey", {{"primaryKey", key}}}}}}}}};
    cairn::test::DpsFixture dps(scratch / "dps", enrollments);
    cairn::test::write_text(scratch / "config.toml",
                            "trust_bundle_cert = \"file://" + dps.trust_bundle().string() + "\"\n[provisioning]\nsource = \"dps\"\n"
                            "global_endpoint = \"" + dps.endpoint() + "\"\nid_scope = \"" + cairn::test::dps_scope + "\"\n"
                            "[provisioning.attestation]\nmethod = \"symmetric_key\"\nregistration_id = \"daemon-device\"\n"
                            "symmetric_key = { value = \"" + key + "\" }\n");
    const std::vector<std::string> argv = {CAIRN_PROVISIOND_BINARY, "--config", (scratch / "config.toml").string(), "--state-dir",
                                           (scratch / "state").string()};
    auto r = cairn::run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("Registered"), std::string::npos) << r.out;
    r = cairn::run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("Kept the stored identity"), std::string::npos) << r.out;
    size_t puts = 0;
    for (auto& entry : dps.requests()) puts += entry["method"] == "PUT";
    EXPECT_EQ(puts, 1u);
    r = cairn::run({CAIRN_PROVISIOND_BINARY, "--config", (scratch / "missing.toml").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("cairn-provisiond: "), std::string::npos);
    EXPECT_NE(r.err.find("missing.toml"), std::string::npos) << r.err;
}
