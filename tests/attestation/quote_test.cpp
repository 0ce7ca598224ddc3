#include "attestation/quote.hpp"

#include <gtest/gtest.h>

#include "attestation/eventlog.hpp"
#include "tests/attestation/attestation_fixture.hpp"

using namespace cairn::attestation;
using cairn::test::expect_error;
using cairn::test::hex_of;
using cairn::test::recorded_log;

namespace {

const std::vector<unsigned> quoted_pcrs = {0, 1, 2, 3, 4, 5, 6, 7, 9, 11};
const std::string quoted_list = "0,1,2,3,4,5,6,7,9,11";
const std::string nonce = "cairn-attestation-nonce-32-bytes";

std::map<unsigned, std::string> replayed(const std::string& boot) {
    const auto r = replay(parse_event_log(recorded_log(boot), boot), alg_sha256);
    std::map<unsigned, std::string> out;
    for (unsigned p = 0; p <= max_pcr; ++p) out[p] = r[p];
    return out;
}

class QuoteTest : public cairn::test::QuoteFixture, public ::testing::WithParamInterface<std::string> {};

}  // namespace

// An AK and a quote made by tpm2-tools on a swtpm that holds the Secure Boot boot's PCRs: our
// checks accept it, tpm2_checkquote accepts the same files; the AK's Name is tpm2-tools'.
TEST_P(QuoteTest, Tpm2ToolsQuoteOfARecordedBootVerifies) {
    const std::string alg = GetParam();
    const std::string ak_public = make_ak(alg);
    const AttestationKey ak = parse_ak_public(ak_public, "ak.pub");
    EXPECT_EQ(ak.area.type, alg == "ecc" ? alg_ecc : alg_rsa);
    EXPECT_EQ(ak.area.attributes, 0x00050072u);
    EXPECT_EQ(ak.name, cairn::read_file(path("ak.name")));
    extend_log(recorded_log("sb-on"));
    const Quoted q = quote(nonce, quoted_list);
    const auto values = replayed("sb-on");
    const Quote parsed = verify_quote(ak_public, q.attest, q.signature, nonce, quoted_pcrs, values);
    EXPECT_EQ(parsed.extra_data, nonce);
    EXPECT_TRUE(parsed.safe);
    ASSERT_EQ(parsed.selection.size(), 1u);
    EXPECT_EQ(parsed.selection[0].pcrs, quoted_pcrs);
    EXPECT_FALSE(parsed.qualified_signer.empty());
    EXPECT_EQ(checkquote(nonce), 0);
    EXPECT_EQ(parse_signature(q.signature, "sig").scheme, alg == "ecc" ? alg_ecdsa : alg_rsassa);

    // A later quote: the clock went forward; against it, the first one goes backwards.
    const Quoted later = quote(nonce, quoted_list);
    const Quote second = parse_attest(later.attest, "quote");
    EXPECT_EQ(quote_time_goes_backwards(second, {parsed.clock, parsed.reset_count, parsed.restart_count}), "");
    EXPECT_NE(quote_time_goes_backwards(parsed, {second.clock, second.reset_count, second.restart_count}).find("clock did not advance"), std::string::npos);
    EXPECT_NE(quote_time_goes_backwards(parsed, {0, second.reset_count + 1, 0}).find("resetCount went back"), std::string::npos);
    EXPECT_NE(quote_time_goes_backwards(parsed, {0, second.reset_count, second.restart_count + 1}).find("restartCount went back"), std::string::npos);
}

// Tampering, each caught by us and (where it is a quote file) by tpm2_checkquote too.
TEST_P(QuoteTest, TamperedQuotesAreRefused) {
    const std::string ak_public = make_ak(GetParam());
    const AttestationKey ak = parse_ak_public(ak_public, "ak.pub");
    extend_log(recorded_log("sb-on"));
    const Quoted q = quote(nonce, quoted_list);
    const auto values = replayed("sb-on");
    const Quote parsed = parse_attest(q.attest, "quote");
    ASSERT_TRUE(quote_signature_valid(ak, q.attest, parse_signature(q.signature, "sig")));
    ASSERT_TRUE(check_quote(parsed, nonce, quoted_pcrs, values).empty());

    // Another nonce.
    const std::string other_nonce = "another-nonce-of-thirty-two-byte";
    EXPECT_EQ(check_quote(parsed, other_nonce, quoted_pcrs, values), std::vector<std::string>{"the quote's nonce (extraData) is not the one sent"});
    expect_error([&] { verify_quote(ak_public, q.attest, q.signature, other_nonce, quoted_pcrs, values); }, {"nonce"});
    EXPECT_NE(checkquote(other_nonce), 0);

    // Another PCR selection than asked for (a quote of fewer PCRs, and a request for more).
    const auto narrower = check_quote(parsed, nonce, {0, 1, 2, 3, 4, 5, 6, 7}, values);
    ASSERT_EQ(narrower.size(), 1u);
    EXPECT_EQ(narrower[0], "the quote selects PCRs sha256:0,1,2,3,4,5,6,7,9,11, not sha256:0,1,2,3,4,5,6,7");
    const Quoted fewer = quote(nonce, "0,7");
    EXPECT_FALSE(check_quote(parse_attest(fewer.attest, "quote"), nonce, quoted_pcrs, values).empty());
    EXPECT_TRUE(check_quote(parse_attest(fewer.attest, "quote"), nonce, {7, 0}, values).empty());

    // A flipped signature byte; a flipped attest byte under the right signature.
    std::string bad_sig = q.signature;
    bad_sig[bad_sig.size() - 5] ^= 0x01;
    EXPECT_FALSE(quote_signature_valid(ak, q.attest, parse_signature(bad_sig, "sig")));
    cairn::write_file_atomic(path("bad.sig"), bad_sig);
    EXPECT_NE(checkquote(nonce, "q.msg", "bad.sig"), 0);
    expect_error([&] { verify_quote(ak_public, q.attest, bad_sig, nonce, quoted_pcrs, values); }, {"not the attestation key's signature"});
    std::string bad_attest = q.attest;
    bad_attest[bad_attest.size() - 1] ^= 0x01;  // last byte of pcrDigest
    EXPECT_FALSE(quote_signature_valid(ak, bad_attest, parse_signature(q.signature, "sig")));
    // Another AK's key does not verify it.
    const std::string other_ak = make_ak(GetParam() == "ecc" ? "rsa" : "ecc", "other");
    EXPECT_FALSE(quote_signature_valid(parse_ak_public(other_ak, "other"), q.attest, parse_signature(q.signature, "sig")));

    // PCR values that are not what the TPM holds: the Secure Boot off boot's replay.
    const auto other_values = replayed("sb-off");
    EXPECT_EQ(check_quote(parsed, nonce, quoted_pcrs, other_values), std::vector<std::string>{"the quote's pcrDigest is not the digest of the PCR values"});
    expect_error([&] { verify_quote(ak_public, q.attest, q.signature, nonce, quoted_pcrs, other_values); }, {"pcrDigest"});
    auto missing = values;
    missing.erase(11);
    EXPECT_EQ(check_quote(parsed, nonce, quoted_pcrs, missing), std::vector<std::string>{"no value for PCR 11"});
}

INSTANTIATE_TEST_SUITE_P(Keys, QuoteTest, ::testing::Values("ecc", "rsa"));

class NotAkTest : public cairn::test::QuoteFixture {};

// Keys that are not attestation keys: the EK (a decryption key), an unrestricted signing key.
TEST_F(NotAkTest, KeysThatAreNotAksAreRefused) {
    make_ak("ecc");
    expect_error([&] { parse_ak_public(cairn::read_file(path("ek.pub")), "ek.pub"); }, {"ek.pub", "not an attestation key: not a signing key"});
    cairn::run_checked({"tpm2_createprimary", "-C", "o", "-G", "ecc256:ecdsa-sha256", "-c", path("signer.ctx"), "-a",
                        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"},
                       tools());
    cairn::run({"tpm2_flushcontext", "-t"}, tools());
    cairn::run_checked({"tpm2_readpublic", "-c", path("signer.ctx"), "-o", path("signer.pub")}, tools());
    const std::string signer = cairn::read_file(path("signer.pub"));
    EXPECT_EQ(parse_public(signer, "signer").type, alg_ecc);
    expect_error([&] { parse_ak_public(signer, "signer.pub"); }, {"signer.pub", "not an attestation key: not restricted"});
    // The AK's bytes with one attribute changed: each missing property is named.
    const std::string ak = cairn::read_file(path("ak.pub"));
    auto with_attributes = [&](uint32_t a) {
        std::string s = ak;
        for (int i = 0; i < 4; ++i) s[6 + i] = char((a >> (24 - 8 * i)) & 0xff);  // size(2) type(2) nameAlg(2) attributes(4)
        return s;
    };
    using namespace object_attribute;
    const uint32_t good = 0x00050072;
    EXPECT_NO_THROW(parse_ak_public(with_attributes(good), "ak"));
    expect_error([&] { parse_ak_public(with_attributes(good | decrypt), "ak"); }, {"a decryption key"});
    expect_error([&] { parse_ak_public(with_attributes(good & ~fixed_tpm), "ak"); }, {"not fixedTPM"});
    expect_error([&] { parse_ak_public(with_attributes(good & ~fixed_parent), "ak"); }, {"not fixedParent"});
    expect_error([&] { parse_ak_public(with_attributes(good & ~sensitive_data_origin), "ak"); }, {"sensitiveDataOrigin"});
    // A point not on the curve.
    std::string off_curve = ak;
    off_curve[off_curve.size() - 1] ^= 0x01;
    expect_error([&] { parse_ak_public(off_curve, "ak"); }, {"not on P-256"});
}

// Hostile bytes: every prefix of real structures, and absurd sizes, are Errors naming the field.
TEST_F(NotAkTest, MalformedStructuresAreClearErrors) {
    const std::string ak = make_ak("rsa");
    const Quoted q = quote(nonce, quoted_list);
    for (size_t n = 0; n < q.attest.size(); ++n) EXPECT_THROW(parse_attest(q.attest.substr(0, n), "quote"), cairn::Error) << n;
    for (size_t n = 0; n < q.signature.size(); ++n) EXPECT_THROW(parse_signature(q.signature.substr(0, n), "sig"), cairn::Error) << n;
    for (size_t n = 0; n < ak.size(); ++n) EXPECT_THROW(parse_public(ak.substr(0, n), "ak"), cairn::Error) << n;
    expect_error([&] { parse_attest(q.attest + "x", "the quote"); }, {"the quote", "1 bytes after the TPMS_ATTEST"});
    expect_error([&] { parse_signature(q.signature + "x", "sig"); }, {"1 bytes after the TPMT_SIGNATURE"});
    expect_error([&] { parse_public(ak + "x", "ak"); }, {"TPM2B_PUBLIC size"});
    std::string magic = q.attest;
    magic[0] = 'x';
    expect_error([&] { parse_attest(magic, "quote"); }, {"not TPM_GENERATED_VALUE"});
    std::string type = q.attest;
    type[5] = 0x17;  // 0x8017: a certify
    expect_error([&] { parse_attest(type, "quote"); }, {"type 0x8017 is not a quote"});
    std::string huge = q.attest;
    huge[6] = '\xff';  // qualifiedSigner size 0xff..
    expect_error([&] { parse_attest(huge, "quote"); }, {"qualifiedSigner of"});
    expect_error([&] { parse_signature(std::string("\x00\x05\x00\x0b", 4), "sig"); }, {"scheme 0x0005 is neither RSASSA nor ECDSA"});
    expect_error([&] { parse_public(std::string("\x00\x02\x00\x08", 4), "key"); }, {"key type 0x0008 is neither RSA nor ECC"});
    expect_error([] { pcr_composite_digest({1}, {{1, "short"}}); }, {"PCR 1 is 5 bytes"});
}
