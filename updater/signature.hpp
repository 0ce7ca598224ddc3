// CMS (PKCS#7) detached signatures over a bundle's manifest, through OpenSSL.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::updater {

// Signs `data` with the PEM key (decrypted with `passphrase` when it is encrypted) and its PEM
// certificate (intermediate certificates may follow in the same file; they go into the
// signature). Returns the DER CMS SignedData, detached, with the signer certificate. Its signed
// attributes carry a signing time: `signing_time` (seconds since the epoch) when given, else
// OpenSSL's clock. With a signing time given and an RSA key (PKCS#1 v1.5) the same data give the
// same bytes; an ECDSA signature value differs on every call.
std::string cms_sign(std::string_view data, const std::filesystem::path& key, const std::filesystem::path& cert,
                     const std::string& passphrase = {}, std::optional<int64_t> signing_time = {});

// The extended key usage a certificate must carry to sign bundles (docs/bundle.md, "The
// signature"): an OID of Cairn's own, under the UUID arc 2.25 (ITU-T X.667), so that no
// certificate issued for anything else (a TLS server, an e-mail signer, a code-signing certificate
// for Secure Boot or Authenticode) signs bundles, whatever CA issued it.
inline constexpr const char* bundle_signing_eku = "2.25.198164079061254716068797520048519226823";

// Throws Error naming the file when its (first) certificate may not sign bundles (no
// bundle_signing_eku, or a key usage without digitalSignature): `cairn bundle` makes no bundle
// that every device would refuse.
void check_bundle_signer(const std::filesystem::path& cert);

// When certificates are checked for validity: the clock, but never earlier than `floor`, the
// running image's build time. A device whose clock was never set (1970) would otherwise find every
// certificate "not yet valid"; its own build time is a moment it knows has passed.
int64_t certificate_time(int64_t now, int64_t floor);

// Checks a detached DER CMS signature over `data`: it signed exactly these bytes, and every
// signer's certificate chains to one of the PEM certificates in `trust_anchor`, is valid at `at`
// (seconds since the epoch; unset: the clock), carries bundle_signing_eku and, when it has a key
// usage, digitalSignature. Throws Error beginning with `what` and saying which of these failed
// (naming the certificate's subject).
void cms_verify(std::string_view data, std::string_view signature, const std::filesystem::path& trust_anchor,
                const std::string& what, std::optional<int64_t> at = {});

// cms_verify with the trust anchor's certificates as PEM text, `anchor_name` naming them in the
// messages (`cairn bundle` checks against the anchor a build recorded in its manifest).
void cms_verify_pem(std::string_view data, std::string_view signature, std::string_view anchor_pem, const std::string& anchor_name,
                    const std::string& what, std::optional<int64_t> at = {});

// A signer of a signature, as `cairn inspect BUNDLE` shows it.
struct SignerInfo {
    std::string subject, issuer;       // RFC 2253
    std::string not_before, not_after;
    std::string usage_problem;         // why it may not sign bundles; "" when it may
};

// Checks that `signature` (detached DER CMS) signed exactly `data`, without deciding whom to trust
// (cms_verify does that), and returns its signers. Throws Error beginning with `what`, with
// cms_verify's words.
std::vector<SignerInfo> cms_signers(std::string_view data, std::string_view signature, const std::string& what);

}  // namespace cairn::updater
