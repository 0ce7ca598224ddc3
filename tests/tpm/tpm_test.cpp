#include "tpm/tpm.hpp"

#include <gtest/gtest.h>

#include "common/file.hpp"
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
