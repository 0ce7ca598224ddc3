// Reference values (attestation/reference.hpp): what a good boot of a slot measures into the TPM,
// predicted from the slot's signed UKI at build time (../shared/notes/attestation.md §2, §3).
//   PCR 4   the firmware's EV_EFI_BOOT_SERVICES_APPLICATION for the UKI: its Authenticode SHA-256
//   PCR 11  systemd-stub 252: per section in its fixed order, SHA-256(name + NUL) and SHA-256 of the
//           section as loaded (VirtualSize bytes); then systemd-pcrphase's words from userspace
//   PCR 9   Linux 6.1's EFI stub: EV_EVENT_TAG of the load options (the command line systemd-stub
//           hands on, UTF-16LE + NUL) and of the initrd it gets through LoadFile2 (.initrd)
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/reference.hpp"
#include "common/hash.hpp"
#include "imager/recipe.hpp"
#include "imager/tree.hpp"

namespace cairn::imager {

// systemd-stub 252's measured sections, in the order it measures them (.pcrsig never is; .uname
// and .sbat are unknown to it). Absent sections are skipped.
inline constexpr std::array<const char*, 7> stub_measured_sections = {".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"};

// A TPM extend: SHA-256(pcr || digest).
Digest pcr_extend(const Digest& pcr, const Digest& digest);

// PCR 11 (from zeros) after systemd-stub measured these sections (name -> content as loaded).
Digest stub_pcr11(const std::map<std::string, std::string>& sections);

// `stub`, then each value after extending it with SHA-256 of each word in turn (what
// systemd-pcrphase does for "sysinit", "ready", ...).
std::vector<Digest> pcr11_chain(const Digest& stub, const std::vector<std::string>& words);

// The load options systemd-stub 252 gives the kernel for a .cmdline section, as the bytes Linux's
// EFI stub measures: the section's UTF-8 up to any NUL, as UCS-2 (invalid sequences and characters
// outside the BMP skipped), leading and trailing whitespace and control characters dropped and
// inner ones made spaces (systemd's mangle_stub_cmdline), UTF-16LE with the terminating NUL.
std::string stub_load_options(std::string_view cmdline_section);

// The systemd-pcrphase words an image's userspace extends PCR 11 with once booted from a UKI, in
// order, from what its tree holds: a systemd image whose systemd-pcrphase-sysinit.service and
// systemd-pcrphase.service are wanted by sysinit.target (Debian 12's systemd package) and not
// masked gives "sysinit", "ready". The initrd phases never happen: cairn-init is not systemd.
// ("final" and "shutdown" come when it stops, after anything worth attesting.)
std::vector<std::string> pcrphase_words(const Tree& tree);

// One slot's reference values from its signed UKI. Throws Error naming the file at fault (not a
// PE image, no .linux/.cmdline/.initrd section).
attestation::SlotReference measure_uki(const std::filesystem::path& signed_uki, const std::string& slot, const std::string& kernel_release,
                                       const std::vector<std::string>& pcrphase);

// Where each ESP holds the signed reference document, beside the UKI (EFI/BOOT/BOOTX64.EFI).
inline constexpr const char* esp_reference = "EFI/BOOT/reference.json";
inline constexpr const char* esp_reference_sig = "EFI/BOOT/reference.json.sig";

// [attestation]'s signer, checked as devices and verifiers will check the document: a certificate
// that may sign bundles (updater::check_bundle_signer) and chains to [update]'s trust anchor.
// Throws Error naming the recipe's keys. A key other than RSA gets a warning on stderr: an ECDSA
// signature differs on every run (OpenSSL 3.0 has no deterministic ECDSA), and the document's
// signature sits on the ESPs, so the disk would no longer be reproducible.
void check_attestation_signer(const Recipe& recipe);

// The signature over the document text: detached CMS (DER), as bundles are signed, with the
// build's epoch as its signing time: with an RSA key the same document gives the same bytes.
std::string sign_reference(std::string_view document, const Recipe& recipe, int64_t epoch);

// SHA-256 of the DER encoding of the (first) certificate in a PEM file.
Digest certificate_sha256(const std::filesystem::path& pem);

}  // namespace cairn::imager
