#include "attestation/quote.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <cstdio>

#include "attestation/eventlog.hpp"
#include "common/error.hpp"
#include "common/hash.hpp"

namespace cairn::attestation {

namespace {

// Big-endian reads (TPM marshaling) with faults naming `what` and the field.
class Reader {
public:
    Reader(std::string_view bytes, const std::string& what) : bytes_(bytes), what_(what) {}
    size_t left() const { return bytes_.size() - pos_; }
    size_t pos() const { return pos_; }
    [[noreturn]] void fault(const std::string& why) const { fail(what_ + ": " + why); }
    uint64_t be(size_t n, const char* field) {
        if (n > left()) fault(std::string("truncated at ") + field + " (offset " + std::to_string(pos_) + ")");
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v = (v << 8) | uint8_t(bytes_[pos_ + i]);
        pos_ += n;
        return v;
    }
    uint8_t u8(const char* f) { return uint8_t(be(1, f)); }
    uint16_t u16(const char* f) { return uint16_t(be(2, f)); }
    uint32_t u32(const char* f) { return uint32_t(be(4, f)); }
    uint64_t u64(const char* f) { return be(8, f); }
    std::string bytes(size_t n, const char* field) {
        if (n > left()) fault(std::string(field) + " of " + std::to_string(n) + " bytes, but " + std::to_string(left()) + " left (offset " + std::to_string(pos_) + ")");
        std::string s(bytes_.substr(pos_, n));
        pos_ += n;
        return s;
    }
    // TPM2B: u16 size then the bytes, at most `max` of them.
    std::string tpm2b(const char* field, size_t max) {
        const uint16_t size = u16(field);
        if (size > max) fault(std::string(field) + " of " + std::to_string(size) + " bytes (at most " + std::to_string(max) + ")");
        return bytes(size, field);
    }
    void end(const char* structure) const {
        if (left()) fault(std::to_string(left()) + " bytes after the " + structure);
    }

private:
    std::string_view bytes_;
    const std::string& what_;
    size_t pos_ = 0;
};

std::string hex16(uint16_t v) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%04X", v);
    return buf;
}

std::string be16(uint16_t v) { return {char(v >> 8), char(v & 0xff)}; }

PkeyPtr rsa_key(const PublicArea& a, const std::string& what) {
    return rsa_public_key(a.rsa_modulus, a.rsa_exponent ? a.rsa_exponent : 65537, what);
}

PkeyPtr ecc_key(const PublicArea& a, const std::string& what) {
    const std::string point = std::string(1, '\x04') + a.ecc_x + a.ecc_y;
    OsslParamBldPtr build(OSSL_PARAM_BLD_new());
    if (!build || OSSL_PARAM_BLD_push_utf8_string(build.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(build.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1)
        fail(what + ": cannot build an EC key: " + openssl_errors());
    OsslParamPtr params(OSSL_PARAM_BLD_to_param(build.get()));
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    EVP_PKEY* key = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 || EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1)
        fail(what + ": its ECC point is not on P-256: " + openssl_errors());
    PkeyPtr owned(key);
    // fromdata does not validate the point; a public-key check does.
    PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
    if (!check || EVP_PKEY_public_check(check.get()) != 1) fail(what + ": its ECC point is not on P-256: " + openssl_errors());
    return owned;
}

}  // namespace

PublicArea parse_public(std::string_view tpm2b_public, const std::string& what) {
    Reader outer(tpm2b_public, what);
    const uint16_t size = outer.u16("TPM2B_PUBLIC size");
    if (size != outer.left())
        outer.fault("TPM2B_PUBLIC size " + std::to_string(size) + " but " + std::to_string(outer.left()) + " bytes follow");
    PublicArea a;
    a.marshaled = std::string(tpm2b_public.substr(2));
    Reader r(a.marshaled, what);
    a.type = r.u16("type");
    if (a.type != alg_rsa && a.type != alg_ecc) r.fault("key type " + hex16(a.type) + " is neither RSA nor ECC");
    a.name_alg = r.u16("nameAlg");
    a.attributes = r.u32("objectAttributes");
    a.auth_policy = r.tpm2b("authPolicy", 64);
    a.symmetric = r.u16("symmetric.algorithm");
    if (a.symmetric != alg_null) {
        r.u16("symmetric.keyBits");
        r.u16("symmetric.mode");
    }
    a.scheme = r.u16("scheme");
    if (a.scheme != alg_null && a.scheme != 0x0015 /* RSAES: no details */) {
        a.scheme_hash = r.u16("scheme.hashAlg");
        if (a.scheme == 0x001A /* ECDAA */) r.u16("scheme.count");
    }
    if (a.type == alg_rsa) {
        a.rsa_bits = r.u16("keyBits");
        a.rsa_exponent = r.u32("exponent");
        a.rsa_modulus = r.tpm2b("unique.rsa", 512);
    } else {
        a.curve = r.u16("curveID");
        const uint16_t kdf = r.u16("kdf.scheme");
        if (kdf != alg_null) r.u16("kdf.hashAlg");
        a.ecc_x = r.tpm2b("unique.ecc.x", 128);
        a.ecc_y = r.tpm2b("unique.ecc.y", 128);
    }
    r.end("TPMT_PUBLIC");
    return a;
}

AttestationKey parse_ak_public(std::string_view tpm2b_public, const std::string& what) {
    AttestationKey ak;
    ak.area = parse_public(tpm2b_public, what);
    const PublicArea& a = ak.area;
    using namespace object_attribute;
    struct Need {
        uint32_t bit;
        bool set;
        const char* text;
    };
    static const Need needs[] = {
        {restricted, true, "not restricted"},        {sign, true, "not a signing key"},
        {decrypt, false, "a decryption key"},        {fixed_tpm, true, "not fixedTPM"},
        {fixed_parent, true, "not fixedParent"},     {sensitive_data_origin, true, "not sensitiveDataOrigin (key made outside the TPM)"},
    };
    for (const auto& n : needs)
        if (bool(a.attributes & n.bit) != n.set) fail(what + ": not an attestation key: " + n.text);
    if (a.name_alg != alg_sha256) fail(what + ": name algorithm " + alg_name(a.name_alg) + ", not sha256");
    if (a.symmetric != alg_null) fail(what + ": a signing key with a symmetric algorithm");
    if (a.type == alg_rsa) {
        if (a.scheme != alg_rsassa || a.scheme_hash != alg_sha256) fail(what + ": RSA scheme " + hex16(a.scheme) + "/" + alg_name(a.scheme_hash) + ", not RSASSA-SHA256");
        if (a.rsa_bits != 2048 || a.rsa_modulus.size() != 256) fail(what + ": RSA key of " + std::to_string(a.rsa_bits) + " bits (modulus " + std::to_string(a.rsa_modulus.size()) + " bytes), not 2048");
        ak.key = rsa_key(a, what);
    } else {
        if (a.scheme != alg_ecdsa || a.scheme_hash != alg_sha256) fail(what + ": ECC scheme " + hex16(a.scheme) + "/" + alg_name(a.scheme_hash) + ", not ECDSA-SHA256");
        if (a.curve != ecc_nist_p256) fail(what + ": ECC curve " + hex16(a.curve) + ", not NIST P-256");
        if (a.ecc_x.size() != 32 || a.ecc_y.size() != 32) fail(what + ": ECC point coordinates are not 32 bytes");
        ak.key = ecc_key(a, what);
    }
    const Digest d = sha256(a.marshaled);
    ak.name = be16(alg_sha256) + std::string(reinterpret_cast<const char*>(d.data()), d.size());
    return ak;
}

Quote parse_attest(std::string_view attest, const std::string& what) {
    Reader r(attest, what);
    Quote q;
    q.magic = r.u32("magic");
    if (q.magic != tpm_generated_value) r.fault("magic " + std::to_string(q.magic) + " is not TPM_GENERATED_VALUE (not made by a TPM)");
    q.type = r.u16("type");
    if (q.type != st_attest_quote) r.fault("attestation type " + hex16(q.type) + " is not a quote (0x8018)");
    q.qualified_signer = r.tpm2b("qualifiedSigner", 2 + 64);
    q.extra_data = r.tpm2b("extraData", 64);
    q.clock = r.u64("clockInfo.clock");
    q.reset_count = r.u32("clockInfo.resetCount");
    q.restart_count = r.u32("clockInfo.restartCount");
    const uint8_t safe = r.u8("clockInfo.safe");
    if (safe > 1) r.fault("clockInfo.safe is " + std::to_string(safe) + ", not a TPMI_YES_NO");
    q.safe = safe == 1;
    q.firmware_version = r.u64("firmwareVersion");
    const uint32_t count = r.u32("pcrSelect.count");
    if (count > 16) r.fault("pcrSelect.count " + std::to_string(count) + " (at most 16 banks)");
    for (uint32_t i = 0; i < count; ++i) {
        PcrSelection s;
        s.hash = r.u16("pcrSelections.hash");
        const uint8_t size = r.u8("pcrSelections.sizeofSelect");
        if (size > 4) r.fault("sizeofSelect " + std::to_string(size) + " (at most 4)");
        const std::string map = r.bytes(size, "pcrSelect");
        for (unsigned pcr = 0; pcr < 8u * size; ++pcr)
            if (uint8_t(map[pcr / 8]) & (1u << (pcr % 8))) s.pcrs.push_back(pcr);
        q.selection.push_back(std::move(s));
    }
    q.pcr_digest = r.tpm2b("pcrDigest", 64);
    r.end("TPMS_ATTEST");
    return q;
}

Signature parse_signature(std::string_view tpmt_signature, const std::string& what) {
    Reader r(tpmt_signature, what);
    Signature s;
    s.scheme = r.u16("sigAlg");
    if (s.scheme != alg_rsassa && s.scheme != alg_ecdsa) r.fault("signature scheme " + hex16(s.scheme) + " is neither RSASSA nor ECDSA");
    s.hash = r.u16("hash");
    if (s.scheme == alg_rsassa) {
        s.rsa = r.tpm2b("signature.rsassa.sig", 512);
    } else {
        s.ecc_r = r.tpm2b("signature.ecdsa.signatureR", 128);
        s.ecc_s = r.tpm2b("signature.ecdsa.signatureS", 128);
    }
    r.end("TPMT_SIGNATURE");
    return s;
}

bool quote_signature_valid(const AttestationKey& ak, std::string_view attest, const Signature& signature) {
    if (signature.hash != alg_sha256 || signature.scheme != ak.area.scheme) return false;
    const Digest digest = sha256(attest);
    std::string der;
    if (signature.scheme == alg_ecdsa) {
        EcdsaSigPtr sig(ECDSA_SIG_new());
        BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(signature.ecc_r.data()), int(signature.ecc_r.size()), nullptr);
        BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(signature.ecc_s.data()), int(signature.ecc_s.size()), nullptr);
        if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
            BN_free(r);
            BN_free(s);
            openssl_errors();
            return false;
        }
        unsigned char* out = nullptr;
        const int size = i2d_ECDSA_SIG(sig.get(), &out);
        if (size <= 0) {
            openssl_errors();
            return false;
        }
        OpensslBufferPtr owned(out);
        der.assign(reinterpret_cast<const char*>(out), size_t(size));
    } else {
        der = signature.rsa;
    }
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new(ak.key.get(), nullptr));
    if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1 ||
        (signature.scheme == alg_rsassa && EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING) != 1)) {
        openssl_errors();
        return false;
    }
    const int ok = EVP_PKEY_verify(ctx.get(), reinterpret_cast<const unsigned char*>(der.data()), der.size(), digest.data(), digest.size());
    openssl_errors();  // clear whatever a failed verification queued
    return ok == 1;
}

std::string pcr_composite_digest(const std::vector<unsigned>& pcrs, const std::map<unsigned, std::string>& values) {
    std::vector<unsigned> sorted = pcrs;
    std::sort(sorted.begin(), sorted.end());
    cairn::Sha256 h;
    for (unsigned pcr : sorted) {
        auto it = values.find(pcr);
        if (it == values.end()) fail("no value for PCR " + std::to_string(pcr));
        if (it->second.size() != 32) fail("the value of PCR " + std::to_string(pcr) + " is " + std::to_string(it->second.size()) + " bytes, not 32");
        h.update(it->second);
    }
    const Digest d = h.final();
    return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

std::vector<std::string> check_quote(const Quote& quote, std::string_view nonce, const std::vector<unsigned>& pcrs,
                                     const std::map<unsigned, std::string>& values) {
    std::vector<std::string> out;
    if (quote.magic != tpm_generated_value) out.push_back("the quote's magic is not TPM_GENERATED_VALUE");
    if (quote.type != st_attest_quote) out.push_back("the attestation is not a quote");
    if (quote.extra_data != nonce) out.push_back("the quote's nonce (extraData) is not the one sent");
    std::vector<unsigned> wanted = pcrs;
    std::sort(wanted.begin(), wanted.end());
    wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
    const PcrSelection expected{alg_sha256, wanted};
    if (quote.selection.size() != 1 || !(quote.selection[0] == expected)) {
        std::string got;
        for (const auto& s : quote.selection) {
            got += (got.empty() ? "" : " ") + alg_name(s.hash) + ":";
            for (size_t i = 0; i < s.pcrs.size(); ++i) got += (i ? "," : "") + std::to_string(s.pcrs[i]);
        }
        std::string want = "sha256:";
        for (size_t i = 0; i < wanted.size(); ++i) want += (i ? "," : "") + std::to_string(wanted[i]);
        out.push_back("the quote selects PCRs " + (got.empty() ? "(none)" : got) + ", not " + want);
    } else {
        try {
            if (quote.pcr_digest != pcr_composite_digest(wanted, values)) out.push_back("the quote's pcrDigest is not the digest of the PCR values");
        } catch (const Error& e) {
            out.push_back(e.what());
        }
    }
    if (!quote.safe) out.push_back("the quote's clockInfo.safe is 0 (the TPM clock may have gone back)");
    return out;
}

Quote verify_quote(std::string_view ak_public, std::string_view attest, std::string_view signature, std::string_view nonce,
                   const std::vector<unsigned>& pcrs, const std::map<unsigned, std::string>& values) {
    const AttestationKey ak = parse_ak_public(ak_public, "attestation key");
    Quote q = parse_attest(attest, "quote");
    const Signature sig = parse_signature(signature, "quote signature");
    if (!quote_signature_valid(ak, attest, sig)) fail("quote signature: not the attestation key's signature over the quote");
    const auto failures = check_quote(q, nonce, pcrs, values);
    if (!failures.empty()) fail("quote: " + failures.front());
    return q;
}

std::string quote_time_goes_backwards(const Quote& quote, const QuoteClock& last) {
    if (quote.reset_count < last.reset_count)
        return "resetCount went back from " + std::to_string(last.reset_count) + " to " + std::to_string(quote.reset_count);
    if (quote.reset_count == last.reset_count && quote.restart_count < last.restart_count)
        return "restartCount went back from " + std::to_string(last.restart_count) + " to " + std::to_string(quote.restart_count);
    if (quote.reset_count == last.reset_count && quote.restart_count == last.restart_count && quote.clock <= last.clock)
        return "clock did not advance (" + std::to_string(quote.clock) + " after " + std::to_string(last.clock) + ")";
    return {};
}

}  // namespace cairn::attestation
