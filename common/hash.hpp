// SHA-256 and HMAC-SHA256 through OpenSSL, with hex helpers.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cairn {

using Digest = std::array<uint8_t, 32>;

struct EvpMdCtxDeleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter>;

class Sha256 {
public:
    Sha256();
    Sha256& update(const void* data, size_t size);
    Sha256& update(std::string_view data) { return update(data.data(), data.size()); }
    Digest final();

private:
    EvpMdCtxPtr ctx_;
};

Digest sha256(std::string_view data);
std::string sha256_file_hex(const std::filesystem::path& path);
Digest hmac_sha256(std::string_view key, std::string_view message);

std::string to_hex(std::span<const uint8_t> bytes);
// Parses lower- or upper-case hex; throws Error naming `what` on bad input.
std::vector<uint8_t> from_hex(std::string_view hex, const std::string& what);

}  // namespace cairn
