#include "attestation/eventlog.hpp"

#include <gtest/gtest.h>

#include <regex>

#include "tests/attestation/attestation_fixture.hpp"

using namespace cairn::attestation;
using cairn::test::expect_error;
using cairn::test::hex_bytes;
using cairn::test::hex_of;
using cairn::test::recorded_log;
using cairn::test::recorded_pcrs;

namespace {

std::string le(uint64_t v, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += char((v >> (8 * i)) & 0xff);
    return s;
}

// A crypto-agile log made by hand: the Spec ID event, then events with their digests.
struct LogBuilder {
    std::vector<std::pair<uint16_t, uint16_t>> algs;
    std::string bytes;

    explicit LogBuilder(std::vector<std::pair<uint16_t, uint16_t>> a, uint32_t count_override = 0) : algs(std::move(a)) {
        std::string spec = std::string("Spec ID Event03\0", 16) + le(0, 4) + std::string("\x00\x02\x00\x02", 4) + le(count_override ? count_override : algs.size(), 4);
        for (auto [alg, size] : algs) spec += le(alg, 2) + le(size, 2);
        spec += '\0';
        bytes = le(0, 4) + le(event_type::no_action, 4) + std::string(20, '\0') + le(spec.size(), 4) + spec;
    }
    // An event whose digests are H(data) in every bank.
    LogBuilder& event(uint32_t pcr, uint32_t type, const std::string& data) { return event(pcr, type, data, data); }
    // An event whose digests are H(measured) (e.g. EV_EFI_VARIABLE_BOOT: VariableData only).
    LogBuilder& event(uint32_t pcr, uint32_t type, const std::string& data, const std::string& measured) {
        bytes += le(pcr, 4) + le(type, 4) + le(algs.size(), 4);
        for (auto [alg, size] : algs) bytes += le(alg, 2) + (type == event_type::no_action ? std::string(size, '\0') : hash(alg, measured));
        bytes += le(data.size(), 4) + data;
        return *this;
    }
};

std::string utf16(const std::string& ascii) {
    std::string s;
    for (char c : ascii) s += std::string{c, '\0'};
    return s;
}

std::string uefi_variable(const Guid& guid, const std::string& name, const std::string& data) {
    return std::string(reinterpret_cast<const char*>(guid.data()), 16) + le(name.size(), 8) + le(data.size(), 8) + utf16(name) + data;
}

}  // namespace

// The recorded logs replay to the PCR values the booted TPM held, in every PCR the firmware log
// covers (PCR 10 is IMA's, not in this log; 17-22 are locality PCRs the firmware leaves at ff).
TEST(EventLog, RecordedLogsReplayToTheBootedPcrs) {
    for (const std::string boot : {"sb-on", "sb-off"}) {
        SCOPED_TRACE(boot);
        const EventLog log = parse_event_log(recorded_log(boot), boot);
        EXPECT_EQ(log.spec.version_major, 2);
        EXPECT_EQ(log.spec.uintn_size, 2);
        ASSERT_EQ(log.spec.algorithms.size(), 4u);  // swtpm without swtpm_setup: four banks
        EXPECT_EQ(log.spec.algorithms[1], std::make_pair(alg_sha256, uint16_t(32)));
        EXPECT_GT(log.events.size(), 30u);
        const auto replayed = replay(log, alg_sha256);
        const auto pcrs = recorded_pcrs(boot);
        for (unsigned p : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 23}) EXPECT_EQ(hex_of(replayed[p]), hex_of(pcrs.at(p))) << "PCR " << p;
        EXPECT_NE(hex_of(replayed[10]), hex_of(pcrs.at(10)));  // IMA measured modules outside this log
        EXPECT_TRUE(event_digest_mismatches(log, alg_sha256).empty());
        for (uint16_t alg : {alg_sha1, alg_sha384, alg_sha512}) {
            EXPECT_EQ(replay(log, alg)[0].size(), digest_size(alg));
            EXPECT_TRUE(event_digest_mismatches(log, alg).empty());
        }
    }
}

// tpm2_eventlog (tpm2-tools) parses the same logs; its replayed PCRs, every bank, equal ours.
TEST(EventLog, Tpm2EventlogReplaysTheSame) {
    for (const std::string boot : {"sb-on", "sb-off"}) {
        SCOPED_TRACE(boot);
        const auto result = cairn::run({"tpm2_eventlog", (cairn::test::attestation_data() / boot / "eventlog.bin").string()});
        ASSERT_EQ(result.exit_code, 0) << result.err;
        const EventLog log = parse_event_log(recorded_log(boot), boot);
        // "pcrs:" then "  sha256:" then "    N  : 0x<hex>" lines per bank.
        const std::string text = result.out.substr(result.out.find("\npcrs:"));
        std::map<std::string, std::map<unsigned, std::string>> theirs;
        std::string bank;
        std::istringstream in(text);
        std::string line;
        const std::regex bank_line(R"(^  (sha1|sha256|sha384|sha512):\s*$)"), pcr_line(R"(^\s+(\d+)\s*: 0x([0-9a-fA-F]+)\s*$)");
        std::smatch m;
        while (std::getline(in, line)) {
            if (std::regex_match(line, m, bank_line))
                bank = m[1];
            else if (std::regex_match(line, m, pcr_line))
                theirs[bank][unsigned(std::stoul(m[1]))] = m[2];
        }
        ASSERT_EQ(theirs.size(), 4u);
        for (const auto& [alg, name] : std::vector<std::pair<uint16_t, std::string>>{{alg_sha1, "sha1"}, {alg_sha256, "sha256"}, {alg_sha384, "sha384"}, {alg_sha512, "sha512"}}) {
            const auto ours = replay(log, alg);
            ASSERT_GE(theirs[name].size(), 10u) << name;
            for (const auto& [pcr, value] : theirs[name]) {
                std::string lower = value;
                for (auto& c : lower) c = char(std::tolower(c));
                EXPECT_EQ(hex_of(ours[pcr]), lower) << name << " PCR " << pcr;
            }
            // PCRs tpm2_eventlog leaves out are the ones no event extended.
            for (unsigned p = 0; p <= max_pcr; ++p)
                if (!theirs[name].count(p)) {
                    EXPECT_EQ(ours[p], std::string(digest_size(alg), '\0')) << name << " PCR " << p;
                }
        }
    }
}

// The events the verifier judges, typed, from the real logs.
TEST(EventLog, TypedEventsOfARealBoot) {
    const auto facts = cairn::test::uki_facts();
    for (const std::string boot : {"sb-on", "sb-off"}) {
        SCOPED_TRACE(boot);
        const EventLog log = parse_event_log(recorded_log(boot), boot);
        std::vector<std::string> pcr7_names, pcr11_texts, pcr4_apps, pcr4_actions;
        std::vector<uint32_t> pcr9_tags;
        std::vector<std::string> authorities;
        size_t separators = 0;
        for (const auto& e : log.events) {
            if (e.type == event_type::separator) {
                ++separators;
                EXPECT_EQ(e.data, std::string(4, '\0'));
            }
            if (e.pcr == 7 && e.type == event_type::efi_variable_driver_config) {
                const UefiVariable v = parse_uefi_variable(e);
                pcr7_names.push_back(v.name);
                if (v.name == "SecureBoot") {
                    EXPECT_EQ(v.vendor, efi_global_variable_guid);
                    EXPECT_EQ(guid_text(v.vendor), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
                    EXPECT_EQ(v.data, boot == "sb-on" ? "\x01" : std::string(1, '\0'));
                }
                if (v.name == "db") {
                    EXPECT_EQ(guid_text(v.vendor), "d719b2cb-3d3a-4596-a3bc-dad00e67656f");
                }
            }
            if (e.pcr == 7 && e.type == event_type::efi_variable_authority) {
                const SignatureData s = parse_signature_data(parse_uefi_variable(e), e.offset);
                authorities.push_back(cairn::test::hex_of(std::string_view(reinterpret_cast<const char*>(cairn::sha256(s.certificate).data()), 32)));
            }
            if (e.pcr == 4 && e.type == event_type::efi_boot_services_application) {
                const ImageLoad image = parse_image_load(e);
                EXPECT_GT(image.length, 0u);
                pcr4_apps.push_back(hex_of(*e.digest(alg_sha256)) + (is_stub_kernel_load(image) ? " stub-kernel" : ""));
            }
            if (e.pcr == 4 && e.type == event_type::efi_action) pcr4_actions.push_back(event_text(e));
            if (e.pcr == 11 && e.type == event_type::ipl) pcr11_texts.push_back(event_text(e));
            if (e.pcr == 9 && e.type == event_type::event_tag) pcr9_tags.push_back(parse_tagged_event(e).id);
        }
        EXPECT_EQ(pcr7_names, (std::vector<std::string>{"SecureBoot", "PK", "KEK", "db", "dbx"}));
        // The UKI is the first application; with Secure Boot off the stub's kernel follows it.
        ASSERT_FALSE(pcr4_apps.empty());
        EXPECT_EQ(pcr4_apps[0], facts.at("uki_authenticode"));
        if (boot == "sb-on") {
            EXPECT_EQ(pcr4_apps.size(), 1u);
            EXPECT_EQ(authorities, std::vector<std::string>{facts.at("signer_certificate_sha256")});
        } else {
            ASSERT_EQ(pcr4_apps.size(), 2u);
            EXPECT_NE(pcr4_apps[1].find(" stub-kernel"), std::string::npos);
            EXPECT_TRUE(authorities.empty());
        }
        ASSERT_FALSE(pcr4_actions.empty());
        EXPECT_EQ(pcr4_actions[0], "Calling EFI Application from Boot Option");
        // systemd-stub: name + content per section, in its fixed order.
        EXPECT_EQ(pcr11_texts, (std::vector<std::string>{".linux", ".linux", ".osrel", ".osrel", ".cmdline", ".cmdline", ".initrd", ".initrd"}));
        EXPECT_EQ(pcr9_tags, (std::vector<uint32_t>{linux_tag_load_options, linux_tag_initrd}));
        EXPECT_GE(separators, 8u);
    }
}

// Every bank, any number of them, replays by its own hash; a StartupLocality event seeds PCR 0.
TEST(EventLog, AnyBanksReplayAndStartupLocality) {
    LogBuilder b({{alg_sha1, 20}, {alg_sha256, 32}, {alg_sha384, 48}, {alg_sha512, 64}});
    b.event(0, event_type::no_action, std::string("StartupLocality\0", 16) + "\x03");
    b.event(0, event_type::s_crtm_version, std::string(2, '\0'));
    b.event(0, event_type::separator, std::string(4, '\0'));
    b.event(7, event_type::efi_variable_driver_config, uefi_variable(efi_global_variable_guid, "SecureBoot", "\x01"));
    const EventLog log = parse_event_log(b.bytes, "log");
    EXPECT_EQ(log.startup_locality, 3);
    ASSERT_EQ(log.events.size(), 4u);
    for (auto [alg, size] : b.algs) {
        std::string pcr0(size, '\0');
        pcr0.back() = '\x03';
        pcr0 = hash(alg, pcr0 + hash(alg, std::string(2, '\0')));
        pcr0 = hash(alg, pcr0 + hash(alg, std::string(4, '\0')));
        const auto r = replay(log, alg);
        EXPECT_EQ(r[0], pcr0) << alg_name(alg);
        EXPECT_EQ(r[7], hash(alg, std::string(size, '\0') + hash(alg, log.events[3].data)));
        EXPECT_EQ(r[1], std::string(size, '\0'));
    }
    const UefiVariable v = parse_uefi_variable(log.events[3]);
    EXPECT_EQ(v.name, "SecureBoot");
    EXPECT_EQ(v.data, "\x01");
    LogBuilder one({{alg_sha256, 32}});
    one.event(4, event_type::efi_action, "Calling EFI Application from Boot Option");
    const EventLog single = parse_event_log(one.bytes, "log");
    expect_error([&] { replay(single, alg_sha1); }, {"no sha1 bank"});
    EXPECT_EQ(event_text(single.events[0]), "Calling EFI Application from Boot Option");
}

// A log that lies about what it measured: digests not of their data are listed.
TEST(EventLog, DigestsThatAreNotOfTheirDataAreFound) {
    LogBuilder b({{alg_sha256, 32}});
    b.event(7, event_type::efi_variable_driver_config, uefi_variable(efi_global_variable_guid, "SecureBoot", "\x01"));
    b.event(4, event_type::efi_action, "Calling EFI Application from Boot Option");
    b.event(1, event_type::efi_variable_boot, uefi_variable(efi_global_variable_guid, "BootOrder", std::string("\x01\x00", 2)), std::string("\x01\x00", 2));
    EXPECT_TRUE(event_digest_mismatches(parse_event_log(b.bytes, "log"), alg_sha256).empty()) << "BOOT variables hash VariableData only";
    // SecureBoot data flipped to 00 after its digest was written: the data no longer matches.
    std::string forged = b.bytes;
    const size_t at = forged.find(utf16("SecureBoot")) + 20;
    ASSERT_EQ(forged[at], '\x01');
    forged[at] = '\0';
    const auto found = event_digest_mismatches(parse_event_log(forged, "log"), alg_sha256);
    ASSERT_EQ(found.size(), 1u);
    EXPECT_NE(found[0].find("EV_EFI_VARIABLE_DRIVER_CONFIG"), std::string::npos);
}

// Hostile logs: every fault is an Error naming the offset and the fault, never a crash.
TEST(EventLog, BadLogsAreClearErrors) {
    LogBuilder good({{alg_sha1, 20}, {alg_sha256, 32}});
    const size_t header = good.bytes.size();  // a log of no events is a log
    good.event(0, event_type::separator, std::string(4, '\0'));
    const size_t first = good.bytes.size();  // where the next event starts
    good.event(4, event_type::efi_action, "x");

    expect_error([] { parse_event_log("", "the log"); }, {"the log", "offset 0", "truncated"});
    // Not crypto-agile: a SHA-1 log's first event is a real measurement.
    expect_error([&] { parse_event_log(le(0, 4) + le(event_type::s_crtm_version, 4) + std::string(20, 'x') + le(0, 4), "log"); },
                 {"offset 0", "EV_S_CRTM_VERSION", "Spec ID"});
    // Every prefix of a log either parses (a whole number of events) or names what is truncated.
    for (size_t n = 0; n < good.bytes.size(); ++n) {
        try {
            parse_event_log(good.bytes.substr(0, n), "log");
            EXPECT_TRUE(n == header || n == first) << n;
        } catch (const cairn::Error& e) {
            EXPECT_NE(std::string(e.what()).find("log: offset "), std::string::npos) << e.what();
        }
    }
    // An absurd EventSize.
    std::string huge = good.bytes.substr(0, first) + le(4, 4) + le(event_type::efi_action, 4) + le(2, 4) + le(alg_sha1, 2) + std::string(20, 'a') +
                       le(alg_sha256, 2) + std::string(32, 'b') + le(0xffffffff, 4);
    expect_error([&] { parse_event_log(huge, "log"); }, {"offset " + std::to_string(first), "EventSize 4294967295"});
    // Unknown algorithms, sizes that disagree, absurd counts.
    expect_error([] { parse_event_log(LogBuilder({{0x1234, 32}}).bytes, "log"); }, {"offset 0", "unknown digest algorithm 0x1234"});
    expect_error([] { parse_event_log(LogBuilder({{alg_sha256, 20}}).bytes, "log"); }, {"sha256 a digest size of 20, not 32"});
    expect_error([] { parse_event_log(LogBuilder({{alg_sha256, 32}}, 0x7fffffff).bytes, "log"); }, {"2147483647 algorithms"});
    expect_error([] { parse_event_log(LogBuilder({}).bytes, "log"); }, {"0 algorithms"});
    expect_error([] { parse_event_log(LogBuilder({{alg_sha256, 32}, {alg_sha256, 32}}).bytes, "log"); }, {"sha256 twice"});
    // An event with another digest count, an algorithm the header does not list, a PCR out of range.
    const std::string spec = LogBuilder({{alg_sha256, 32}}).bytes;
    expect_error([&] { parse_event_log(spec + le(0, 4) + le(4, 4) + le(1000000, 4), "log"); },
                 {"offset " + std::to_string(spec.size()), "1000000 digests, but the Spec ID event lists 1"});
    expect_error([&] { parse_event_log(spec + le(0, 4) + le(4, 4) + le(1, 4) + le(alg_sha1, 2) + std::string(32, 'x') + le(0, 4), "log"); },
                 {"algorithm sha1, which the Spec ID event does not list"});
    expect_error([&] { parse_event_log(spec + le(99, 4) + le(4, 4) + le(1, 4), "log"); }, {"PCR index 99"});
    // Too big as a whole.
    expect_error([] { parse_event_log(std::string(max_log_size + 1, '\0'), "log"); }, {"more than an event log may have"});
}

TEST(EventLog, BadEventDataIsAClearError) {
    Event e;
    e.offset = 1234;
    e.type = event_type::efi_variable_driver_config;
    e.data = uefi_variable(efi_global_variable_guid, "SecureBoot", "\x01");
    e.data[16] = '\xff';  // UnicodeNameLength low byte: 255 characters
    expect_error([&] { parse_uefi_variable(e); }, {"event at offset 1234", "UnicodeNameLength 255"});
    e.data = uefi_variable(efi_global_variable_guid, "SecureBoot", "\x01") + "extra";
    expect_error([&] { parse_uefi_variable(e); }, {"VariableDataLength 1 but 6 bytes"});
    e.data = std::string(16, '\0') + le(0xffffffffffffffffull, 8) + le(0, 8);
    expect_error([&] { parse_uefi_variable(e); }, {"UnicodeNameLength 18446744073709551615"});
    e.data = "short";
    expect_error([&] { parse_uefi_variable(e); }, {"truncated"});
    expect_error([&] { parse_image_load(e); }, {"UEFI_IMAGE_LOAD_EVENT", "truncated"});
    e.data = le(0, 8) + le(0, 8) + le(0, 8) + le(1u << 31, 8);
    expect_error([&] { parse_image_load(e); }, {"LengthOfDevicePath 2147483648 but 0 bytes"});
    e.data = le(linux_tag_initrd, 4) + le(100, 4) + "abc";
    expect_error([&] { parse_tagged_event(e); }, {"taggedEventDataSize 100 but 3 bytes"});
    expect_error([&] { parse_signature_data(UefiVariable{{}, "db", "tiny"}, 99); }, {"offset 99", "too short"});
}
