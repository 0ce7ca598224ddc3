#include "attestation/verify.hpp"

#include <algorithm>

#include "attestation/eventlog.hpp"
#include "common/error.hpp"
#include "common/hash.hpp"

namespace cairn::attestation {

namespace {

struct CodeName {
    CheckCode code;
    const char* name;
};
constexpr CodeName code_names[] = {
    {CheckCode::AkInvalid, "ak-invalid"},
    {CheckCode::AkNotActivated, "ak-not-activated"},
    {CheckCode::QuoteMalformed, "quote-malformed"},
    {CheckCode::QuoteSignatureInvalid, "quote-signature-invalid"},
    {CheckCode::QuoteNonceMismatch, "quote-nonce-mismatch"},
    {CheckCode::QuoteSelectionMismatch, "quote-selection-mismatch"},
    {CheckCode::QuoteClockUnsafe, "quote-clock-unsafe"},
    {CheckCode::QuoteClockBackwards, "quote-clock-backwards"},
    {CheckCode::EventLogMalformed, "event-log-malformed"},
    {CheckCode::EventDigestMismatch, "event-digest-mismatch"},
    {CheckCode::PcrDigestMismatch, "pcr-digest-mismatch"},
    {CheckCode::SecureBootDisabled, "secure-boot-disabled"},
    {CheckCode::SignerMismatch, "signer-mismatch"},
    {CheckCode::UkiMismatch, "uki-mismatch"},
    {CheckCode::Pcr11Mismatch, "pcr11-mismatch"},
    {CheckCode::Pcr9Mismatch, "pcr9-mismatch"},
    {CheckCode::PcrNotZero, "pcr-not-zero"},
    {CheckCode::FirmwareEventUnexpected, "firmware-event-unexpected"},
    {CheckCode::ReferenceSignatureInvalid, "reference-signature-invalid"},
    {CheckCode::ImageNotAllowed, "image-not-allowed"},
    {CheckCode::ImageTooOld, "image-too-old"},
};

bool is_quote_check(CheckCode c) {
    switch (c) {
    case CheckCode::AkInvalid:
    case CheckCode::AkNotActivated:
    case CheckCode::QuoteMalformed:
    case CheckCode::QuoteSignatureInvalid:
    case CheckCode::QuoteNonceMismatch:
    case CheckCode::QuoteSelectionMismatch:
    case CheckCode::QuoteClockUnsafe:
    case CheckCode::QuoteClockBackwards: return true;
    default: return false;
    }
}

bool is_boot_check(CheckCode c) { return !is_quote_check(c) && c != CheckCode::SecureBootDisabled; }

std::string bytes_of(const Sha256& d) { return std::string(reinterpret_cast<const char*>(d.data()), d.size()); }
std::string hex(std::string_view s) { return to_hex({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }

bool quoted(const std::vector<unsigned>& pcrs, unsigned pcr) { return std::find(pcrs.begin(), pcrs.end(), pcr) != pcrs.end(); }

// PCR 0 and 2: the event types firmware code and option ROMs are measured with.
bool firmware_event_allowed(unsigned pcr, uint32_t type) {
    using namespace event_type;
    switch (type) {
    case no_action:
    case efi_platform_firmware_blob:
    case efi_platform_firmware_blob2: return true;
    case s_crtm_version:
    case s_crtm_contents:
    case post_code:
    case cpu_microcode:
    case platform_config_flags:
    case table_of_devices:
    case nonhost_code:
    case nonhost_info:
    case efi_handoff_tables:
    case efi_handoff_tables2:
    case efi_hcrtm_event: return pcr == 0;
    case efi_boot_services_driver:
    case efi_runtime_services_driver: return pcr == 2;
    default: return false;
    }
}

}  // namespace

const char* secure_boot_state_name(SecureBootState s) {
    switch (s) {
    case SecureBootState::Enabled: return "Enabled";
    case SecureBootState::Disabled: return "Disabled";
    default: return "Unknown";
    }
}
const char* validity_name(Validity v) {
    switch (v) {
    case Validity::Valid: return "Valid";
    case Validity::Invalid: return "Invalid";
    default: return "Unknown";
    }
}
const char* health_name(Health h) {
    switch (h) {
    case Health::Healthy: return "Healthy";
    case Health::Unhealthy: return "Unhealthy";
    default: return "Unknown";
    }
}

const char* check_code_name(CheckCode c) {
    for (const auto& n : code_names)
        if (n.code == c) return n.name;
    return "unknown";
}

CheckCode parse_check_code(std::string_view name) {
    for (const auto& n : code_names)
        if (name == n.name) return n.code;
    fail("unknown attestation check code '" + std::string(name) + "'");
}

bool AttestationStatus::failed_check(CheckCode code) const {
    return std::any_of(failed.begin(), failed.end(), [&](const FailedCheck& f) { return f.code == code; });
}

AttestationStatus verify_evidence(const Evidence& evidence, const ReferenceDocument& reference, const Policy& policy) {
    AttestationStatus st;
    auto add = [&](CheckCode code, std::string reason) { st.failed.push_back({code, std::move(reason)}); };
    std::vector<unsigned> pcrs = policy.pcrs;
    std::sort(pcrs.begin(), pcrs.end());
    pcrs.erase(std::unique(pcrs.begin(), pcrs.end()), pcrs.end());

    // The attestation key and the quote.
    std::optional<AttestationKey> ak;
    try {
        ak = parse_ak_public(evidence.ak_public, "attestation key");
    } catch (const Error& e) {
        add(CheckCode::AkInvalid, e.what());
    }
    if (policy.ak_activated == false) add(CheckCode::AkNotActivated, "the attestation key was not activated against the device's endorsement key");
    std::optional<Quote> quote;
    std::optional<Signature> signature;
    try {
        quote = parse_attest(evidence.quote, "quote");
        signature = parse_signature(evidence.signature, "quote signature");
    } catch (const Error& e) {
        add(CheckCode::QuoteMalformed, e.what());
    }
    bool signed_ok = false;
    if (ak && quote && signature) {
        signed_ok = quote_signature_valid(*ak, evidence.quote, *signature);
        if (!signed_ok) add(CheckCode::QuoteSignatureInvalid, "the quote's signature is not the attestation key's");
    }
    bool selection_ok = false;
    if (quote) {
        st.clock = QuoteClock{quote->clock, quote->reset_count, quote->restart_count};
        if (quote->extra_data != policy.nonce) add(CheckCode::QuoteNonceMismatch, "the quote's nonce (extraData) is not the one sent");
        selection_ok = quote->selection.size() == 1 && quote->selection[0] == PcrSelection{alg_sha256, pcrs};
        if (!selection_ok) {
            // check_quote words the selection failure (its other lines are judged here one by one).
            for (const auto& line : check_quote(*quote, quote->extra_data, pcrs, {}))
                if (line.find("selects PCRs") != std::string::npos) add(CheckCode::QuoteSelectionMismatch, line);
        }
        if (!quote->safe) add(CheckCode::QuoteClockUnsafe, "the quote's clockInfo.safe is 0 (the TPM clock may have gone back)");
        if (policy.last_clock) {
            const std::string back = quote_time_goes_backwards(*quote, *policy.last_clock);
            if (!back.empty()) add(CheckCode::QuoteClockBackwards, "the quote's " + back);
        }
    }

    // The event log.
    std::optional<EventLog> log;
    try {
        log = parse_event_log(evidence.event_log, "event log");
        if (!log->has_bank(alg_sha256)) fail("event log: no sha256 bank");
    } catch (const Error& e) {
        add(CheckCode::EventLogMalformed, e.what());
        log.reset();
    }
    const SlotReference* slot = nullptr;
    bool replay_ok = false;
    if (log) {
        for (const auto& m : event_digest_mismatches(*log, alg_sha256)) add(CheckCode::EventDigestMismatch, "event log: " + m);
        const auto replayed = replay(*log, alg_sha256);
        for (unsigned p : {0u, 2u}) st.firmware_pcrs[p] = hex(replayed[p]);
        auto event_at = [](const Event& e) { return " at offset " + std::to_string(e.offset); };

        // PCR 4: the UKI, which names the booted slot.
        if (quoted(pcrs, 4)) {
            bool any = false, previous_uki = false, foreign = false;
            for (const auto& e : log->events) {
                if (e.pcr != 4 || e.type != event_type::efi_boot_services_application) continue;
                any = true;
                const std::string* d = e.digest(alg_sha256);
                const SlotReference* match = nullptr;
                for (const auto& s : reference.slots)
                    if (d && *d == bytes_of(s.uki_authenticode)) match = &s;
                if (match) {
                    slot = match;
                    previous_uki = true;
                    continue;
                }
                bool stub_kernel = false;
                try {
                    stub_kernel = is_stub_kernel_load(parse_image_load(e));
                } catch (const Error&) {
                }
                if (stub_kernel && previous_uki) {
                    previous_uki = false;
                    continue;
                }
                previous_uki = false;
                foreign = true;
                add(CheckCode::UkiMismatch, "boot integrity: PCR 4: the EFI application" + event_at(e) + " (Authenticode " +
                                                (d ? hex(*d) : std::string("none")) + ") is not the UKI of any slot of " +
                                                reference.image + " " + reference.version);
            }
            if (!any) add(CheckCode::UkiMismatch, "boot integrity: PCR 4 names no EFI application (no UKI was started)");
            if (any && !slot && !foreign) add(CheckCode::UkiMismatch, "boot integrity: no slot's UKI was started");
        }

        // The quote's pcrDigest against the replay (PCR 11 may be later in the slot's chain).
        std::optional<std::string> pcr11;  // the quoted value of PCR 11, once known
        if (quote && selection_ok) {
            std::map<unsigned, std::string> values;
            for (unsigned p : pcrs) values[p] = replayed[p];
            if (pcr_composite_digest(pcrs, values) == quote->pcr_digest) {
                replay_ok = true;
                pcr11 = replayed[11];
            } else if (quoted(pcrs, 11) && slot) {
                for (size_t i = 1; i < slot->pcr11.size() && !replay_ok; ++i) {
                    values[11] = bytes_of(slot->pcr11[i]);
                    if (pcr_composite_digest(pcrs, values) == quote->pcr_digest) {
                        replay_ok = true;
                        pcr11 = values[11];
                        if (replayed[11] != bytes_of(slot->pcr11[0]))
                            add(CheckCode::Pcr11Mismatch, "boot integrity: PCR 11 in the event log is " + hex(replayed[11]) +
                                                              ", not the value systemd-stub leaves for slot " + slot->slot);
                    }
                }
            }
            if (!replay_ok) add(CheckCode::PcrDigestMismatch, "the event log does not replay to the quoted PCR values (pcrDigest)");
        }

        // PCR 7: Secure Boot and the UKI's signer.
        if (quoted(pcrs, 7)) {
            bool enabled = false, forged = false;
            for (const auto& e : log->events) {
                if (e.pcr != 7 || e.type != event_type::efi_variable_driver_config) continue;
                try {
                    const UefiVariable v = parse_uefi_variable(e);
                    if (v.vendor != efi_global_variable_guid || v.name != "SecureBoot") continue;
                    // Only data that is what was measured counts (event_digest_mismatches reported it).
                    const std::string* d = e.digest(alg_sha256);
                    if (!d || *d != hash(alg_sha256, e.data)) forged = true;
                    enabled = v.data == std::string(1, '\x01');
                } catch (const Error& err) {
                    add(CheckCode::EventLogMalformed, err.what());
                }
            }
            if (forged) enabled = false;
            st.attestSecureBootEnabled = forged ? SecureBootState::Unknown : enabled ? SecureBootState::Enabled : SecureBootState::Disabled;
            if (!enabled && !forged) add(CheckCode::SecureBootDisabled, "Secure Boot disabled");
            bool signer = false;
            for (const auto& e : log->events) {
                if (e.pcr != 7 || e.type != event_type::efi_variable_authority) continue;
                try {
                    const SignatureData s = parse_signature_data(parse_uefi_variable(e), e.offset);
                    const Digest cert = sha256(s.certificate);
                    if (std::equal(cert.begin(), cert.end(), reference.uki_signer_certificate.begin()))
                        signer = true;
                    else
                        add(CheckCode::SignerMismatch, "boot integrity: PCR 7: an image was verified by the db certificate with SHA-256 " +
                                                           to_hex(cert) + event_at(e) + ", not the UKI signer");
                } catch (const Error& err) {
                    add(CheckCode::SignerMismatch, std::string("boot integrity: PCR 7: ") + err.what());
                }
            }
            if (!signer && enabled)
                add(CheckCode::SignerMismatch, "boot integrity: PCR 7 has no EV_EFI_VARIABLE_AUTHORITY for the UKI signer certificate " +
                                                   to_hex(reference.uki_signer_certificate));
        }

        // PCR 11 and 9 of the booted slot.
        if (slot && quoted(pcrs, 11)) {
            const std::string value = pcr11 ? *pcr11 : replayed[11];
            if (std::none_of(slot->pcr11.begin(), slot->pcr11.end(), [&](const Sha256& v) { return bytes_of(v) == value; }))
                add(CheckCode::Pcr11Mismatch, "boot integrity: PCR 11 is " + hex(value) + ", not a value slot " + slot->slot + "'s UKI leaves");
        }
        if (slot && quoted(pcrs, 9) && replayed[9] != bytes_of(slot->pcr9)) {
            // Which of Linux's two measurements differs, when the log's tagged events say.
            std::string which;
            for (const auto& e : log->events) {
                if (e.pcr != 9 || e.type != event_type::event_tag) continue;
                const std::string* d = e.digest(alg_sha256);
                try {
                    const TaggedEvent t = parse_tagged_event(e);
                    if (t.id == linux_tag_load_options && d && *d != bytes_of(slot->cmdline_event)) which += " (the kernel command line differs)";
                    if (t.id == linux_tag_initrd && d && *d != bytes_of(slot->initrd_event)) which += " (the initrd differs)";
                } catch (const Error&) {
                }
            }
            add(CheckCode::Pcr9Mismatch, "boot integrity: PCR 9 (kernel command line and initrd) is " + hex(replayed[9]) + ", not slot " + slot->slot + "'s " +
                                             to_hex(slot->pcr9) + which);
        }
        for (unsigned p : {12u, 13u})
            if (quoted(pcrs, p) && replayed[p] != std::string(32, '\0'))
                add(CheckCode::PcrNotZero, "boot integrity: PCR " + std::to_string(p) + " was extended (credentials, system extensions or a command line from outside the UKI)");

        // PCR 0 and 2: firmware and option ROM code, by event type.
        for (unsigned p : {0u, 2u}) {
            if (!quoted(pcrs, p)) continue;
            // One failure per PCR: the first event out of place.
            const Event* last = nullptr;
            bool bad = false;
            for (const auto& e : log->events) {
                if (e.pcr != p || bad) continue;
                if (last && last->type == event_type::separator && e.type != event_type::no_action) {
                    add(CheckCode::FirmwareEventUnexpected, "boot integrity: PCR " + std::to_string(p) + ": " + event_type_name(e.type) + event_at(e) + " after its separator");
                    bad = true;
                } else if (e.type != event_type::separator && !firmware_event_allowed(p, e.type)) {
                    add(CheckCode::FirmwareEventUnexpected, "boot integrity: PCR " + std::to_string(p) + ": unexpected " + event_type_name(e.type) + event_at(e));
                    bad = true;
                }
                if (e.type != event_type::no_action) last = &e;
            }
            if (!bad && (!last || last->type != event_type::separator))
                add(CheckCode::FirmwareEventUnexpected, "boot integrity: PCR " + std::to_string(p) + " does not end with a separator");
        }
    }

    // The record.
    const bool quote_failed = std::any_of(st.failed.begin(), st.failed.end(), [](const FailedCheck& f) { return is_quote_check(f.code); });
    const bool boot_failed = !log || std::any_of(st.failed.begin(), st.failed.end(), [](const FailedCheck& f) { return is_boot_check(f.code); });
    const bool trusted = !quote_failed && signed_ok && replay_ok;
    st.attestationCertValidated = quote_failed ? Validity::Invalid : (signed_ok ? Validity::Valid : Validity::Unknown);
    st.bootIntegrityValidated = boot_failed ? Validity::Invalid : (trusted ? Validity::Valid : Validity::Unknown);
    if (!trusted) st.attestSecureBootEnabled = SecureBootState::Unknown;  // an unanchored log proves nothing
    if (slot) {
        st.slot = slot->slot;
        st.linuxKernelVersion = slot->kernel_release;
    }
    st.healthStatus = st.failed.empty() && trusted ? Health::Healthy : Health::Unhealthy;
    for (const auto& f : st.failed) st.errorMessage += (st.errorMessage.empty() ? "" : "; ") + f.reason;
    return st;
}

}  // namespace cairn::attestation
