// CMS (PKCS#7) detached signatures over a bundle's manifest, through OpenSSL.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace cairn::updater {

// Signs `data` with the PEM key (decrypted with `passphrase` when it is encrypted) and its PEM
// certificate (intermediate certificates may follow in the same file; they go into the
// signature). Returns the DER CMS SignedData, detached, with the signer certificate. Deterministic
// apart from the signature value itself (no signing time).
std::string cms_sign(std::string_view data, const std::filesystem::path& key, const std::filesystem::path& cert,
                     const std::string& passphrase = {});

// Checks a detached DER CMS signature over `data`: the signer's certificate chains to one of the
// PEM certificates in `trust_anchor`, is valid now, and signed exactly these bytes. Throws Error
// beginning with `what` and saying which of these failed.
void cms_verify(std::string_view data, std::string_view signature, const std::filesystem::path& trust_anchor,
                const std::string& what);

}  // namespace cairn::updater
