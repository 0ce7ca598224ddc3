#include "common/hash.hpp"

#include <fcntl.h>
#include <openssl/hmac.h>
#include <unistd.h>

#include <cerrno>

#include "common/error.hpp"
#include "common/file.hpp"

namespace cairn {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) fail("OpenSSL: cannot start SHA-256");
}

Sha256& Sha256::update(const void* data, size_t size) {
    if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) fail("OpenSSL: SHA-256 update failed");
    return *this;
}

Digest Sha256::final() {
    Digest d{};
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), d.data(), &len) != 1 || len != d.size()) fail("OpenSSL: SHA-256 final failed");
    return d;
}

Digest sha256(std::string_view data) { return Sha256().update(data).final(); }

std::string sha256_file_hex(const std::filesystem::path& path) {
    UniqueFd fd = open_file(path, O_RDONLY);
    Sha256 h;
    std::vector<char> buffer(1 << 20);
    for (;;) {
        ssize_t r = ::read(fd.get(), buffer.data(), buffer.size());
        if (r < 0) {
            if (errno == EINTR) continue;
            fail_errno("reading " + path.string());
        }
        if (r == 0) break;
        h.update(buffer.data(), static_cast<size_t>(r));
    }
    return to_hex(h.final());
}

Digest hmac_sha256(std::string_view key, std::string_view message) {
    Digest d{};
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
              message.size(), d.data(), &len))
        fail("OpenSSL: HMAC-SHA256 failed");
    return d;
}

std::string to_hex(std::span<const uint8_t> bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (uint8_t b : bytes) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 15]);
    }
    return out;
}

std::vector<uint8_t> from_hex(std::string_view hex, const std::string& what) {
    auto value = [&](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        fail(what + ": '" + std::string(hex) + "' is not hexadecimal");
    };
    if (hex.size() % 2) fail(what + ": '" + std::string(hex) + "' has an odd number of hex digits");
    std::vector<uint8_t> out(hex.size() / 2);
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(value(hex[2 * i]) << 4 | value(hex[2 * i + 1]));
    return out;
}

}  // namespace cairn
