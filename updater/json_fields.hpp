// Strict reading of the updater's signed JSON documents (bundle manifests, delta tables): field
// access that names the document and the field on any problem, and the little-endian integers of
// their binary headers.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace cairn::updater {

inline void put_le64(std::string& out, size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) out[at + i] = static_cast<char>(v >> (8 * i) & 0xff);
}
inline uint64_t get_le64(std::string_view in, size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(in[at + i]);
    return v;
}

// Lower-case hex of `length` characters (any even length when 0).
inline bool is_lower_hex(const std::string& s, size_t length) {
    if (length && s.size() != length) return false;
    if (s.size() % 2) return false;
    return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

struct JsonFields {
    const nlohmann::json& j;
    std::string where;
    const nlohmann::json& get(const char* key) const {
        auto it = j.find(key);
        if (it == j.end()) fail(where + ": missing \"" + key + "\"");
        return *it;
    }
    std::string str(const char* key) const {
        const nlohmann::json& v = get(key);
        if (!v.is_string()) fail(where + ": \"" + key + "\" must be a string");
        return v.get<std::string>();
    }
    std::string str_or(const char* key, const std::string& dflt) const { return j.contains(key) ? str(key) : dflt; }
    uint64_t u64(const char* key) const {
        const nlohmann::json& v = get(key);
        if (!v.is_number_unsigned()) fail(where + ": \"" + key + "\" must be a non-negative integer");
        return v.get<uint64_t>();
    }
    int64_t i64(const char* key) const {
        const nlohmann::json& v = get(key);
        if (!v.is_number_integer()) fail(where + ": \"" + key + "\" must be an integer");
        return v.get<int64_t>();
    }
    void only(std::initializer_list<const char*> keys) const {
        for (auto it = j.begin(); it != j.end(); ++it)
            if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; }))
                fail(where + ": unknown field \"" + it.key() + "\"");
    }
};

}  // namespace cairn::updater
