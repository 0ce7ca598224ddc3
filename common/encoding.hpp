// Text encodings for protocols: base64, RFC 4648 base32 (the TPM registration ID of DPS), URL
// percent-encoding (SAS tokens, paths, queries) and UTC timestamps.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

namespace cairn {

std::string base64_encode(std::span<const uint8_t> bytes);
inline std::string base64_encode(std::string_view bytes) {
    return base64_encode(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}
// Standard alphabet, padding optional, whitespace ignored; throws Error naming `what`.
std::string base64_decode(std::string_view text, const std::string& what);

// Lowercase RFC 4648 base32 without '=' padding.
std::string base32_lower_unpadded(std::span<const uint8_t> bytes);

// Percent-encodes everything but RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~).
std::string url_encode(std::string_view text);
// Decodes %XX (and '+' as space when plus_is_space); throws Error naming `what`.
std::string url_decode(std::string_view text, const std::string& what, bool plus_is_space = false);
// Splits "a=1&b=2" into decoded pairs (later keys win).
std::map<std::string, std::string> parse_query(std::string_view query, const std::string& what);

std::string to_lower(std::string_view text);

// "2024-01-31T12:34:56.789Z"
std::string utc_timestamp(std::chrono::system_clock::time_point t);
int64_t unix_seconds(std::chrono::system_clock::time_point t);

}  // namespace cairn
