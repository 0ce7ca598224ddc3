#include "tpm/tpm.hpp"

#include <gtest/gtest.h>

#include "attestation/quote.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "tpm/credential.hpp"
#include "common/subprocess.hpp"
#include "tpm/swtpm.hpp"
#include "tests/support/swtpm_fixture.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::tpm;

using TpmTest = cairn::test::SwtpmFixture;

TEST_F(TpmTest, EndorsementKeyMatchesTpm2Tools) {
    Tpm tpm({swtpm.tcti()});
    EXPECT_FALSE(tpm.persistent_exists(ek_handle));
    const std::string ek = tpm.endorsement_key();
    EXPECT_TRUE(tpm.persistent_exists(ek_handle));
    EXPECT_FALSE(tpm.persistent_exists(srk_handle));
    // tpm2_readpublic of the persisted EK gives the same TPM2B_PUBLIC bytes.
    cairn::run_checked({"tpm2_readpublic", "-c", "0x81010001", "-o", (scratch / "read.pub").string()}, tools());
    EXPECT_EQ(cairn::read_file(scratch / "read.pub"), ek);
    // tpm2_createek with the standard RSA template makes the same key (same seed, same template).
    cairn::run_checked({"tpm2_createek", "-G", "rsa", "-c", (scratch / "ek.ctx").string(), "-u", (scratch / "ek.pub").string()}, tools());
    cairn::run({"tpm2_flushcontext", "-t"}, tools());
    EXPECT_EQ(cairn::read_file(scratch / "ek.pub"), ek);
    TPM2B_PUBLIC pub = unmarshal_public(ek, "ek");
    EXPECT_EQ(pub.publicArea.objectAttributes, 0x000300b2u);
    EXPECT_EQ(pub.publicArea.unique.rsa.size, 256);
    EXPECT_EQ(marshal_public(pub), ek);
}

TEST_F(TpmTest, ExistingEkIsUsedAsItIs) {
    cairn::run_checked({"tpm2_createek", "-G", "rsa", "-c", "0x81010001", "-u", (scratch / "ek.pub").string()}, tools());
    Tpm tpm({swtpm.tcti()});
    EXPECT_EQ(tpm.endorsement_key(), cairn::read_file(scratch / "ek.pub"));
}

TEST_F(TpmTest, StorageRootKeyIsPersisted) {
    std::string srk;
    {
        Tpm tpm({swtpm.tcti()});
        srk = tpm.storage_root_key();
        EXPECT_TRUE(tpm.persistent_exists(srk_handle));
    }
    Tpm again({swtpm.tcti()});
    EXPECT_EQ(again.storage_root_key(), srk);
    TPM2B_PUBLIC pub = unmarshal_public(srk, "srk");
    EXPECT_EQ(pub.publicArea.objectAttributes, 0x00030472u);
    cairn::run_checked({"tpm2_readpublic", "-c", "0x81000001", "-o", (scratch / "srk.pub").string()}, tools());
    EXPECT_EQ(cairn::read_file(scratch / "srk.pub"), srk);
}

TEST_F(TpmTest, EvictRemovesAPersistentKeyAndIsANoOpWhenEmpty) {
    Tpm tpm({swtpm.tcti()});
    tpm.storage_root_key();
    tpm.evict(srk_handle);
    EXPECT_FALSE(tpm.persistent_exists(srk_handle));
    tpm.evict(srk_handle);
    cairn::test::expect_error([&] { tpm.persistent(srk_handle); }, {"TPM:", "reading persistent handle 0x81000001"});
}

TEST_F(TpmTest, UnreachableTpmAndBadPublicAreasAreClearErrors) {
    cairn::test::expect_error([] { Tpm tpm({"swtpm:host=127.0.0.1,port=1"}); }, {"TPM:", "swtpm:host=127.0.0.1,port=1"});
    cairn::test::expect_error([] { Tpm tpm({"nonsense-tcti"}); }, {"TPM:", "nonsense-tcti"});
    cairn::test::expect_error([] { unmarshal_public("xx", "the key"); }, {"the key", "not a TPM2B_PUBLIC"});
    const std::string srk = Tpm({swtpm.tcti()}).storage_root_key();
    cairn::test::expect_error([&] { unmarshal_public(srk + "z", "the key"); }, {"the key", "1 bytes after the TPM2B_PUBLIC"});
}

TEST_F(TpmTest, HierarchyPasswordsAreUsed) {
    cairn::run_checked({"tpm2_changeauth", "-c", "owner", "ownerpw"}, tools());
    cairn::run_checked({"tpm2_changeauth", "-c", "endorsement", "endorsepw"}, tools());
    Options wrong{swtpm.tcti()};
    cairn::test::expect_error([&] { Tpm(wrong).endorsement_key(); }, {"TPM:", "creating the endorsement key"});
    Options right{swtpm.tcti()};
    right.owner_auth = "ownerpw";
    right.endorsement_auth = "endorsepw";
    Tpm tpm(right);
    EXPECT_EQ(tpm.endorsement_key().size(), 316u);
    EXPECT_FALSE(tpm.storage_root_key().empty());
}

namespace {

std::string hex_of(const std::string& s) { return cairn::to_hex({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }

}  // namespace

TEST_F(TpmTest, AttestationKeyIsAnAkUnderTheEkAndIsPersisted) {
    std::string ak;
    {
        Tpm tpm({swtpm.tcti()});
        EXPECT_FALSE(tpm.persistent_exists(ak_handle));
        ak = tpm.attestation_key();
        EXPECT_TRUE(tpm.persistent_exists(ak_handle));
        EXPECT_TRUE(tpm.persistent_exists(ek_handle));
    }
    const auto parsed = cairn::attestation::parse_ak_public(ak, "the AK");
    EXPECT_EQ(parsed.area.attributes, 0x00050072u);
    EXPECT_EQ(parsed.area.type, cairn::attestation::alg_rsa);
    EXPECT_EQ(parsed.area.scheme, cairn::attestation::alg_rsassa);
    EXPECT_EQ(parsed.area.rsa_bits, 2048);
    // A new connection (a restart of the agent) finds the same key.
    Tpm again({swtpm.tcti()});
    EXPECT_EQ(again.attestation_key(), ak);
    cairn::run_checked({"tpm2_readpublic", "-c", "0x81010002", "-o", (scratch / "ak.pub").string()}, tools());
    EXPECT_EQ(cairn::read_file(scratch / "ak.pub"), ak);
}

TEST_F(TpmTest, CredentialForTheEkAndAkNameIsActivatedAndOthersAreRefused) {
    Tpm tpm({swtpm.tcti()});
    const std::string ak = tpm.attestation_key();
    const std::string ak_name = object_name(unmarshal_public(ak, "ak"));
    const StorageKey ek = storage_key(tpm.endorsement_key(), "ek");
    const std::string secret = "0123456789abcdef0123456789abcdef";
    const MadeCredential good = make_credential(ek, ak_name, secret);
    EXPECT_EQ(tpm.activate_attestation_key(good.id_object, good.encrypted_secret), secret);
    // Another protector (the SRK stands in for another TPM's EK): the TPM cannot open the seed.
    const StorageKey other_ek = storage_key(tpm.storage_root_key(), "srk");
    const MadeCredential wrong_ek = make_credential(other_ek, ak_name, secret);
    cairn::test::expect_error([&] { tpm.activate_attestation_key(wrong_ek.id_object, wrong_ek.encrypted_secret); },
                              {"TPM:", "ActivateCredential", "not made for this TPM's EK and attestation key"});
    // Another object's Name (the EK's): the integrity check fails.
    const MadeCredential wrong_name = make_credential(ek, object_name(unmarshal_public(tpm.endorsement_key(), "ek")), secret);
    cairn::test::expect_error([&] { tpm.activate_attestation_key(wrong_name.id_object, wrong_name.encrypted_secret); },
                              {"TPM:", "ActivateCredential"});
    // Garbage is refused before the TPM sees it.
    cairn::test::expect_error([&] { tpm.activate_attestation_key("x", good.encrypted_secret); }, {"not a TPM2B_ID_OBJECT"});
    cairn::test::expect_error([&] { tpm.activate_attestation_key(good.id_object, good.encrypted_secret + "z"); },
                              {"not a TPM2B_ENCRYPTED_SECRET"});
    // And the good one still works afterwards (nothing was left loaded).
    EXPECT_EQ(tpm.activate_attestation_key(good.id_object, good.encrypted_secret), secret);
}

TEST_F(TpmTest, QuoteVerifiesHereAndWithTpm2Checkquote) {
    cairn::run_checked({"tpm2_pcrextend", "0:sha256=" + std::string(64, 'a'), "7:sha256=" + std::string(64, 'b')}, tools());
    Tpm tpm({swtpm.tcti()});
    const std::string ak = tpm.attestation_key();
    const std::string nonce = "nonce-of-32-bytes-for-the-quote!";
    const std::vector<unsigned> pcrs = {0, 1, 2, 3, 4, 5, 6, 7, 9, 11};
    const Tpm::Quote q = tpm.quote(nonce, pcrs);

    // The PCR values as tpm2-tools reads them (one 32-byte value each, ascending).
    cairn::run_checked({"tpm2_pcrread", "sha256:0,1,2,3,4,5,6,7,9,11", "-o", (scratch / "pcrs.bin").string()}, tools());
    const std::string raw = cairn::read_file(scratch / "pcrs.bin");
    ASSERT_EQ(raw.size(), 32 * pcrs.size());
    std::map<unsigned, std::string> values;
    for (size_t i = 0; i < pcrs.size(); ++i) values[pcrs[i]] = raw.substr(32 * i, 32);

    namespace at = cairn::attestation;
    const auto key = at::parse_ak_public(ak, "ak");
    const auto quote = at::parse_attest(q.attest, "quote");
    EXPECT_TRUE(at::quote_signature_valid(key, q.attest, at::parse_signature(q.signature, "signature")));
    EXPECT_TRUE(at::check_quote(quote, nonce, pcrs, values).empty());
    EXPECT_FALSE(at::check_quote(quote, "another nonce", pcrs, values).empty());
    EXPECT_FALSE(at::quote_signature_valid(key, q.attest + "x", at::parse_signature(q.signature, "signature")));

    // tpm2_checkquote, with the AK's PEM as tpm2_readpublic gives it.
    cairn::run_checked({"tpm2_readpublic", "-c", "0x81010002", "-f", "pem", "-o", (scratch / "ak.pem").string()}, tools());
    cairn::write_file_atomic(scratch / "q.msg", q.attest);
    cairn::write_file_atomic(scratch / "q.sig", q.signature);
    // With the PCR values too (-f): tpm2_checkquote recomputes pcrDigest from them.
    auto checkquote = [&](const std::string& n, const std::string& pcr_file) {
        return cairn::run({"tpm2_checkquote", "-u", (scratch / "ak.pem").string(), "-m", (scratch / "q.msg").string(), "-s",
                           (scratch / "q.sig").string(), "-g", "sha256", "-q", hex_of(n), "-f", (scratch / pcr_file).string()},
                          tools());
    };
    // Its PCR file is the serialized form (TPML_PCR_SELECTION, count, TPML_DIGESTs).
    cairn::run_checked({"tpm2_pcrread", "sha256:0,1,2,3,4,5,6,7,9,11", "-F", "serialized", "-o", (scratch / "pcrs.ser").string()}, tools());
    const auto good = checkquote(nonce, "pcrs.ser");
    EXPECT_EQ(good.exit_code, 0) << good.err << good.out;
    EXPECT_NE(checkquote("another nonce", "pcrs.ser").exit_code, 0);
    // The same file with one bit of PCR 0's value changed (extended above, so it is unique there).
    std::string other = cairn::read_file(scratch / "pcrs.ser");
    const size_t pcr0 = other.find(raw.substr(0, 32));
    ASSERT_NE(pcr0, std::string::npos);
    other[pcr0 + 31] ^= 1;
    cairn::write_file_atomic(scratch / "other-pcrs.ser", other);
    EXPECT_NE(checkquote(nonce, "other-pcrs.ser").exit_code, 0);

    cairn::test::expect_error([&] { tpm.quote(std::string(65, 'n'), pcrs); }, {"TPM:", "nonce", "65 bytes"});
    cairn::test::expect_error([&] { tpm.quote(nonce, {24}); }, {"TPM:", "PCR 24"});
}
