#include "provisioning/activation.hpp"

#include <gtest/gtest.h>

#include "provisioning/tpm.hpp"
#include "tpm/swtpm.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::provisioning;
using cairn::tpm::Swtpm;

class ActivationTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    Swtpm swtpm{scratch / "tpm"};
};

TEST_F(ActivationTest, SwtpmActivatesImportsAndSignsWithTheServiceKey) {
    Tpm tpm({swtpm.tcti()});
    TpmChallenge challenge = make_tpm_challenge(tpm.endorsement_key(), tpm.storage_root_key());
    ActivationBlob parts = parse_activation_blob(challenge.blob);
    // Sizes of a real DPS blob (notes §2.3): 52, 256, 142, 256, 48.
    EXPECT_EQ(parts.credential_blob.size, 52);
    EXPECT_EQ(parts.secret.size, 256);
    EXPECT_EQ(parts.duplicate.size, 142);
    EXPECT_EQ(parts.sym_seed.size, 256);
    EXPECT_EQ(parts.key_public.size, 48);
    EXPECT_EQ(parts.key_public.publicArea.objectAttributes, 0x00040440u);
    tpm.import_authentication_key(challenge.blob);
    EXPECT_TRUE(tpm.has_authentication_key());
    EXPECT_EQ(tpm.sign("0ne/registrations/x\n1700000000"), cairn::hmac_sha256(challenge.hmac_key, "0ne/registrations/x\n1700000000"));
    // A second import replaces the key.
    TpmChallenge again = make_tpm_challenge(tpm.endorsement_key(), tpm.storage_root_key());
    tpm.import_authentication_key(again.blob);
    EXPECT_EQ(tpm.sign("abc"), cairn::hmac_sha256(again.hmac_key, "abc"));
}

TEST_F(ActivationTest, BlobForAnotherTpmIsRefusedByActivateCredential) {
    Swtpm other_swtpm(scratch / "other");
    Tpm tpm({swtpm.tcti()});
    Tpm other({other_swtpm.tcti()});
    TpmChallenge challenge = make_tpm_challenge(other.endorsement_key(), other.storage_root_key());
    cairn::test::expect_error([&] { tpm.import_authentication_key(challenge.blob); }, {"ActivateCredential"});
    EXPECT_FALSE(tpm.has_authentication_key());
}

TEST_F(ActivationTest, TruncatedAndMalformedBlobs) {
    Tpm tpm({swtpm.tcti()});
    TpmChallenge challenge = make_tpm_challenge(tpm.endorsement_key(), tpm.storage_root_key());
    for (size_t cut : {size_t(0), size_t(1), size_t(40), size_t(300), size_t(600), challenge.blob.size() - 20})
        cairn::test::expect_error([&] { parse_activation_blob(challenge.blob.substr(0, cut)); }, {"authenticationKey", "truncated"});
    cairn::test::expect_error([&] { make_tpm_challenge("xx", tpm.storage_root_key()); }, {"tpm.endorsementKey", "TPM2B_PUBLIC"});
    // The SRK is not a valid EK substitute in this check only if its attributes differ; a key
    // that is not a restricted decryption key is refused.
    TPM2B_PUBLIC pub = cairn::tpm::unmarshal_public(tpm.endorsement_key(), "ek");
    pub.publicArea.objectAttributes &= ~TPMA_OBJECT_RESTRICTED;
    cairn::test::expect_error([&] { make_tpm_challenge(cairn::tpm::marshal_public(pub), tpm.storage_root_key()); }, {"not a restricted decryption key"});
    // A tampered duplicate fails inside the TPM with a clear message.
    std::string tampered = challenge.blob;
    tampered[2 + 52 + 2 + 256 + 2 + 40] ^= 1;
    cairn::test::expect_error([&] { tpm.import_authentication_key(tampered); }, {"TPM:", "Import"});
}
