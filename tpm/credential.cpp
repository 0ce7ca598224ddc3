#include "tpm/credential.hpp"

#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <tss2/tss2_mu.h>

#include <cstring>

#include "common/error.hpp"
#include "common/hash.hpp"
#include "tpm/tpm.hpp"

namespace cairn::tpm {

namespace {

std::string u16(size_t v) { return {static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)}; }
std::string u32(uint32_t v) {
    return {static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
}
std::string bytes(const Digest& d) { return std::string(reinterpret_cast<const char*>(d.data()), d.size()); }

}  // namespace

std::string tpm2b(const std::string& data) { return u16(data.size()) + data; }

std::string kdfa_sha256(const std::string& key, const std::string& label, const std::string& context_u, const std::string& context_v,
                        uint32_t bits) {
    std::string out;
    for (uint32_t counter = 1; out.size() * 8 < bits; ++counter)
        out += bytes(hmac_sha256(key, u32(counter) + label + std::string(1, '\0') + context_u + context_v + u32(bits)));
    out.resize(bits / 8);
    return out;
}

std::string object_name(const TPM2B_PUBLIC& pub) {
    if (pub.publicArea.nameAlg != TPM2_ALG_SHA256) fail("TPM object: name algorithm is not SHA-256");
    uint8_t buffer[sizeof(TPMT_PUBLIC) + 8];
    size_t offset = 0;
    if (Tss2_MU_TPMT_PUBLIC_Marshal(&pub.publicArea, buffer, sizeof buffer, &offset) != TSS2_RC_SUCCESS) fail("TPM object: cannot marshal");
    return u16(TPM2_ALG_SHA256) + bytes(sha256(std::string_view(reinterpret_cast<char*>(buffer), offset)));
}

StorageKey storage_key(const std::string& marshaled, const std::string& what) {
    StorageKey p{unmarshal_public(marshaled, what), nullptr};
    const TPMT_PUBLIC& area = p.pub.publicArea;
    if (area.type != TPM2_ALG_RSA) fail(what + ": not an RSA key");
    if (area.nameAlg != TPM2_ALG_SHA256) fail(what + ": its name algorithm is not SHA-256");
    if (area.parameters.rsaDetail.symmetric.algorithm != TPM2_ALG_AES || area.parameters.rsaDetail.symmetric.keyBits.aes != 128 ||
        area.parameters.rsaDetail.symmetric.mode.aes != TPM2_ALG_CFB)
        fail(what + ": its symmetric algorithm is not AES-128-CFB");
    if (!(area.objectAttributes & TPMA_OBJECT_RESTRICTED) || !(area.objectAttributes & TPMA_OBJECT_DECRYPT))
        fail(what + ": not a restricted decryption key");
    const uint32_t exponent = area.parameters.rsaDetail.exponent ? area.parameters.rsaDetail.exponent : 65537;
    p.key = rsa_public_key(std::string_view(reinterpret_cast<const char*>(area.unique.rsa.buffer), area.unique.rsa.size), exponent, what);
    return p;
}

std::string encrypt_seed(EVP_PKEY* key, const std::string& data, const char* label) {
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new(key, nullptr));
    const size_t label_size = std::strlen(label) + 1;
    unsigned char* owned_label = static_cast<unsigned char*>(OPENSSL_malloc(label_size));
    if (!owned_label) fail("OpenSSL: out of memory");
    std::memcpy(owned_label, label, label_size);
    if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1) {
        OPENSSL_free(owned_label);
        fail("OpenSSL: cannot set up RSA-OAEP: " + openssl_errors());
    }
    if (EVP_PKEY_CTX_set0_rsa_oaep_label(ctx.get(), owned_label, static_cast<int>(label_size)) != 1) {
        OPENSSL_free(owned_label);
        fail("OpenSSL: cannot set the OAEP label: " + openssl_errors());
    }
    size_t size = 0;
    if (EVP_PKEY_encrypt(ctx.get(), nullptr, &size, reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
        fail("OpenSSL: RSA-OAEP failed: " + openssl_errors());
    std::string out(size, '\0');
    if (EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &size, reinterpret_cast<const unsigned char*>(data.data()),
                         data.size()) != 1)
        fail("OpenSSL: RSA-OAEP failed: " + openssl_errors());
    out.resize(size);
    return out;
}

std::string aes128_cfb(const std::string& key, const std::string& data) {
    CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
    const unsigned char iv[16] = {};
    std::string out(data.size(), '\0');
    int n = 0, m = 0;
    if (key.size() != 16 || !ctx ||
        EVP_EncryptInit_ex(ctx.get(), EVP_aes_128_cfb128(), nullptr, reinterpret_cast<const unsigned char*>(key.data()), iv) != 1 ||
        EVP_EncryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &n, reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size())) != 1 ||
        EVP_EncryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + n, &m) != 1)
        fail("OpenSSL: AES-128-CFB failed: " + openssl_errors());
    return out;
}

MadeCredential make_credential(const StorageKey& protector, const std::string& name, const std::string& credential) {
    if (credential.size() > 32) fail("TPM credential: " + std::to_string(credential.size()) + " bytes, more than a SHA-256 digest");
    const std::string seed = random_bytes(32);
    MadeCredential made;
    made.encrypted_secret = tpm2b(encrypt_seed(protector.key.get(), seed, "IDENTITY"));
    const std::string enc_identity = aes128_cfb(kdfa_sha256(seed, "STORAGE", name, "", 128), tpm2b(credential));
    const Digest identity_hmac = hmac_sha256(kdfa_sha256(seed, "INTEGRITY", "", "", 256), enc_identity + name);
    made.id_object = tpm2b(tpm2b(bytes(identity_hmac)) + enc_identity);
    return made;
}

}  // namespace cairn::tpm
