#include "tpm/credential.hpp"

#include <gtest/gtest.h>
#include <tss2/tss2_mu.h>

#include "common/hash.hpp"
#include "tpm/swtpm.hpp"
#include "tpm/tpm.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::tpm;

TEST(Credential, KdfaIsHmacCounterMode) {
    // One block: HMAC(key, 00000001 ‖ label ‖ 00 ‖ u ‖ v ‖ bits).
    std::string expected = [] {
        auto d = cairn::hmac_sha256("k", std::string("\0\0\0\1STORAGE\0uv\0\0\0\x80", 18));
        return std::string(reinterpret_cast<const char*>(d.data()), 16);
    }();
    EXPECT_EQ(kdfa_sha256("k", "STORAGE", "u", "v", 128), expected);
    EXPECT_EQ(kdfa_sha256("k", "INTEGRITY", "", "", 512).size(), 64u);
}

class CredentialTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    Swtpm swtpm{scratch / "tpm"};

    static TPM2B_ID_OBJECT id_object(const std::string& bytes) {
        TPM2B_ID_OBJECT out{};
        size_t offset = 0;
        EXPECT_EQ(Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &offset, &out), TSS2_RC_SUCCESS);
        EXPECT_EQ(offset, bytes.size());
        return out;
    }
    static TPM2B_ENCRYPTED_SECRET secret(const std::string& bytes) {
        TPM2B_ENCRYPTED_SECRET out{};
        size_t offset = 0;
        EXPECT_EQ(Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &offset, &out),
                  TSS2_RC_SUCCESS);
        EXPECT_EQ(offset, bytes.size());
        return out;
    }
};

// What a verifier does to bind a key to an EK: a credential made in software for the EK and the
// key's Name comes back out of the TPM only through ActivateCredential with that EK and key.
TEST_F(CredentialTest, MadeInSoftwareActivatedInTheTpm) {
    Tpm tpm({swtpm.tcti()});
    const StorageKey ek = storage_key(tpm.endorsement_key(), "ek");
    const std::string srk = tpm.storage_root_key();
    const std::string credential = cairn::random_bytes(32);
    const MadeCredential made = make_credential(ek, object_name(unmarshal_public(srk, "srk")), credential);
    EXPECT_EQ(made.encrypted_secret.size(), 2u + 256u);
    Closed object = tpm.persistent(srk_handle);
    EXPECT_EQ(tpm.activate_credential(object.get(), id_object(made.id_object), secret(made.encrypted_secret)), credential);
}

TEST_F(CredentialTest, AnotherObjectOrAnotherEkIsRefused) {
    Swtpm other_swtpm(scratch / "other");
    Tpm tpm({swtpm.tcti()});
    Tpm other({other_swtpm.tcti()});
    const std::string srk_name = object_name(unmarshal_public(tpm.storage_root_key(), "srk"));
    Closed srk = tpm.persistent(srk_handle);
    // Made for the other TPM's EK.
    MadeCredential made = make_credential(storage_key(other.endorsement_key(), "ek"), srk_name, "secret");
    cairn::test::expect_error([&] { tpm.activate_credential(srk.get(), id_object(made.id_object), secret(made.encrypted_secret), "binding"); },
                              {"TPM:", "binding"});
    // Made for this EK but another object's Name.
    made = make_credential(storage_key(tpm.endorsement_key(), "ek"), object_name(unmarshal_public(other.storage_root_key(), "other srk")), "secret");
    cairn::test::expect_error([&] { tpm.activate_credential(srk.get(), id_object(made.id_object), secret(made.encrypted_secret)); },
                              {"TPM:", "ActivateCredential"});
}

TEST_F(CredentialTest, ProtectorsMustBeRestrictedRsaDecryptionKeys) {
    Tpm tpm({swtpm.tcti()});
    cairn::test::expect_error([&] { storage_key("xx", "tpm.endorsementKey"); }, {"tpm.endorsementKey", "TPM2B_PUBLIC"});
    TPM2B_PUBLIC pub = unmarshal_public(tpm.endorsement_key(), "ek");
    pub.publicArea.objectAttributes &= ~TPMA_OBJECT_RESTRICTED;
    cairn::test::expect_error([&] { storage_key(marshal_public(pub), "the EK"); }, {"the EK", "not a restricted decryption key"});
    cairn::test::expect_error([&] { make_credential(storage_key(tpm.endorsement_key(), "ek"), "name", std::string(33, 'x')); },
                              {"33 bytes"});
}
