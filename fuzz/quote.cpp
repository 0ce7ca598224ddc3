// The TPM structures of a quote as a device sends them: TPMS_ATTEST, TPMT_SIGNATURE and the AK's
// TPM2B_PUBLIC (made into an OpenSSL key when it is an AK), each tried on the whole input; a
// signature that parses is checked against the input as an AK and as a quote.
#include "attestation/eventlog.hpp"
#include "attestation/quote.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::attestation;
    const std::string bytes(cairn::fuzz::text(data, size));
    cairn::fuzz::expect_only_errors([&] {
        const Quote q = parse_attest(bytes, "quote");
        (void)check_quote(q, "nonce", {0, 7}, {{0, std::string(32, '\0')}, {7, std::string(32, '\0')}});
        (void)quote_time_goes_backwards(q, {1, 1, 1});
    });
    cairn::fuzz::expect_only_errors([&] { (void)parse_signature(bytes, "signature"); });
    cairn::fuzz::expect_only_errors([&] { (void)parse_public(bytes, "key"); });
    cairn::fuzz::expect_only_errors([&] {
        const AttestationKey ak = parse_ak_public(bytes, "ak");
        // A signature made of the key's own bytes: never valid, never a crash.
        Signature s;
        s.scheme = ak.area.scheme;
        s.hash = alg_sha256;
        s.rsa = ak.area.rsa_modulus;
        s.ecc_r = ak.area.ecc_x;
        s.ecc_s = ak.area.ecc_y;
        if (quote_signature_valid(ak, bytes, s)) __builtin_trap();
    });
    return 0;
}
