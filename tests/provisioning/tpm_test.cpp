#include "provisioning/tpm.hpp"

#include <gtest/gtest.h>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/encoding.hpp"
#include "tpm/swtpm.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/swtpm_fixture.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;
using cairn::tpm::Swtpm;
using nlohmann::json;

using TpmTest = cairn::test::SwtpmFixture;

// The generic TPM (EK/SRK, templates, hierarchy passwords) is tested in tests/tpm/tpm_test.cpp;
// here what DPS adds.
TEST_F(TpmTest, RegistrationIdFromTheEkThatTpm2ToolsMakes) {
    cairn::run_checked({"tpm2_createek", "-G", "rsa", "-c", (scratch / "ek.ctx").string(), "-u", (scratch / "ek.pub").string()}, tools());
    cairn::run({"tpm2_flushcontext", "-t"}, tools());
    const std::string tools_ek = cairn::read_file(scratch / "ek.pub");
    Tpm tpm({swtpm.tcti()});
    EXPECT_EQ(tpm.endorsement_key(), tools_ek);
    EXPECT_TRUE(tpm.persistent_exists(cairn::tpm::ek_handle));
    // The registration ID rule, recomputed from tpm2-tools' bytes: 52 lowercase base32 characters.
    const std::string id = tpm_registration_id(tools_ek);
    EXPECT_EQ(id.size(), 52u);
    EXPECT_EQ(id, base32_lower_unpadded(cairn::sha256(tools_ek)));
    EXPECT_EQ(id.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567"), std::string::npos);
}

TEST_F(TpmTest, InfoTextLooksLikeTpmDeviceProvision) {
    Tpm tpm({swtpm.tcti()});
    const std::string text = tpm.info_text();
    const std::string ek = tpm.endorsement_key();
    EXPECT_EQ(text, "Registration Id:\n" + tpm_registration_id(ek) + "\n\nEndorsement Key:\n" + base64_encode(ek) + "\n");
}

TEST_F(TpmTest, UnreachableTpmAndMissingKeyAreClearErrors) {
    cairn::test::expect_error([] { Tpm tpm({"swtpm:host=127.0.0.1,port=1"}); }, {"TPM:", "swtpm:host=127.0.0.1,port=1"});
    cairn::test::expect_error([] { Tpm tpm({"nonsense-tcti"}); }, {"TPM:", "nonsense-tcti"});
    Tpm tpm({swtpm.tcti()});
    cairn::test::expect_error([&] { tpm.sign("x"); }, {"no DPS key"});
    cairn::test::expect_error([&] { tpm.import_authentication_key("short"); }, {"authenticationKey", "truncated"});
}

TEST_F(TpmTest, HierarchyPasswordsReachTheTpm) {
    cairn::run_checked({"tpm2_changeauth", "-c", "owner", "ownerpw"}, tools());
    cairn::run_checked({"tpm2_changeauth", "-c", "endorsement", "endorsepw"}, tools());
    TpmOptions wrong{swtpm.tcti()};
    cairn::test::expect_error([&] { Tpm(wrong).endorsement_key(); }, {"TPM:", "creating the endorsement key"});
    TpmOptions right{swtpm.tcti()};
    right.owner_auth = "ownerpw";
    right.endorsement_auth = "endorsepw";
    Tpm tpm(right);
    EXPECT_EQ(tpm.endorsement_key().size(), 316u);
    EXPECT_FALSE(tpm.storage_root_key().empty());
}

class TpmDpsTest : public TpmTest {
protected:
    std::unique_ptr<cairn::test::DpsFixture> start_dps(const std::string& ek, const std::string& registration_id) {
        json enrollments = {{"enrollments",
                             {{{"registrationId", registration_id},
                               {"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", base64_encode(ek)}}}}}}}}};
        return std::make_unique<cairn::test::DpsFixture>(scratch / "dps", enrollments);
    }
};

TEST_F(TpmDpsTest, RegistersThroughTheTpmChallenge) {
    Tpm tpm({swtpm.tcti()});
    const std::string id = tpm_registration_id(tpm.endorsement_key());
    auto dps = start_dps(tpm.endorsement_key(), id);
    auto config = dps->client(AttestationMethod::Tpm);
    config.tpm = &tpm;
    RegistrationResult r = register_device(config);
    EXPECT_TRUE(r.assigned()) << r.registration_state.dump();
    EXPECT_EQ(r.registration_id, id);
    EXPECT_EQ(r.device_id, id);
    EXPECT_FALSE(r.registration_state["tpm"]["authenticationKey"].get<std::string>().empty());
    EXPECT_TRUE(tpm.has_authentication_key());
    auto log = dps->requests();
    ASSERT_EQ(log.size(), 3u);  // PUT (401 challenge), PUT with the TPM-signed token (202), GET (200)
    EXPECT_EQ(log[0]["status"], 401);
    EXPECT_EQ(log[1]["status"], 202);
    EXPECT_EQ(log[2]["status"], 200);
}

TEST_F(TpmDpsTest, EkNotEnrolledOrDifferent) {
    Tpm tpm({swtpm.tcti()});
    Swtpm other_swtpm(scratch / "other");
    Tpm other({other_swtpm.tcti()});
    const std::string id = tpm_registration_id(tpm.endorsement_key());
    auto dps = start_dps(other.endorsement_key(), id);  // enrolled with another TPM's EK
    auto config = dps->client(AttestationMethod::Tpm);
    config.tpm = &tpm;
    cairn::test::expect_error([&] { register_device(config); }, {"HTTP 400", "400004", "Endorsement key"});
    config.registration_id = "nobody";
    cairn::test::expect_error([&] { register_device(config); }, {"'nobody'", "HTTP 401", "no TPM enrollment"});
    EXPECT_FALSE(tpm.has_authentication_key());
}
