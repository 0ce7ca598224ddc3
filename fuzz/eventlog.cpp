// A TPM event log (binary_bios_measurements) as a device sends it to the verifier: parsed,
// replayed in every bank, its events read as the verifier reads them, and judged against a
// fixed reference (the verifier's log checks; the quote is missing, so it is never healthy).
#include "attestation/eventlog.hpp"
#include "attestation/verify.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::attestation;
    const std::string bytes(cairn::fuzz::text(data, size));
    cairn::fuzz::expect_only_errors([&] {
        const EventLog log = parse_event_log(bytes, "log");
        for (const auto& bank : log.spec.algorithms) {
            const uint16_t alg = bank.first;
            cairn::fuzz::expect_only_errors([&] { (void)replay(log, alg); });
            cairn::fuzz::expect_only_errors([&] { (void)event_digest_mismatches(log, alg); });
        }
        for (const auto& e : log.events) {
            (void)event_text(e);
            cairn::fuzz::expect_only_errors([&] { (void)parse_signature_data(parse_uefi_variable(e), e.offset); });
            cairn::fuzz::expect_only_errors([&] { (void)is_stub_kernel_load(parse_image_load(e)); });
            cairn::fuzz::expect_only_errors([&] { (void)parse_tagged_event(e); });
        }
    });
    ReferenceDocument reference;
    reference.slots.push_back(SlotReference{"a", "6.1", {}, {Sha256{}}, {}, {}, {}});
    Evidence evidence;
    evidence.event_log = bytes;
    const AttestationStatus status = verify_evidence(evidence, reference, Policy{});
    if (status.healthStatus == Health::Healthy) __builtin_trap();  // no quote: never healthy
    return 0;
}
