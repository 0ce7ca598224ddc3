#include "updater/signature.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;

namespace {
const auto keys = [] { return source_dir() / "recipes/keys"; };

// A second CA and a signer under it (a proper bundle signer, but for another CA).
void other_ca(const Scratch& s) {
    run_checked({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                 (s / "ca.key").string(), "-out", (s / "ca.pem").string(), "-days", "3650", "-subj", "/CN=other CA"});
    make_signer(s.path(), "signer", s / "ca.pem", s / "ca.key", bundle_signer_extensions());
}
}  // namespace

TEST(Signature, SignsAndVerifiesAgainstTheTrustAnchor) {
    std::string sig = cms_sign("the manifest", keys() / "update-signer.key", keys() / "update-signer.pem");
    EXPECT_GT(sig.size(), 100u);
    EXPECT_NO_THROW(cms_verify("the manifest", sig, keys() / "update-ca.pem", "bundle"));
    // The openssl tool agrees.
    Scratch s;
    write_text(s / "data", "the manifest");
    write_text(s / "sig.der", sig);
    RunResult r = run({"openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", (s / "sig.der").string(), "-content",
                       (s / "data").string(), "-CAfile", (keys() / "update-ca.pem").string(), "-purpose", "any", "-out", "/dev/null"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(Signature, RefusesChangedDataOtherAnchorsAndGarbage) {
    std::string sig = cms_sign("the manifest", keys() / "update-signer.key", keys() / "update-signer.pem");
    expect_error([&] { cms_verify("the manifesT", sig, keys() / "update-ca.pem", "b.cairn"); },
                 {"b.cairn", "does not match the manifest"});
    Scratch s;
    other_ca(s);
    expect_error([&] { cms_verify("the manifest", sig, s / "ca.pem", "b.cairn"); }, {"b.cairn", "does not chain to the trust anchor"});
    std::string foreign = cms_sign("the manifest", s / "signer.key", s / "signer.pem");
    expect_error([&] { cms_verify("the manifest", foreign, keys() / "update-ca.pem", "b.cairn"); }, {"does not chain"});
    expect_error([&] { cms_verify("the manifest", "garbage", keys() / "update-ca.pem", "b.cairn"); }, {"b.cairn", "not a DER CMS"});
    std::string truncated = sig.substr(0, sig.size() - 10);
    expect_error([&] { cms_verify("the manifest", truncated, keys() / "update-ca.pem", "b.cairn"); }, {"b.cairn"});
}

TEST(Signature, NamesTheFileAtFault) {
    Scratch s;
    other_ca(s);
    expect_error([&] { cms_sign("x", s / "signer.key", keys() / "update-signer.pem"); }, {"update-signer.pem", "does not belong to the key"});
    expect_error([&] { cms_sign("x", s / "missing.key", keys() / "update-signer.pem"); }, {"missing.key"});
    write_text(s / "junk.pem", "junk");
    expect_error([&] { cms_verify("x", "y", s / "junk.pem", "b"); }, {"junk.pem", "not a PEM certificate"});
}

// Only a certificate issued for signing bundles signs them: the test CA's signers without the
// Cairn bundle-signing extended key usage (a TLS server certificate, a code-signing certificate,
// one without any extended key usage, one for "any" usage) are refused, naming the certificate.
TEST(Signature, RefusesCertificatesNotIssuedForSigningBundles) {
    Scratch s;
    const fs::path ca = keys() / "update-ca.pem", ca_key = keys() / "update-ca.key";
    const std::string base = "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n";
    make_signer(s.path(), "tls server", ca, ca_key, base + "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:updates.example\n");
    make_signer(s.path(), "code signer", ca, ca_key, base + "extendedKeyUsage = codeSigning\n");
    make_signer(s.path(), "no purpose", ca, ca_key, base);
    make_signer(s.path(), "any purpose", ca, ca_key, base + "extendedKeyUsage = anyExtendedKeyUsage\n");
    for (const char* name : {"tls server", "code signer", "no purpose", "any purpose"}) {
        std::string sig = cms_sign("the manifest", s / (std::string(name) + ".key"), s / (std::string(name) + ".pem"));
        expect_error([&] { cms_verify("the manifest", sig, ca, "b.cairn"); },
                     {"b.cairn", "the signer's certificate \"CN=" + std::string(name) + "\"", "may not sign bundles",
                      "extended key usage " + std::string(bundle_signing_eku)});
    }
    // With the extended key usage (among others) it signs; without digitalSignature it does not.
    make_signer(s.path(), "bundle signer", ca, ca_key, base + "extendedKeyUsage = codeSigning, " + bundle_signing_eku + "\n");
    EXPECT_NO_THROW(cms_verify("the manifest", cms_sign("the manifest", s / "bundle signer.key", s / "bundle signer.pem"), ca, "b"));
    make_signer(s.path(), "encipherer", ca, ca_key,
                std::string("keyUsage = critical, keyEncipherment\nextendedKeyUsage = ") + bundle_signing_eku + "\n");
    std::string sig = cms_sign("the manifest", s / "encipherer.key", s / "encipherer.pem");
    expect_error([&] { cms_verify("the manifest", sig, ca, "b"); }, {"CN=encipherer", "digitalSignature"});
}

// A device whose clock was never set (1970) checks certificates at its own build time instead.
TEST(Signature, ChecksValidityAtTheClockButNeverBeforeTheBuildTime) {
    std::string sig = cms_sign("the manifest", keys() / "update-signer.key", keys() / "update-signer.pem");
    const int64_t y1970 = 86400, y2030 = 1900000000, y2200 = 7258118400;
    expect_error([&] { cms_verify("the manifest", sig, keys() / "update-ca.pem", "b.cairn", y1970); },
                 {"b.cairn", "is not valid before", "1970"});
    EXPECT_EQ(certificate_time(y1970, y2030), y2030);
    EXPECT_EQ(certificate_time(y2030, 0), y2030);
    EXPECT_EQ(certificate_time(y2200, y2030), y2200);
    EXPECT_NO_THROW(cms_verify("the manifest", sig, keys() / "update-ca.pem", "b.cairn", certificate_time(y1970, y2030)));
    // The floor does not hold the clock back: an expired certificate stays expired.
    expect_error([&] { cms_verify("the manifest", sig, keys() / "update-ca.pem", "b.cairn", certificate_time(y2200, y2030)); },
                 {"b.cairn", "expired on"});
}
