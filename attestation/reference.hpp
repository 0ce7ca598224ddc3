// Reference values: what a good boot of an image's slot measures into the TPM, predicted by the
// imager at build time (no "golden" boot recorded by hand). They travel in a signed reference
// document: one per image version, written by `cairn build` beside manifest.json and carried in
// every update bundle's signed manifest, so a verifier learns a new slot's values from the same
// signature that let the device install it (signed like bundles: CMS, the update signing key,
// checked against the update CA with updater/signature's cms_verify).
//
// The imager (host side) writes these; the verifier (attestation/verify) reads them. The format
// is defined here, on the consumer's side, so host-side generators depend on device-side
// consumers and never the reverse (../shared/DESIGN.md).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::attestation {

using Sha256 = std::array<uint8_t, 32>;

// One slot's predicted measurements, SHA-256 bank.
struct SlotReference {
    std::string slot;            // "a" or "b" (partitions::slot_letter)
    std::string kernel_release;  // uname -r of the slot's kernel (the status record's linuxKernelVersion)
    // PCR 4: the EV_EFI_BOOT_SERVICES_APPLICATION digest firmware logs for the slot's signed UKI,
    // i.e. the Authenticode SHA-256 of the signed PE file.
    Sha256 uki_authenticode{};
    // PCR 11 as systemd-stub leaves it (its EV_IPL events for .linux .osrel .cmdline .initrd ...),
    // then every value the image's userspace may leave after it (systemd-pcrphase extensions),
    // in the order they happen: pcr11[0] is the stub's value. A quote's PCR 11 must be one of them.
    std::vector<Sha256> pcr11;
    // PCR 9 as Linux's EFI stub leaves it: its two EV_EVENT_TAG events, the command line
    // (UTF-16LE + NUL) and the initrd passed by LoadFile2, and the digests of those two events.
    Sha256 pcr9{};
    Sha256 cmdline_event{}, initrd_event{};
};

// The whole document for one image version.
struct ReferenceDocument {
    std::string image;    // the recipe's name (os-release IMAGE_ID)
    std::string version;  // the image version
    // SHA-256 of the DER certificate that signed the UKIs (Secure Boot db entry): PCR 7's
    // EV_EFI_VARIABLE_AUTHORITY event for the UKI must name a db entry with this certificate.
    Sha256 uki_signer_certificate{};
    std::vector<SlotReference> slots;
};

// JSON text of the document (stable key order, so the same build gives the same bytes).
std::string to_json(const ReferenceDocument& doc);
// Parses what to_json wrote; throws Error naming `what` and the key at fault on bad input.
ReferenceDocument parse_reference(std::string_view json, const std::string& what);

}  // namespace cairn::attestation
