#include "updater/signature.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;

namespace {
const auto keys = [] { return source_dir() / "recipes/keys"; };

// A second CA and a signer under it, made with the openssl tool.
void other_ca(const Scratch& s) {
    run_checked({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                 (s / "ca.key").string(), "-out", (s / "ca.pem").string(), "-days", "3650", "-subj", "/CN=other CA"});
    run_checked({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                 (s / "signer.key").string(), "-out", (s / "signer.csr").string(), "-subj", "/CN=other signer"});
    run_checked({"openssl", "x509", "-req", "-in", (s / "signer.csr").string(), "-CA", (s / "ca.pem").string(), "-CAkey",
                 (s / "ca.key").string(), "-CAcreateserial", "-out", (s / "signer.pem").string(), "-days", "3650"});
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
