#include "common/units.hpp"

#include <cctype>
#include <cstdio>
#include <limits>

#include "common/error.hpp"

namespace cairn {

uint64_t parse_size(std::string_view text, const std::string& what) {
    auto bad = [&](const std::string& why) -> uint64_t {
        fail(what + ": '" + std::string(text) + "' is not a size (" + why + "; e.g. 4096, 512KiB, 200MiB, 4GiB, 10MB)");
    };
    size_t i = 0;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t digits_start = i;
    uint64_t value = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        uint64_t digit = static_cast<uint64_t>(text[i] - '0');
        if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return bad("too large");
        value = value * 10 + digit;
        ++i;
    }
    if (i == digits_start) return bad("no number");
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    std::string unit(text.substr(i));
    while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.back()))) unit.pop_back();
    uint64_t factor = 0;
    if (unit.empty() || unit == "B") factor = 1;
    else if (unit == "K" || unit == "KiB") factor = KiB;
    else if (unit == "M" || unit == "MiB") factor = MiB;
    else if (unit == "G" || unit == "GiB") factor = GiB;
    else if (unit == "T" || unit == "TiB") factor = TiB;
    else if (unit == "kB" || unit == "KB") factor = 1000;
    else if (unit == "MB") factor = 1000 * 1000;
    else if (unit == "GB") factor = 1000ull * 1000 * 1000;
    else if (unit == "TB") factor = 1000ull * 1000 * 1000 * 1000;
    else return bad("unknown unit '" + unit + "'");
    if (value > std::numeric_limits<uint64_t>::max() / factor) return bad("too large");
    return value * factor;
}

std::string format_size(uint64_t bytes) {
    static const char* names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    uint64_t scale = 1;
    while (unit < 4 && bytes >= scale * 1024) {
        scale *= 1024;
        ++unit;
    }
    char buffer[32];
    if (bytes % scale == 0) std::snprintf(buffer, sizeof buffer, "%llu %s", static_cast<unsigned long long>(bytes / scale), names[unit]);
    else std::snprintf(buffer, sizeof buffer, "%.1f %s", static_cast<double>(bytes) / static_cast<double>(scale), names[unit]);
    return buffer;
}

uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what) {
    uint64_t sum = 0;
    if (__builtin_add_overflow(a, b, &sum))
        fail(what + ": " + std::to_string(a) + " + " + std::to_string(b) + " is more than 64 bits hold");
    return sum;
}

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what) {
    uint64_t product = 0;
    if (__builtin_mul_overflow(a, b, &product))
        fail(what + ": " + std::to_string(a) + " × " + std::to_string(b) + " is more than 64 bits hold");
    return product;
}

}  // namespace cairn
