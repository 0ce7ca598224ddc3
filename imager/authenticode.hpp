// Authenticode signing of PE images (UKIs) for UEFI Secure Boot, done in-process with OpenSSL
// so that the same image, key and epoch always give the same bytes: the signing time in the
// signature is the build's epoch, not the clock (sbsign puts the current time there).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>

namespace cairn::imager {

struct SigningKey {
    std::filesystem::path key, cert;  // PEM private key (may be encrypted) and PEM certificate
    std::string passphrase;           // for an encrypted key
};

// The Authenticode SHA-256 of a PE image, as UEFI firmware computes it: the headers without the
// checksum and the certificate table entry, the sections in file order, then the bytes after
// them up to any certificate table.
std::array<uint8_t, 32> authenticode_digest(const std::string& pe, const std::string& what);

// Signs `in` into `out` (written under a temporary name and renamed). `epoch` is the signing
// time recorded in the signature. An image that already carries a signature is refused.
void sign_pe(const std::filesystem::path& in, const std::filesystem::path& out, const SigningKey& key, int64_t epoch);

}  // namespace cairn::imager
