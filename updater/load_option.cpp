#include "updater/load_option.hpp"

#include <cstdio>

#include "common/error.hpp"

namespace cairn::updater {

namespace {

void put16(std::vector<uint8_t>& out, uint16_t v) {
    out.push_back(uint8_t(v));
    out.push_back(uint8_t(v >> 8));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put_ucs2(std::vector<uint8_t>& out, const std::string& text) {
    for (char c : text) put16(out, static_cast<uint8_t>(c));
    put16(out, 0);
}
uint64_t get(const std::vector<uint8_t>& b, size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = v << 8 | b[at + i];
    return v;
}
// UCS-2 from `at` up to a NUL within `end`; returns the text and moves `at` past the NUL.
std::string get_ucs2(const std::vector<uint8_t>& b, size_t& at, size_t end, const std::string& what) {
    std::string out;
    for (;;) {
        if (at + 2 > end) fail(what + ": text without its terminating NUL");
        uint16_t c = static_cast<uint16_t>(get(b, at, 2));
        at += 2;
        if (c == 0) return out;
        out.push_back(c < 0x80 ? static_cast<char>(c) : '?');
    }
}

}  // namespace

std::vector<uint8_t> efi_guid_bytes(const Uuid& u) {
    const auto& b = u.bytes;
    return {b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]};
}

Uuid uuid_from_efi_guid(const uint8_t* g) {
    const uint8_t b[16] = {g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]};
    return Uuid::from_bytes(b);
}

std::vector<uint8_t> encode_load_option(const LoadOption& o) {
    std::vector<uint8_t> path;
    if (o.partition) {
        path.insert(path.end(), {0x04, 0x01});  // media, hard drive
        put16(path, 42);
        put32(path, o.partition_number);
        put64(path, o.start_lba);
        put64(path, o.size_lba);
        std::vector<uint8_t> g = efi_guid_bytes(*o.partition);
        path.insert(path.end(), g.begin(), g.end());
        path.push_back(0x02);  // MBR type: GPT
        path.push_back(0x02);  // signature type: GUID
    }
    if (!o.file.empty()) {
        path.insert(path.end(), {0x04, 0x04});  // media, file path
        put16(path, static_cast<uint16_t>(4 + 2 * (o.file.size() + 1)));
        put_ucs2(path, o.file);
    }
    path.insert(path.end(), {0x7f, 0xff, 0x04, 0x00});  // end of the whole path
    std::vector<uint8_t> out;
    put32(out, o.attributes);
    put16(out, static_cast<uint16_t>(path.size()));
    put_ucs2(out, o.description);
    out.insert(out.end(), path.begin(), path.end());
    return out;
}

LoadOption decode_load_option(const std::vector<uint8_t>& b, const std::string& what) {
    if (b.size() < 6) fail(what + ": too short for a load option");
    LoadOption o;
    o.attributes = static_cast<uint32_t>(get(b, 0, 4));
    size_t path_length = get(b, 4, 2);
    size_t at = 6;
    o.description = get_ucs2(b, at, b.size(), what + ": description");
    if (at + path_length > b.size()) fail(what + ": the device path runs past the end");
    const size_t end = at + path_length;
    while (at < end) {
        if (at + 4 > end) fail(what + ": truncated device path node");
        uint8_t type = b[at], subtype = b[at + 1];
        size_t length = get(b, at + 2, 2);
        if (length < 4 || at + length > end) fail(what + ": device path node of bad length " + std::to_string(length));
        if (type == 0x7f && subtype == 0xff) break;
        if (type == 0x04 && subtype == 0x01) {
            if (length != 42) fail(what + ": hard drive node of length " + std::to_string(length) + " (42 expected)");
            o.partition_number = static_cast<uint32_t>(get(b, at + 4, 4));
            o.start_lba = get(b, at + 8, 8);
            o.size_lba = get(b, at + 16, 8);
            if (b[at + 40] == 0x02 && b[at + 41] == 0x02) o.partition = uuid_from_efi_guid(&b[at + 24]);
        } else if (type == 0x04 && subtype == 0x04) {
            size_t p = at + 4;
            o.file = get_ucs2(b, p, at + length, what + ": file path");
        }
        at += length;
    }
    return o;
}

std::string boot_variable_name(uint16_t number) {
    char name[16];
    std::snprintf(name, sizeof name, "Boot%04X", number);
    return name;
}

std::optional<uint16_t> boot_variable_number(const std::string& name) {
    if (name.size() != 8 || name.compare(0, 4, "Boot") != 0) return std::nullopt;
    uint16_t v = 0;
    for (size_t i = 4; i < 8; ++i) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return std::nullopt;
        v = static_cast<uint16_t>(v << 4 | d);
    }
    return v;
}

}  // namespace cairn::updater
