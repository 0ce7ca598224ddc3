#include "provisioning/sas.hpp"

#include <openssl/crypto.h>

#include "common/error.hpp"
#include "common/encoding.hpp"

namespace cairn::provisioning {

std::string sas_resource(std::string_view id_scope, std::string_view registration_id) {
    return to_lower(std::string(id_scope) + "/registrations/" + std::string(registration_id));
}

std::string sas_string_to_sign(std::string_view encoded_resource, int64_t expiry) {
    return std::string(encoded_resource) + "\n" + std::to_string(expiry);
}

SasSigner key_signer(std::string raw_key) {
    return [key = std::move(raw_key)](std::string_view data) { return hmac_sha256(key, data); };
}

std::string make_sas_token(std::string_view resource, int64_t expiry, const SasSigner& sign, std::string_view key_name) {
    const std::string sr = url_encode(to_lower(resource));
    const Digest mac = sign(sas_string_to_sign(sr, expiry));
    std::string token = "SharedAccessSignature sr=" + sr + "&sig=" + url_encode(base64_encode(mac)) + "&se=" + std::to_string(expiry);
    if (!key_name.empty()) token += "&skn=" + url_encode(key_name);
    return token;
}

SasToken parse_sas_token(std::string_view header) {
    constexpr std::string_view prefix = "SharedAccessSignature ";
    if (header.substr(0, prefix.size()) != prefix) fail("SAS token: does not start with 'SharedAccessSignature '");
    std::string_view rest = header.substr(prefix.size());
    SasToken token;
    bool have_sr = false, have_sig = false, have_se = false;
    while (!rest.empty()) {
        size_t amp = rest.find('&');
        std::string_view part = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        size_t eq = part.find('=');
        if (eq == std::string_view::npos) fail("SAS token: field '" + std::string(part) + "' has no '='");
        std::string_view key = part.substr(0, eq), value = part.substr(eq + 1);
        if (key == "sr") {
            token.encoded_resource = value;
            token.resource = url_decode(value, "SAS token sr");
            have_sr = true;
        } else if (key == "sig") {
            token.signature = url_decode(value, "SAS token sig");
            have_sig = true;
        } else if (key == "se") {
            token.expiry_text = value;
            if (value.empty() || value.size() > 18 || value.find_first_not_of("0123456789") != std::string_view::npos)
                fail("SAS token: se '" + std::string(value) + "' is not a number of seconds");
            token.expiry = std::stoll(std::string(value));
            have_se = true;
        } else if (key == "skn") {
            token.key_name = url_decode(value, "SAS token skn");
        } else {
            fail("SAS token: unknown field '" + std::string(key) + "'");
        }
    }
    if (!have_sr) fail("SAS token: no sr");
    if (!have_sig) fail("SAS token: no sig");
    if (!have_se) fail("SAS token: no se");
    return token;
}

bool sas_signature_matches(const SasToken& token, std::string_view raw_key) {
    const Digest mac = hmac_sha256(raw_key, token.encoded_resource + "\n" + token.expiry_text);
    std::string given;
    try {
        given = base64_decode(token.signature, "SAS token sig");
    } catch (const Error&) {
        return false;
    }
    return given.size() == mac.size() && CRYPTO_memcmp(given.data(), mac.data(), mac.size()) == 0;
}

std::string derive_device_key(std::string_view group_key_base64, std::string_view registration_id) {
    const std::string key = base64_decode(group_key_base64, "group key");
    return base64_encode(hmac_sha256(key, registration_id));
}

}  // namespace cairn::provisioning
