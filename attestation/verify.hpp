// The boot attestation verifier's judgement: one device's evidence (a TPM quote, its signature,
// the AK's public area, the UEFI event log) against the signed reference document of the image
// it runs (attestation/reference.hpp; its signature already checked by the caller) and a policy.
// No network, no database: whoever calls this owns the nonce, the AK's enrolment and the last
// quote's clock, and passes them in.
//
// Checks (`../shared/notes/attestation.md` §7), each failure one FailedCheck with a code:
//   quote          the AK public area is an AK; the signature over the quote; magic/type;
//                  extraData == the nonce; the PCR selection == policy.pcrs (SHA-256); safe clock;
//                  not going backwards against policy.last_clock.
//   replay         the log parses; every event whose digest can be recomputed from its data has
//                  that digest (so the data we judge is what was measured); the quote's pcrDigest
//                  == SHA-256 of the log's replayed PCR values. PCR 11 may have been extended after
//                  the stub by userspace (systemd-pcrphase) outside the firmware log: then the
//                  quoted PCR 11 must be one of the booted slot's later pcr11 values and the log's
//                  own PCR 11 must replay to the stub's value (pcr11[0]).
//   secure boot    PCR 7's EV_EFI_VARIABLE_DRIVER_CONFIG "SecureBoot" is 01 (reason text exactly
//                  "Secure Boot disabled" when it is not).
//   signer         a PCR 7 EV_EFI_VARIABLE_AUTHORITY names the reference's uki_signer_certificate
//                  (SHA-256 of its DER), and no authority names another certificate (an image
//                  verified by another db entry ran).
//   uki (PCR 4)    every EV_EFI_BOOT_SERVICES_APPLICATION is a reference slot's uki_authenticode
//                  (the stub's own load of its .linux, which firmware measures when Secure Boot is
//                  off, is recognised by its device path and skipped); the last one names the
//                  booted slot.
//   PCR 11, 9      the booted slot's pcr11 list holds PCR 11; PCR 9 == its pcr9 (the reason
//                  says whether the command line or the initrd event differs from the slot's).
//   PCR 12, 13     zero (no credentials, sysexts, or command line from outside the UKI).
//   PCR 0, 2       firmware and option ROM code: judged by event type, not pinned. Only the event
//                  types OVMF and PC firmware put there (S-CRTM version/contents, firmware blobs,
//                  POST code, microcode, platform config flags, handoff tables, boot services
//                  drivers for option ROMs, NO_ACTION) and one EV_SEPARATOR as the last event.
//                  Why not pinned values: the reference document is predicted by the imager and
//                  cannot know the device's firmware; pinning a first boot's values needs state
//                  (the database comes later), trusts whatever that first boot ran, and turns
//                  every firmware or QEMU update into an Unhealthy device (Keylime's and fwupd's
//                  reported pain, note §5). The replayed values are returned (firmware_pcrs) so
//                  a layer with a database can pin them when it wants to.
// Checks on a PCR run only when the PCR is quoted (policy.pcrs); the others' log entries are not
// anchored to the TPM and prove nothing. PCRs 1, 3, 5 and 6 are quoted so that their events are
// anchored too (their digests must replay, and recomputable digests must match their data), but
// no value is required of them: PCR 1 changes with every BootOrder write and the machine's NICs,
// PCR 5 with the GPT (the data partition grows on first boot), 3 and 6 hold only separators on
// the firmware seen so far.
//
// Outcome: healthStatus Healthy only when no check failed (Secure Boot Enabled, the quote and
// boot integrity Valid); any failure makes it Unhealthy. Unknown fields: what could not be judged
// (no trustworthy log: Secure Boot Unknown; no slot matched: kernel version and slot empty).
// "Unknown" health is the caller's answer for no evidence at all (timeouts, transport errors).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/quote.hpp"
#include "attestation/reference.hpp"

namespace cairn::attestation {

// What the device sent.
struct Evidence {
    std::string ak_public;   // TPM2B_PUBLIC of the attestation key
    std::string quote;       // TPMS_ATTEST bytes (TPM2B_ATTEST contents) of TPM2_Quote
    std::string signature;   // TPMT_SIGNATURE
    std::string event_log;   // binary_bios_measurements
};

// What the verifier asks for.
struct Policy {
    // PCRs that must be quoted (SHA-256 bank), exactly this selection. The default: firmware (0),
    // its config (1, judged not at all: it changes with every BootOrder write and NIC MAC), option
    // ROMs (2, 3), boot manager and UKI (4), GPT and ExitBootServices (5), 6, Secure Boot policy
    // and authorities (7), Linux's stub (9) and systemd-stub's UKI sections (11). Not 10 (IMA: order-
    // dependent with module loads), not 8 (GRUB), not 12/13 unless asked (then they must be zero).
    std::vector<unsigned> pcrs = {0, 1, 2, 3, 4, 5, 6, 7, 9, 11};
    std::string nonce;                       // the qualifyingData sent to the device
    std::optional<QuoteClock> last_clock;    // the last accepted quote's clock, if any
    // Whether the AK was activated against the device's enrolled EK (credential activation,
    // done by the caller). nullopt: not known here; the AK is then judged by its public area only.
    std::optional<bool> ak_activated;
};

enum class SecureBootState { Enabled, Disabled, Unknown };
enum class Validity { Valid, Invalid, Unknown };
enum class Health { Healthy, Unhealthy, Unknown };
const char* secure_boot_state_name(SecureBootState s);  // "Enabled", "Disabled", "Unknown"
const char* validity_name(Validity v);                  // "Valid", "Invalid", "Unknown"
const char* health_name(Health h);                      // "Healthy", "Unhealthy", "Unknown"

enum class CheckCode {
    AkInvalid,              // the AK public area is malformed or not an AK
    AkNotActivated,         // policy.ak_activated == false
    QuoteMalformed,         // TPMS_ATTEST or TPMT_SIGNATURE does not parse
    QuoteSignatureInvalid,  // not the AK's signature
    QuoteNonceMismatch,     // extraData != nonce
    QuoteSelectionMismatch, // not the policy's PCR selection
    QuoteClockUnsafe,       // clockInfo.safe == 0
    QuoteClockBackwards,    // against policy.last_clock
    EventLogMalformed,      // the log does not parse (or has no SHA-256 bank)
    EventDigestMismatch,    // an event's digest is not that of its data
    PcrDigestMismatch,      // the log's replay does not give the quote's pcrDigest
    SecureBootDisabled,     // PCR 7 SecureBoot is not 01 (or absent)
    SignerMismatch,         // no/another EV_EFI_VARIABLE_AUTHORITY certificate
    UkiMismatch,            // PCR 4 application not a reference UKI
    Pcr11Mismatch,          // PCR 11 not in the slot's list
    Pcr9Mismatch,           // PCR 9 not the slot's
    PcrNotZero,             // PCR 12 or 13 extended
    FirmwareEventUnexpected,// PCR 0/2 events of another type, or no closing separator
    // Not found by verify_evidence (which is handed a reference already trusted): the caller's
    // check that the reference document's CMS signature chains to the update CA failed.
    ReferenceSignatureInvalid,
    // Nor these: the verifier's image policy (attestation/verifier_service.hpp, AllowedImage).
    ImageNotAllowed,        // the reference document's image is not one the policy lists
    ImageTooOld,            // its version is below the policy's minimum for that image
};
const char* check_code_name(CheckCode c);  // "ak-invalid", "quote-signature-invalid", ...
// The code named so; Error naming the text when none is.
CheckCode parse_check_code(std::string_view name);

struct FailedCheck {
    CheckCode code;
    std::string reason;
};

struct AttestationStatus {
    SecureBootState attestSecureBootEnabled = SecureBootState::Unknown;
    Validity attestationCertValidated = Validity::Unknown;  // the AK and its quote
    Validity bootIntegrityValidated = Validity::Unknown;    // log replay, UKI, PCRs 0/2/4/9/11/12/13, signer
    Health healthStatus = Health::Unknown;
    std::string errorMessage;        // the failed checks' reasons joined with "; " (empty when healthy)
    std::string linuxKernelVersion;  // the booted slot's kernel_release ("" when no slot matched)
    std::string slot;                // "a", "b" or "" when no slot matched
    std::vector<FailedCheck> failed;
    // For callers that keep history: the quote's clock, and PCR 0/2 as replayed (hex; empty when
    // the log did not replay).
    std::optional<QuoteClock> clock;
    std::map<unsigned, std::string> firmware_pcrs;
    bool failed_check(CheckCode code) const;
};

AttestationStatus verify_evidence(const Evidence& evidence, const ReferenceDocument& reference, const Policy& policy);

}  // namespace cairn::attestation
