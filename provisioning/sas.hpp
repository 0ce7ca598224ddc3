// Shared-access-signature tokens of the DPS device protocol:
//   SharedAccessSignature sr=<urlenc(lower(resource))>&sig=<urlenc(base64(hmac))>&se=<expiry>&skn=registration
// signed over urlenc(lower(resource)) + "\n" + expiry with HMAC-SHA256 (a device key, or a key in the TPM).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/hash.hpp"

namespace cairn::provisioning {

// "{idScope}/registrations/{registrationId}", lower-cased.
std::string sas_resource(std::string_view id_scope, std::string_view registration_id);

// The bytes the HMAC covers, for a resource as it appears (encoded) in the token.
std::string sas_string_to_sign(std::string_view encoded_resource, int64_t expiry);

// Computes HMAC-SHA256 over a string; a device key in memory or the TPM's imported key.
using SasSigner = std::function<Digest(std::string_view)>;
SasSigner key_signer(std::string raw_key);

// Builds a token for `resource` expiring at `expiry` (Unix seconds). key_name empty: no skn.
std::string make_sas_token(std::string_view resource, int64_t expiry, const SasSigner& sign, std::string_view key_name = "registration");

struct SasToken {
    std::string encoded_resource;   // sr as sent (still percent-encoded)
    std::string resource;           // sr decoded
    std::string signature;          // sig decoded: base64 text of the HMAC
    std::string expiry_text;        // se as sent
    int64_t expiry = 0;
    std::optional<std::string> key_name;  // skn
};

// Parses an Authorization header value; throws Error saying what is malformed.
SasToken parse_sas_token(std::string_view header);

// Checks the token's signature with a raw key (constant-time compare).
bool sas_signature_matches(const SasToken& token, std::string_view raw_key);

// Group enrollment: device key = base64(HMAC-SHA256(base64decode(group key), registration id)).
std::string derive_device_key(std::string_view group_key_base64, std::string_view registration_id);

}  // namespace cairn::provisioning
