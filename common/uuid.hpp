// 128-bit identifiers in their textual form (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, lower case).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace cairn {

struct Uuid {
    std::array<uint8_t, 16> bytes{};

    std::string str() const;
    bool operator==(const Uuid&) const = default;

    // Throws Error naming `what` when text is not a UUID.
    static Uuid parse(std::string_view text, const std::string& what);
    static Uuid from_bytes(const uint8_t* sixteen);
    // A version-4-shaped UUID derived from a seed and a purpose: HMAC-SHA256(seed, purpose)
    // truncated, with the version and variant bits set. Same inputs, same UUID.
    static Uuid derive(std::string_view seed, std::string_view purpose);
};

}  // namespace cairn
