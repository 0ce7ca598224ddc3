#include "common/uuid.hpp"

#include "common/error.hpp"
#include "common/hash.hpp"

namespace cairn {

std::string Uuid::str() const {
    std::string hex = to_hex(bytes);
    return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" + hex.substr(20);
}

Uuid Uuid::parse(std::string_view text, const std::string& what) {
    std::string hex;
    if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' || text[23] != '-')
        fail(what + ": '" + std::string(text) + "' is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
    for (size_t i = 0; i < text.size(); ++i)
        if (i != 8 && i != 13 && i != 18 && i != 23) hex.push_back(text[i]);  // a '-' elsewhere is not hex: refused below
    auto raw = from_hex(hex, what);
    if (raw.size() != 16) fail(what + ": '" + std::string(text) + "' is not a UUID");
    return from_bytes(raw.data());
}

Uuid Uuid::from_bytes(const uint8_t* sixteen) {
    Uuid u;
    std::copy(sixteen, sixteen + 16, u.bytes.begin());
    return u;
}

Uuid Uuid::derive(std::string_view seed, std::string_view purpose) {
    Digest d = hmac_sha256(seed, purpose);
    Uuid u = from_bytes(d.data());
    u.bytes[6] = static_cast<uint8_t>((u.bytes[6] & 0x0f) | 0x40);
    u.bytes[8] = static_cast<uint8_t>((u.bytes[8] & 0x3f) | 0x80);
    return u;
}

}  // namespace cairn
