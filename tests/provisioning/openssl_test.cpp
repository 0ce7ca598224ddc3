#include "provisioning/openssl.hpp"

#include <gtest/gtest.h>

#include "tests/support/pki.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::provisioning;

class OpensslTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    cairn::test::TestPki pki{scratch / "pki"};
};

TEST_F(OpensslTest, LoadsChainsAndReadsNames) {
    auto chain = load_pem_certificates(pki.device("dev", "device-7"));
    ASSERT_EQ(chain.size(), 2u);
    EXPECT_EQ(subject_common_name(chain[0].get()), "device-7");
    EXPECT_EQ(subject_common_name(chain[1].get()), "Cairn Test Intermediate");
    EXPECT_NE(subject_text(chain[0].get()).find("CN=device-7"), std::string::npos);
    EXPECT_EQ(certificate_thumbprint(chain[0].get()).size(), 64u);
    auto again = parse_pem_certificates(certificate_pem(chain[0].get()), "pem");
    EXPECT_EQ(certificate_thumbprint(again[0].get()), certificate_thumbprint(chain[0].get()));
    EXPECT_TRUE(load_private_key(pki / "dev.key"));
}

TEST_F(OpensslTest, VerifiesAgainstRootOrIntermediate) {
    auto chain = load_pem_certificates(pki.device("dev", "device-7"));
    auto root = load_pem_certificates(pki / "root.pem");
    auto intermediate = load_pem_certificates(pki / "intermediate.pem");
    auto unknown = load_pem_certificates(pki / "unknown-root.pem");
    EXPECT_EQ(verify_certificate(chain[0].get(), {chain[1].get()}, {root[0].get()}), "");
    EXPECT_EQ(verify_certificate(chain[0].get(), {}, {intermediate[0].get()}), "");
    EXPECT_NE(verify_certificate(chain[0].get(), {}, {root[0].get()}), "");  // intermediate missing
    EXPECT_NE(verify_certificate(chain[0].get(), {chain[1].get()}, {unknown[0].get()}), "");
}

TEST_F(OpensslTest, ErrorsNameTheFile) {
    cairn::test::write_text(scratch / "junk.pem", "not a certificate");
    cairn::test::expect_error([&] { load_pem_certificates(scratch / "junk.pem"); }, {"junk.pem", "not a PEM certificate"});
    cairn::test::expect_error([&] { load_private_key(scratch / "junk.pem"); }, {"junk.pem", "not a PEM private key"});
    EXPECT_EQ(random_bytes(16).size(), 16u);
}
