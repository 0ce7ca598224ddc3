#include "attestation/verify.hpp"

#include <gtest/gtest.h>

#include "attestation/eventlog.hpp"
#include "tests/attestation/attestation_fixture.hpp"

using namespace cairn::attestation;
using cairn::test::expect_error;
using cairn::test::hex_bytes;
using cairn::test::hex_of;
using cairn::test::recorded_log;
using cairn::test::recorded_reference;

namespace {

const std::string nonce = "verifier-nonce-0123456789abcdef!";
const std::string policy_list = "0,1,2,3,4,5,6,7,9,11";

std::string le(uint64_t v, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += char((v >> (8 * i)) & 0xff);
    return s;
}

// An event appended to a recorded log (its four banks), digests H(measured).
std::string append_event(const std::string& log, uint32_t pcr, uint32_t type, const std::string& data, const std::string& measured) {
    std::string e = le(pcr, 4) + le(type, 4) + le(4, 4);
    for (uint16_t alg : {alg_sha1, alg_sha256, alg_sha384, alg_sha512}) e += le(alg, 2) + hash(alg, measured);
    return log + e + le(data.size(), 4) + data;
}

std::vector<CheckCode> codes(const AttestationStatus& st) {
    std::vector<CheckCode> out;
    for (const auto& f : st.failed) out.push_back(f.code);
    return out;
}

class VerifyTest : public cairn::test::QuoteFixture {
protected:
    Policy policy;
    ReferenceDocument reference = recorded_reference();

    VerifyTest() { policy.nonce = nonce; }

    // A device that booted `log`: the swtpm extended with it, an AK, a quote of `pcrs`.
    Evidence device(const std::string& log, const std::string& alg = "ecc", const std::string& pcrs = policy_list) {
        Evidence ev;
        ev.ak_public = make_ak(alg);
        extend_log(log);
        const Quoted q = quote(nonce, pcrs);
        ev.quote = q.attest;
        ev.signature = q.signature;
        ev.event_log = log;
        return ev;
    }
};

}  // namespace

// The recorded Secure Boot boot against the reference predicted from its image: healthy, slot a.
TEST_F(VerifyTest, RecordedSecureBootBootIsHealthy) {
    for (const std::string alg : {"ecc", "rsa"}) {
        SCOPED_TRACE(alg);
        Evidence ev;
        if (alg == "ecc") {
            ev = device(recorded_log("sb-on"), alg);
        } else {
            // The same TPM state, quoted by an RSA AK.
            ev.ak_public = make_ak("rsa", "rsa-ak");
            run_checked({"tpm2_quote", "-c", path("rsa-ak.ctx"), "-l", "sha256:" + policy_list, "-q", hex_of(nonce), "-m", path("r.msg"), "-s",
                         path("r.sig"), "-g", "sha256"},
                        tools());
            cairn::run({"tpm2_flushcontext", "-t"}, tools());
            ev.quote = cairn::read_file(path("r.msg"));
            ev.signature = cairn::read_file(path("r.sig"));
            ev.event_log = recorded_log("sb-on");
        }
        const AttestationStatus st = verify_evidence(ev, reference, policy);
        EXPECT_EQ(st.errorMessage, "");
        EXPECT_TRUE(st.failed.empty());
        EXPECT_EQ(st.healthStatus, Health::Healthy);
        EXPECT_EQ(st.attestSecureBootEnabled, SecureBootState::Enabled);
        EXPECT_EQ(st.attestationCertValidated, Validity::Valid);
        EXPECT_EQ(st.bootIntegrityValidated, Validity::Valid);
        EXPECT_EQ(st.slot, "a");
        EXPECT_EQ(st.linuxKernelVersion, "6.1.0-57-cloud-amd64");
        ASSERT_TRUE(st.clock.has_value());
        const auto pcrs = cairn::test::recorded_pcrs("sb-on");
        EXPECT_EQ(st.firmware_pcrs.at(0), hex_of(pcrs.at(0)));
        EXPECT_EQ(st.firmware_pcrs.at(2), hex_of(pcrs.at(2)));
        // The booted UKI names its slot, whichever it is listed as.
        ReferenceDocument swapped = reference;
        std::swap(swapped.slots[0].slot, swapped.slots[1].slot);
        const AttestationStatus as_b = verify_evidence(ev, swapped, policy);
        EXPECT_EQ(as_b.healthStatus, Health::Healthy) << as_b.errorMessage;
        EXPECT_EQ(as_b.slot, "b");
        // Slot b's reference would not do: the UKI names slot a.
        ReferenceDocument only_b = reference;
        only_b.slots.erase(only_b.slots.begin());
        const AttestationStatus b = verify_evidence(ev, only_b, policy);
        EXPECT_EQ(b.healthStatus, Health::Unhealthy);
        EXPECT_EQ(codes(b), std::vector<CheckCode>{CheckCode::UkiMismatch});
        EXPECT_EQ(b.slot, "");
        EXPECT_EQ(b.bootIntegrityValidated, Validity::Invalid);
        EXPECT_NE(b.errorMessage.find("boot integrity"), std::string::npos);
    }
}

// The same image with Secure Boot off: everything else holds (the stub's own kernel load in
// PCR 4 is recognised), the one failure says so in the words.
TEST_F(VerifyTest, RecordedBootWithSecureBootOffIsUnhealthy) {
    const AttestationStatus st = verify_evidence(device(recorded_log("sb-off")), reference, policy);
    EXPECT_EQ(st.healthStatus, Health::Unhealthy);
    EXPECT_EQ(st.attestSecureBootEnabled, SecureBootState::Disabled);
    ASSERT_EQ(st.failed.size(), 1u) << st.errorMessage;
    EXPECT_EQ(st.failed[0].code, CheckCode::SecureBootDisabled);
    EXPECT_EQ(st.failed[0].reason, "Secure Boot disabled");
    EXPECT_EQ(st.errorMessage, "Secure Boot disabled");
    EXPECT_EQ(st.attestationCertValidated, Validity::Valid);
    EXPECT_EQ(st.bootIntegrityValidated, Validity::Valid);
    EXPECT_EQ(st.slot, "a");
}

// Reference values the boot does not match: each check names itself, with "boot integrity".
TEST_F(VerifyTest, BootThatDiffersFromTheReferenceIsUnhealthy) {
    const Evidence ev = device(recorded_log("sb-on"));
    struct Case {
        const char* what;
        std::function<void(ReferenceDocument&)> change;
        CheckCode code;
    };
    const std::vector<Case> cases = {
        {"another UKI", [](ReferenceDocument& r) { r.slots[0].uki_authenticode[5] ^= 1; }, CheckCode::UkiMismatch},
        {"another PCR 11", [](ReferenceDocument& r) { r.slots[0].pcr11 = {r.slots[1].pcr11[0]}; }, CheckCode::Pcr11Mismatch},
        {"another PCR 9", [](ReferenceDocument& r) { r.slots[0].pcr9[0] ^= 1; }, CheckCode::Pcr9Mismatch},
        {"another signer", [](ReferenceDocument& r) { r.uki_signer_certificate[31] ^= 1; }, CheckCode::SignerMismatch},
    };
    // PCR 9's reason names the measurement that differs.
    ReferenceDocument other_cmdline = reference;
    other_cmdline.slots[0].pcr9[0] ^= 1;
    other_cmdline.slots[0].cmdline_event[0] ^= 1;
    const AttestationStatus cmdline = verify_evidence(ev, other_cmdline, policy);
    EXPECT_NE(cmdline.errorMessage.find("(the kernel command line differs)"), std::string::npos) << cmdline.errorMessage;
    EXPECT_EQ(cmdline.errorMessage.find("initrd differs"), std::string::npos) << cmdline.errorMessage;
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        ReferenceDocument r = reference;
        c.change(r);
        const AttestationStatus st = verify_evidence(ev, r, policy);
        EXPECT_EQ(st.healthStatus, Health::Unhealthy);
        EXPECT_TRUE(st.failed_check(c.code)) << st.errorMessage;
        EXPECT_NE(st.errorMessage.find("boot integrity"), std::string::npos);
        EXPECT_EQ(st.bootIntegrityValidated, Validity::Invalid);
        EXPECT_EQ(st.attestationCertValidated, Validity::Valid);
        EXPECT_EQ(st.attestSecureBootEnabled, SecureBootState::Enabled);
    }
}

// Quote failures: the AK, nonce, selection, signature, clock; the log is then not trusted.
TEST_F(VerifyTest, BadQuotesAreUnhealthy) {
    const Evidence ev = device(recorded_log("sb-on"));
    ASSERT_EQ(verify_evidence(ev, reference, policy).healthStatus, Health::Healthy);
    auto check = [&](const Evidence& e, const Policy& p, CheckCode code) {
        const AttestationStatus st = verify_evidence(e, reference, p);
        EXPECT_EQ(st.healthStatus, Health::Unhealthy);
        EXPECT_TRUE(st.failed_check(code)) << check_code_name(code) << ": " << st.errorMessage;
        EXPECT_EQ(st.attestationCertValidated, Validity::Invalid);
        EXPECT_EQ(st.attestSecureBootEnabled, SecureBootState::Unknown);
        return st;
    };
    Policy other_nonce = policy;
    other_nonce.nonce = "another nonce";
    check(ev, other_nonce, CheckCode::QuoteNonceMismatch);
    Policy more = policy;
    more.pcrs.push_back(12);
    const AttestationStatus st = check(ev, more, CheckCode::QuoteSelectionMismatch);
    EXPECT_NE(st.errorMessage.find("not sha256:0,1,2,3,4,5,6,7,9,11,12"), std::string::npos);
    Evidence flipped = ev;
    flipped.signature[flipped.signature.size() - 3] ^= 1;
    check(flipped, policy, CheckCode::QuoteSignatureInvalid);
    Evidence ek = ev;
    ek.ak_public = cairn::read_file(path("ek.pub"));
    check(ek, policy, CheckCode::AkInvalid);
    Evidence garbage = ev;
    garbage.quote = "garbage";
    check(garbage, policy, CheckCode::QuoteMalformed);
    Policy not_activated = policy;
    not_activated.ak_activated = false;
    check(ev, not_activated, CheckCode::AkNotActivated);
    Policy later = policy;
    const Quote q = parse_attest(ev.quote, "quote");
    later.last_clock = QuoteClock{q.clock + 1000, q.reset_count, q.restart_count};
    check(ev, later, CheckCode::QuoteClockBackwards);
    Policy activated = policy;
    activated.ak_activated = true;
    activated.last_clock = QuoteClock{q.clock - 1, q.reset_count, q.restart_count};
    EXPECT_EQ(verify_evidence(ev, reference, activated).healthStatus, Health::Healthy);
}

// A log that is not the one the TPM measured: the quote's pcrDigest tells.
TEST_F(VerifyTest, LogThatDoesNotReplayToTheQuoteIsUnhealthy) {
    Evidence ev = device(recorded_log("sb-on"));
    ev.event_log = recorded_log("sb-off");  // a log that claims a boot this TPM did not see
    const AttestationStatus st = verify_evidence(ev, reference, policy);
    EXPECT_EQ(st.healthStatus, Health::Unhealthy);
    EXPECT_TRUE(st.failed_check(CheckCode::PcrDigestMismatch));
    EXPECT_EQ(st.attestSecureBootEnabled, SecureBootState::Unknown);
    EXPECT_EQ(st.bootIntegrityValidated, Validity::Invalid);
    EXPECT_EQ(st.attestationCertValidated, Validity::Valid);
    ev.event_log = "not a log";
    const AttestationStatus bad = verify_evidence(ev, reference, policy);
    EXPECT_EQ(codes(bad), std::vector<CheckCode>{CheckCode::EventLogMalformed});
    EXPECT_EQ(bad.bootIntegrityValidated, Validity::Invalid);
    EXPECT_EQ(bad.attestSecureBootEnabled, SecureBootState::Unknown);
}

// A log whose SecureBoot event data was changed after measuring (digests left as they were): the
// replay still matches the TPM, but the data is not what was measured.
TEST_F(VerifyTest, ForgedSecureBootDataIsNotBelieved) {
    std::string log = recorded_log("sb-off");
    const std::string name = std::string("S\0e\0c\0u\0r\0e\0B\0o\0o\0t\0", 20);
    const size_t at = log.find(name) + name.size();
    ASSERT_EQ(log[at], '\0');
    Evidence ev = device(log);
    ev.event_log[at] = '\x01';
    const AttestationStatus st = verify_evidence(ev, reference, policy);
    EXPECT_EQ(st.healthStatus, Health::Unhealthy);
    EXPECT_TRUE(st.failed_check(CheckCode::EventDigestMismatch)) << st.errorMessage;
    EXPECT_NE(st.attestSecureBootEnabled, SecureBootState::Enabled);
    EXPECT_EQ(st.bootIntegrityValidated, Validity::Invalid);
}

// PCR 11 extended after the stub by userspace (systemd-pcrphase: "sysinit", "ready"), outside the
// firmware log: accepted when the reference lists the value, refused otherwise.
TEST_F(VerifyTest, Pcr11ExtendedByUserspace) {
    Evidence ev;
    ev.ak_public = make_ak("ecc");
    extend_log(recorded_log("sb-on"));
    for (const char* phase : {"sysinit", "ready"}) {
        const auto d = cairn::sha256(phase);
        extend(11, std::string(reinterpret_cast<const char*>(d.data()), 32));
    }
    const Quoted q = quote(nonce, policy_list);
    ev.quote = q.attest;
    ev.signature = q.signature;
    ev.event_log = recorded_log("sb-on");
    const AttestationStatus st = verify_evidence(ev, reference, policy);
    EXPECT_EQ(st.healthStatus, Health::Healthy) << st.errorMessage;
    ReferenceDocument stub_only = reference;
    stub_only.slots[0].pcr11.resize(1);
    const AttestationStatus no = verify_evidence(ev, stub_only, policy);
    EXPECT_EQ(no.healthStatus, Health::Unhealthy);
    EXPECT_TRUE(no.failed_check(CheckCode::PcrDigestMismatch));
}

// Measurements the reference does not allow, measured for real (the log and the TPM agree).
TEST_F(VerifyTest, CredentialsOrCommandLineInPcr12AreUnhealthy) {
    Policy with_12 = policy;
    with_12.pcrs = {0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13};
    const std::string log = append_event(recorded_log("sb-on"), 12, event_type::ipl, "cmdline", "cmdline");
    const AttestationStatus st = verify_evidence(device(log, "ecc", "0,1,2,3,4,5,6,7,9,11,12,13"), reference, with_12);
    EXPECT_EQ(codes(st), std::vector<CheckCode>{CheckCode::PcrNotZero}) << st.errorMessage;
    EXPECT_NE(st.errorMessage.find("PCR 12"), std::string::npos);
    EXPECT_EQ(st.bootIntegrityValidated, Validity::Invalid);
}

// An EFI application started after the UKI (measured for real): not a slot's UKI.
TEST_F(VerifyTest, ForeignApplicationInPcr4IsUnhealthy) {
    const std::string image(32, '\0');  // UEFI_IMAGE_LOAD_EVENT with an empty device path
    const std::string log = append_event(recorded_log("sb-on"), 4, event_type::efi_boot_services_application, image, "another application");
    const AttestationStatus st = verify_evidence(device(log), reference, policy);
    EXPECT_EQ(codes(st), std::vector<CheckCode>{CheckCode::UkiMismatch}) << st.errorMessage;
    EXPECT_NE(st.errorMessage.find("boot integrity: PCR 4: the EFI application at offset 15271"), std::string::npos) << st.errorMessage;
    EXPECT_EQ(st.healthStatus, Health::Unhealthy);
}

TEST_F(VerifyTest, FirmwareMeasurementAfterItsSeparatorIsUnhealthy) {
    const std::string log = append_event(recorded_log("sb-on"), 0, event_type::post_code, "late", "late");
    const AttestationStatus st = verify_evidence(device(log), reference, policy);
    EXPECT_EQ(codes(st), std::vector<CheckCode>{CheckCode::FirmwareEventUnexpected}) << st.errorMessage;
    EXPECT_NE(st.errorMessage.find("EV_POST_CODE"), std::string::npos);
    EXPECT_NE(st.errorMessage.find("after its separator"), std::string::npos);
    // In PCR 2 too (judged from the log alone here: the quote is missing, so it is Unhealthy anyway).
    const std::string odd = append_event(recorded_log("sb-on"), 2, event_type::efi_variable_boot, "x", "x");
    const AttestationStatus unquoted = verify_evidence({"", "", "", odd}, reference, policy);
    EXPECT_NE(unquoted.errorMessage.find("PCR 2: EV_EFI_VARIABLE_BOOT at offset 15271 after its separator"), std::string::npos) << unquoted.errorMessage;
    EXPECT_EQ(unquoted.healthStatus, Health::Unhealthy);
    // An event type firmware code is not measured with, before PCR 0's separator.
    const std::string sb_on = recorded_log("sb-on");
    const size_t first = parse_event_log(sb_on, "log").events[0].offset;
    const std::string early = append_event(sb_on.substr(0, first), 0, event_type::efi_action, "hello", "hello") + sb_on.substr(first);
    const AttestationStatus st2 = verify_evidence({"", "", "", early}, reference, policy);
    EXPECT_NE(st2.errorMessage.find("PCR 0: unexpected EV_EFI_ACTION at offset " + std::to_string(first)), std::string::npos) << st2.errorMessage;
}

TEST(CheckCodes, NamesRoundTrip) {
    for (CheckCode c : {CheckCode::AkInvalid, CheckCode::QuoteNonceMismatch, CheckCode::PcrDigestMismatch, CheckCode::SecureBootDisabled, CheckCode::UkiMismatch,
                        CheckCode::FirmwareEventUnexpected})
        EXPECT_EQ(parse_check_code(check_code_name(c)), c);
    EXPECT_STREQ(check_code_name(CheckCode::Pcr11Mismatch), "pcr11-mismatch");
    expect_error([] { parse_check_code("nonsense"); }, {"nonsense"});
    EXPECT_STREQ(health_name(Health::Healthy), "Healthy");
    EXPECT_STREQ(validity_name(Validity::Unknown), "Unknown");
    EXPECT_STREQ(secure_boot_state_name(SecureBootState::Disabled), "Disabled");
}
