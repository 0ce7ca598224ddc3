#include "updater/engine.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <csignal>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/engine_rig.hpp"
#include "tests/support/update_fixture.hpp"
#include "imager/verity.hpp"
#include "updater/fake_boot_control.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;
namespace fs = std::filesystem;


TEST(Engine, InstallsIntoTheOtherSlotArmsATrialAndCommitsIt) {
    Rig r;
    r.engine().on_boot();
    EXPECT_EQ(r.boot.order(), std::vector<Slot>{Slot::a});  // a fresh NVRAM: the booted slot is adopted
    fs::path bundle = r.fixture.bundle("2.0");
    const std::string slot_a = r.fixture.region("root_a");
    std::vector<int> percents;
    r.engine().install(bundle, {}, [&](int p, const std::string&) { percents.push_back(p); });
    EXPECT_EQ(percents.back(), 100);
    EXPECT_TRUE(std::is_sorted(percents.begin(), percents.end()));
    const std::string root = payload(r.scratch.path(), "2.0", "root");
    EXPECT_EQ(r.fixture.region("root_b", root.size()), root);
    const std::string esp = payload(r.scratch.path(), "2.0", "esp-b");
    EXPECT_EQ(r.fixture.region("esp_b", esp.size()), esp);
    const std::string tree = payload(r.scratch.path(), "2.0", "verity-b");
    EXPECT_EQ(r.fixture.region("root_b_verity", tree.size()), tree);
    EXPECT_EQ(r.fixture.region("root_a"), slot_a);  // the running slot is never written
    EXPECT_EQ(r.boot.next(), Slot::b);
    EXPECT_EQ(r.boot.order(), std::vector<Slot>{Slot::a});
    UpdateStatus st = r.engine().status();
    ASSERT_TRUE(st.pending);
    EXPECT_EQ(st.pending->phase, PendingPhase::armed);
    EXPECT_EQ(st.slots["b"].state, SlotState::trial);

    BootDecision d = r.reboot_into("2.0");
    EXPECT_EQ(d.kind, BootDecision::Kind::trial);
    EXPECT_EQ(r.boot.booted(), Slot::b);
    r.engine().commit();
    EXPECT_EQ(r.boot.order(), (std::vector<Slot>{Slot::b, Slot::a}));
    st = r.engine().status();
    EXPECT_FALSE(st.pending);
    EXPECT_EQ(st.slots["b"].state, SlotState::good);
    EXPECT_EQ(st.last->kind, EventKind::committed);
    EXPECT_EQ(r.reboot_into("2.0").kind, BootDecision::Kind::normal);
    EXPECT_EQ(r.boot.booted(), Slot::b);

    // And back the other way: B -> A.
    r.engine().install(r.fixture.bundle("3.0"), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::a);
    EXPECT_EQ(r.reboot_into("3.0").kind, BootDecision::Kind::trial);
    r.engine().commit();
    EXPECT_EQ(r.boot.order(), (std::vector<Slot>{Slot::a, Slot::b}));
}

// `cairn build` writes both slots from the same root filesystem: on a disk's first boot (a fresh
// NVRAM and no record yet) the other slot holds the running release too, and says so.
TEST(Engine, AFreshDisksOtherSlotHoldsTheFactoryRelease) {
    Rig r;
    r.config.release.build_id = "factory-build";
    r.engine().on_boot();
    UpdateStatus st = r.engine().status();
    EXPECT_EQ(st.slots["a"].version, "1.0");
    EXPECT_EQ(st.slots["b"].state, SlotState::good);
    EXPECT_EQ(st.slots["b"].version, "1.0");
    EXPECT_EQ(st.slots["b"].build_id, "factory-build");
    EXPECT_EQ(r.boot.order(), std::vector<Slot>{Slot::a});  // the boot order is not changed for it

    // Not on a later boot that finds a fresh NVRAM: after an update, B may hold anything.
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    r.reboot_into("2.0");
    r.engine().commit();
    r.boot = FakeBootControl{};  // the NVRAM is cleared: the firmware boots A's removable path again
    r.new_boot();
    r.config.release.version = "1.0";
    r.engine().on_boot();
    st = r.engine().status();
    EXPECT_EQ(st.slots["b"].version, "2.0");
}

TEST(Engine, RefusesBadBundlesBeforeWritingAnything) {
    Rig r;
    r.engine().on_boot();
    const std::string before = r.slot_b();
    const int writes = r.boot.writes;
    const std::string status = read_file(r.config.state_file);
    auto flipped = [&](const std::string& version, auto offset_of) {
        fs::path b = r.fixture.bundle(version);
        uint64_t at;
        {
            BundleReader reader(b, r.fixture.trust_anchor);
            at = offset_of(reader.manifest());
        }
        UniqueFd fd = open_file(b, O_RDWR);
        char c;
        pread_exact(fd.get(), &c, 1, at, b.string());
        c ^= 0x40;
        pwrite_exact(fd.get(), &c, 1, at, b.string());
        return b;
    };
    struct Case {
        fs::path bundle;
        ErrorCode code;
    };
    std::vector<Case> cases = {
        {flipped("2.1", [](const BundleManifest& m) { return m.find("root", "")->offset + 777; }), ErrorCode::bad_payload},
        {flipped("2.2", [](const BundleManifest& m) { return m.find("esp", "b")->offset + m.find("esp", "b")->size - 1; }), ErrorCode::bad_payload},
        {flipped("2.3", [](const BundleManifest&) { return bundle_header_size + 40; }), ErrorCode::bad_signature},
        {r.fixture.bundle("2.4", "cairn-other"), ErrorCode::incompatible},
        {r.fixture.bundle("0.9"), ErrorCode::downgrade},
        // A release candidate of the running release is older than it.
        {r.fixture.bundle("1.0-rc1"), ErrorCode::downgrade},
        {r.fixture.bundle("1.0~rc2"), ErrorCode::downgrade},
        {r.fixture.bundle("2.5", "cairn-test", {}, 16 << 20), ErrorCode::no_space},
    };
    for (const Case& c : cases) {
        expect_code([&] { r.engine().install(c.bundle, {}, {}); }, c.code);
        EXPECT_EQ(r.slot_b(), before) << c.bundle;
        EXPECT_EQ(r.boot.writes, writes) << c.bundle;
        EXPECT_EQ(read_file(r.config.state_file), status) << c.bundle;
    }
    // A bundle signed by a key the device does not trust.
    r.config.trust_anchor = source_dir() / "recipes/keys/update-signer.pem";
    expect_code([&] { r.engine().install(r.fixture.bundle("2.6"), {}, {}); }, ErrorCode::bad_signature);
    EXPECT_EQ(r.slot_b(), before);
    // A bundle signed by a TLS server certificate issued by the update CA.
    r.config.trust_anchor = r.fixture.trust_anchor;
    make_signer(r.scratch.path(), "updates.example", r.fixture.trust_anchor, source_dir() / "recipes/keys/update-ca.key",
                "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n");
    const fs::path cert = r.fixture.cert, key = r.fixture.key;
    r.fixture.cert = r.scratch / "updates.example.pem";
    r.fixture.key = r.scratch / "updates.example.key";
    expect_code([&] { r.engine().install(r.fixture.bundle("2.7"), {}, {}); }, ErrorCode::bad_signature);
    EXPECT_EQ(r.slot_b(), before);
    EXPECT_EQ(r.boot.writes, writes);
    r.fixture.cert = cert;
    r.fixture.key = key;
    // A downgrade goes in when forced.
    InstallOptions force;
    force.force = true;
    r.engine().install(r.fixture.bundle("0.9"), force, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
}

// The bundle changes between the check and the write (or the disk stores something else): the
// read-back, which follows the writer, finds it; the slot is left marked bad and not armed, and a
// later install of a good bundle goes in.
TEST(Engine, WhatReadsBackWrongIsNeverArmed) {
    Rig r;
    r.engine().on_boot();
    struct Case {
        std::string version, payload;
        uint64_t at;
    };
    for (const Case& c : {Case{"2.1", "root", 5000}, Case{"2.2", "root-verity", 4096 + 7}, Case{"2.3", "esp", 100}}) {
        fs::path bundle = r.fixture.bundle(c.version);
        uint64_t at;
        {
            BundleReader reader(bundle, r.fixture.trust_anchor);
            at = reader.manifest().find(c.payload, "b")->offset + c.at;
        }
        bool flipped = false;
        expect_code(
            [&] {
                r.engine().install(bundle, {}, [&](int, const std::string& message) {
                    if (flipped || message.rfind("mark-bad:", 0) != 0) return;
                    UniqueFd fd = open_file(bundle, O_RDWR);
                    char byte;
                    pread_exact(fd.get(), &byte, 1, at, bundle.string());
                    byte ^= 0x01;
                    pwrite_exact(fd.get(), &byte, 1, at, bundle.string());
                    flipped = true;
                });
            },
            ErrorCode::verify_failed);
        EXPECT_TRUE(flipped) << c.payload;
        EXPECT_FALSE(r.boot.next()) << c.payload;
        EXPECT_EQ(r.boot.order(), std::vector<Slot>{Slot::a}) << c.payload;
        UpdateStatus st = r.engine().status();
        EXPECT_EQ(st.slots["b"].state, SlotState::installing) << c.payload;
        EXPECT_FALSE(st.pending) << c.payload;
        // The failure is on record beside its reason.
        ASSERT_TRUE(st.last) << c.payload;
        EXPECT_EQ(st.last->kind, EventKind::failed) << c.payload;
        EXPECT_EQ(st.last->code, ErrorCode::verify_failed) << c.payload;
        EXPECT_NE(st.last->reason.find("read back"), std::string::npos) << st.last->reason;
    }
    r.engine().install(r.fixture.bundle("2.4"), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
    EXPECT_EQ(r.reboot_into("2.4").kind, BootDecision::Kind::trial);
}

// A root of several chunks goes through both write lanes (two chunks in flight) and reads back
// right; a bundle cut short after its check stops both lanes with the reading error, and the slot
// is left marked bad and not armed.
TEST(Engine, ARootOfSeveralChunksGoesInAndOneCutShortIsNeverArmed) {
    Rig r;
    r.engine().on_boot();
    const uint64_t root_size = 7 * (1 << 20) + 3 * 4096;  // two 4 MiB chunks, the second short
    r.engine().install(r.fixture.bundle("3.0", "cairn-test", {}, root_size), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
    std::string root = r.fixture.region("root_b").substr(0, root_size);
    EXPECT_EQ(root, read_file(r.scratch / "payloads-3.0/root"));
    EXPECT_EQ(r.reboot_into("3.0").kind, BootDecision::Kind::trial);
    r.engine().commit();

    // Now running b: the next install goes to a.
    const fs::path bundle = r.fixture.bundle("3.1", "cairn-test", {}, root_size);
    uint64_t cut;
    {
        BundleReader reader(bundle, r.fixture.trust_anchor);
        cut = reader.manifest().find("root", "a")->offset + 5 * (1 << 20);  // inside the second chunk
    }
    std::vector<uint64_t> written;
    expect_code(
        [&] {
            r.engine().install(bundle, {}, [&](int percent, const std::string& message) {
                if (message.rfind("mark-bad:", 0) == 0) fs::resize_file(bundle, cut);
                if (message.rfind("write: root_a", 0) == 0) written.push_back(static_cast<uint64_t>(percent));
            });
        },
        ErrorCode::bad_bundle, {"reading the bundle", "unexpected end of file"});
    EXPECT_FALSE(r.boot.next());
    EXPECT_EQ(r.engine().status().slots["a"].state, SlotState::installing);
    EXPECT_TRUE(std::is_sorted(written.begin(), written.end()));  // progress only moves forward

    r.engine().install(r.fixture.bundle("3.2", "cairn-test", {}, root_size), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::a);
}

TEST(Engine, ASlotThatDoesNotBootIsRolledBackWithItsReason) {
    Rig r;
    r.engine().on_boot();
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    r.boot.broken.insert(Slot::b);  // e.g. cairn-init refuses its root
    BootDecision d = r.reboot_into("1.0", "slot b: root hash mismatch");
    EXPECT_EQ(r.boot.booted(), Slot::a);
    EXPECT_EQ(d.kind, BootDecision::Kind::rolled_back);
    EXPECT_EQ(d.reason, "slot b: root hash mismatch");
    UpdateStatus st = r.engine().status();
    EXPECT_EQ(st.slots["b"].state, SlotState::bad);
    EXPECT_EQ(st.last->kind, EventKind::rolled_back);
    EXPECT_EQ(st.last->code, ErrorCode::boot_failed);
    EXPECT_FALSE(st.pending);
    // Without a reason left behind, the report says what is known.
    r.boot.broken.clear();
    r.engine().install(r.fixture.bundle("2.1"), {}, {});
    r.boot.broken.insert(Slot::b);
    d = r.reboot_into("1.0");
    EXPECT_EQ(d.kind, BootDecision::Kind::rolled_back);
    EXPECT_NE(d.reason.find("did not come up healthy"), std::string::npos);
}

TEST(Engine, AFailedHealthCheckFallsBackToTheOldSlot) {
    Rig r;
    r.engine().on_boot();
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    ASSERT_EQ(r.reboot_into("2.0").kind, BootDecision::Kind::trial);
    r.engine().fail_trial("device service(s) exited: 50-broken");
    EXPECT_EQ(r.reboot_into("1.0").kind, BootDecision::Kind::normal);
    EXPECT_EQ(r.boot.booted(), Slot::a);
    UpdateStatus st = r.engine().status();
    EXPECT_EQ(st.slots["b"].state, SlotState::bad);
    EXPECT_EQ(st.slots["a"].state, SlotState::good);
    EXPECT_EQ(st.last->kind, EventKind::rolled_back);
    EXPECT_EQ(st.last->code, ErrorCode::unhealthy);
    EXPECT_EQ(st.last->reason, "device service(s) exited: 50-broken");
}

TEST(Engine, ARestartedDaemonInTheSameBootIsNoRollback) {
    Rig r;
    r.engine().on_boot();
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    EXPECT_EQ(r.engine().on_boot().kind, BootDecision::Kind::normal);
    EXPECT_TRUE(r.engine().status().pending);
    EXPECT_EQ(r.boot.next(), Slot::b);
}

// A power cut at every variable write of install and commit: the firmware always boots a slot
// that is whole, and a later install succeeds.
TEST(Engine, APowerCutAtAnyBootVariableWriteLeavesAGoodSlotAndARetryWorks) {
    for (int cut = 1; cut <= 8; ++cut) {
        SCOPED_TRACE("power cut at write " + std::to_string(cut));
        Rig r;
        r.engine().on_boot();
        const int base = r.boot.writes;
        r.boot.cut_at_write = base + cut;
        bool cut_happened = false;
        try {
            r.engine().install(r.fixture.bundle("2.0"), {}, {});
            BootDecision d = r.reboot_into(r.boot.next() == Slot::b ? "2.0" : "1.0");
            if (d.kind == BootDecision::Kind::trial) r.engine().commit();
        } catch (const PowerCut&) {
            cut_happened = true;
        }
        r.boot.cut_at_write = 0;
        if (!cut_happened) break;  // past the last write
        // Whatever boots now was completely written: b only after it was read back.
        Slot up = r.boot.reboot();
        r.new_boot();
        if (up == Slot::b) {
            const std::string root = payload(r.scratch.path(), "2.0", "root");
            EXPECT_EQ(r.fixture.region("root_b", root.size()), root);
        }
        r.config.release.version = up == Slot::b ? "2.0" : "1.0";
        BootDecision d = r.engine().on_boot();
        if (d.kind == BootDecision::Kind::trial) r.engine().commit();
        // A retry from wherever we are goes through.
        r.engine().install(r.fixture.bundle("3.0"), {}, {});
        ASSERT_EQ(r.reboot_into("3.0").kind, BootDecision::Kind::trial);
        r.engine().commit();
        EXPECT_EQ(r.boot.order().front(), r.boot.booted());
    }
}

TEST(Engine, ReportsEtcFilesTheUserChangedWhoseDefaultChanges) {
    Rig r;
    r.engine().on_boot();
    write_text(r.config.etc_upper / "app.conf", "setting=mine\n");   // default changes 1.0 -> 2.0
    write_text(r.config.etc_upper / "hostname", "my-device\n");      // default stays "cairn\n"
    write_text(r.config.etc_upper / "local.conf", "only mine\n");    // no default either side
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    UpdateStatus st = r.engine().status();
    ASSERT_EQ(st.etc_conflicts.size(), 1u);
    EXPECT_EQ(st.etc_conflicts[0].path, "/etc/app.conf");
    EXPECT_NE(st.etc_conflicts[0].resolution.find("kept your version"), std::string::npos);
}

TEST(Engine, MarksSlots) {
    Rig r;
    r.engine().on_boot();
    expect_error([&] { r.engine().mark("bad", "booted"); }, {"cannot be marked bad while it runs"});
    EXPECT_EQ(r.engine().mark("bad", "b"), Slot::b);
    expect_error([&] { r.engine().mark("good", "b"); }, {"only a written slot"});
    expect_error([&] { r.engine().mark("sideways", "a"); }, {"unknown state"});
    expect_error([&] { r.engine().mark("good", "c"); }, {"unknown slot"});
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    EXPECT_EQ(r.engine().mark("bad", "other"), Slot::b);
    EXPECT_FALSE(r.boot.next());
    EXPECT_EQ(r.engine().status().slots["b"].state, SlotState::bad);
    expect_error([&] { r.engine().mark("active", "b"); }, {"slot b is bad"});
}

// A device whose clock was never set (1970) checks the signer's certificate at its own build
// time (release.json's "created") instead: the bundle goes in. Without a build time it cannot.
TEST(Engine, AClockAt1970ChecksCertificatesAtTheBuildTime) {
    Rig r;
    r.config.clock = [] { return int64_t{86400}; };
    r.engine().on_boot();
    const std::string before = r.slot_b();
    expect_code([&] { r.engine().install(r.fixture.bundle("2.0"), {}, {}); }, ErrorCode::bad_signature, {"is not valid before", "1970"});
    EXPECT_EQ(r.slot_b(), before);
    r.config.release.created = 1900000000;  // 2030, after the test CA's and signer's notBefore
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
}

// The tree's superblock, the root's sha256 and the manifest's verity fields must agree: a signed
// manifest that says something else than the tree it ships is refused before anything is written.
TEST(Engine, RefusesATreeThatDisagreesWithItsSignedManifest) {
    Rig r;
    r.engine().on_boot();
    const std::string before = r.slot_b();
    const int writes = r.boot.writes;
    auto each_tree = [](const std::function<void(Payload&)>& edit) {
        return [edit](BundleManifest& m) {
            for (Payload& p : m.payloads)
                if (p.role == "root-verity") edit(p);
        };
    };
    // Rebuilds each slot's tree over the first half of the root only (the manifest keeps the
    // true data_blocks, and names the new tree's root hash, size and sha256).
    auto half_trees = [&](const std::string& version) {
        return [&r, version](BundleManifest& m) {
            const fs::path work = r.scratch / ("payloads-" + version);
            for (Payload& p : m.payloads) {
                if (p.role != "root-verity") continue;
                verity::Params params;
                params.data_blocks = p.data_blocks / 2;
                params.salt = from_hex(p.salt, "salt");
                const fs::path tree = work / ("verity-" + p.slot);
                UniqueFd data = open_file(work / "root", O_RDONLY);
                UniqueFd hash = open_file(tree, O_RDWR | O_CREAT | O_TRUNC, 0644);
                verity::Result v = verity::format(data.get(), 0, hash.get(), 0, params, 1);
                p.root_hash = to_hex(v.root_hash);
                p.size = fs::file_size(tree);
                p.sha256 = sha256_file_hex(tree);
            }
        };
    };
    // Names another hash algorithm in each tree's superblock.
    auto sha1_trees = [&](const std::string& version) {
        return [&r, version](BundleManifest& m) {
            for (Payload& p : m.payloads) {
                if (p.role != "root-verity") continue;
                const fs::path tree = r.scratch / ("payloads-" + version) / ("verity-" + p.slot);
                UniqueFd fd = open_file(tree, O_RDWR);
                const char name[32] = "sha1";
                pwrite_exact(fd.get(), name, sizeof name, 32, tree.string());
                p.sha256 = sha256_file_hex(tree);
            }
        };
    };
    // The code says the bundle is refused for its payloads; the text which check caught it.
    struct Case {
        std::string version;
        std::function<void(BundleManifest&)> edit;
        ErrorCode code;
        std::vector<std::string> error;
    };
    const std::vector<Case> cases = {
        {"2.1", each_tree([](Payload& p) { p.salt = std::string(64, 'f'); }), ErrorCode::bad_payload, {"payload root-verity-b", "superblock says salt"}},
        {"2.2", each_tree([](Payload& p) { p.hash_block_size = 2048; }), ErrorCode::bad_payload, {"superblock says hash block size 4096", "manifest 2048"}},
        {"2.3", each_tree([](Payload& p) { p.data_block_size = 2048, p.data_blocks *= 2; }), ErrorCode::bad_payload, {"superblock says data block size 4096"}},
        // 2^52 blocks more: data_blocks × 4096 is the same number modulo 2^64. The manifest itself is refused.
        {"2.4", each_tree([](Payload& p) { p.data_blocks += uint64_t{1} << 52; }), ErrorCode::bad_bundle, {"data_blocks", "more than 64 bits"}},
        {"2.5", half_trees("2.5"), ErrorCode::bad_payload, {"payload root-verity-b", "superblock says data blocks 128, the signed manifest 256"}},
        {"2.6", [](BundleManifest& m) { m.payloads[0].sha256 = to_hex(sha256("another root")); }, ErrorCode::bad_payload, {"payload root", "sha256 does not match"}},
        {"2.7", sha1_trees("2.7"), ErrorCode::bad_payload, {"superblock says hash algorithm \"sha1\""}},
    };
    for (const Case& c : cases) {
        const fs::path bundle = r.fixture.bundle(c.version, "cairn-test", c.edit);
        expect_code([&] { r.engine().install(bundle, {}, {}); }, c.code, c.error);
        EXPECT_EQ(r.slot_b(), before) << c.version;
        EXPECT_EQ(r.boot.writes, writes) << c.version;
    }
    r.engine().install(r.fixture.bundle("2.8"), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
}

// A damaged status file is set aside and the state rebuilt from the boot control: an armed
// install (BootNext) is still a pending trial, and it commits when the trial boot is healthy.
TEST(Engine, ADamagedStatusIsRebuiltFromTheBootVariables) {
    Rig r;
    r.engine().on_boot();
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    write_text(r.config.state_file, "{\"slots\": ");
    UpdateStatus st = r.engine().status();
    EXPECT_EQ(st.slots["a"].state, SlotState::good);
    EXPECT_EQ(st.slots["b"].state, SlotState::trial);
    ASSERT_TRUE(st.pending);
    EXPECT_EQ(st.pending->slot, "b");
    EXPECT_EQ(st.pending->phase, PendingPhase::armed);
    EXPECT_EQ(st.last->kind, EventKind::state_rebuilt);
    EXPECT_TRUE(st.save_error.empty());
    EXPECT_EQ(r.engine().on_boot().kind, BootDecision::Kind::normal);  // the same boot: no rollback
    ASSERT_EQ(r.reboot_into("2.0").kind, BootDecision::Kind::trial);
    r.engine().commit();
    EXPECT_EQ(r.engine().status().slots["b"].state, SlotState::good);
    // A slot out of the boot order is bad.
    r.engine().mark("bad", "a");
    write_text(r.config.state_file, "[]");
    EXPECT_EQ(r.engine().status().slots["a"].state, SlotState::bad);
    int aside = 0;
    for (const auto& e : fs::directory_iterator(r.config.state_file.parent_path()))
        aside += e.path().filename().string().rfind("status.json.damaged-", 0) == 0;
    EXPECT_EQ(aside, 2);
    // Unreadable (a directory in its place): set aside as well, and a fresh record is written.
    fs::remove(r.config.state_file);
    fs::create_directories(r.config.state_file / "x");
    EXPECT_EQ(r.engine().status().last->kind, EventKind::state_rebuilt);
    EXPECT_TRUE(fs::is_regular_file(r.config.state_file));
}

// A committed slot that cairn-init refused (its root rotted) falls back to the other slot; the
// daemon there reports it and records the failed slot as bad, so the next install goes into it.
TEST(Engine, ACommittedSlotThatFailedInCairnInitIsReportedAsAFallback) {
    Rig r;
    r.engine().on_boot();
    r.engine().install(r.fixture.bundle("2.0"), {}, {});
    ASSERT_EQ(r.reboot_into("2.0").kind, BootDecision::Kind::trial);
    r.engine().commit();  // b committed, a behind it
    r.boot.broken = {Slot::b};
    ASSERT_EQ(fall_back(r.boot, Slot::b, false), Fallback::to_other);
    BootDecision d = r.reboot_into("1.0", "slot b failed to boot: root_b does not match its root hash");
    EXPECT_EQ(d.kind, BootDecision::Kind::fell_back);
    EXPECT_EQ(r.boot.booted(), Slot::a);
    UpdateStatus st = r.engine().status();
    EXPECT_EQ(st.slots["b"].state, SlotState::bad);
    EXPECT_EQ(st.slots["a"].state, SlotState::good);
    ASSERT_TRUE(st.last);
    EXPECT_EQ(st.last->kind, EventKind::fell_back);
    EXPECT_EQ(st.last->code, ErrorCode::boot_failed);
    EXPECT_NE(st.last->reason.find("root_b does not match"), std::string::npos);
}

// A bundle built for another disk (its UKIs name another cairn.disk, e.g. a recipe with another
// seed) would be refused by cairn-init at its trial boot: it is refused before any write instead.
TEST(Engine, RefusesABundleWhoseKernelsNameAnotherDisk) {
    Rig r;
    r.engine().on_boot();
    const std::string before = r.slot_b();
    auto other_disk = [](BundleManifest& m) { m.disk_guid = Uuid::derive("another", "disk").str(); };
    expect_code([&] { r.engine().install(r.fixture.bundle("2.0", "cairn-test", other_disk), {}, {}); }, ErrorCode::incompatible);
    EXPECT_EQ(r.slot_b(), before);
    auto own_disk = [](BundleManifest& m) { m.disk_guid = Uuid::derive("cairn-test", "disk").str(); };
    r.engine().install(r.fixture.bundle("2.1", "cairn-test", own_disk), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
}

namespace {

// A pipe fed from `bytes` by a thread, as `ssh device cairnctl update install - < bundle` feeds
// cairnctl's standard input. The feeder stops quietly when the reader closes its end early.
class Pipe {
public:
    // hold: keep the pipe open after the bytes, sending nothing more (a stalled sender).
    explicit Pipe(std::string bytes, bool hold = false) : bytes_(std::move(bytes)) {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
        read_ = UniqueFd(fds[0]);
        write_ = UniqueFd(fds[1]);
        feeder_ = std::jthread([this, hold](std::stop_token stop) {
            ::signal(SIGPIPE, SIG_IGN);
            size_t done = 0;
            while (done < bytes_.size()) {
                ssize_t n = ::write(write_.get(), bytes_.data() + done, std::min<size_t>(1 << 16, bytes_.size() - done));
                if (n <= 0) break;
                done += static_cast<size_t>(n);
            }
            while (hold && !stop.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            write_.reset();
        });
    }
    UniqueFd take() { return std::move(read_); }

private:
    std::string bytes_;
    UniqueFd read_, write_;
    std::jthread feeder_;
};

}  // namespace

// `cairnctl update install -`: the bundle arrives on a pipe, read once. It goes in like a file;
// what can be refused without the payloads is refused before any write; a payload altered in
// flight or a stream cut short is written into the slot marked bad and never armed.
TEST(Engine, ABundleFromAPipeIsReadOnceAndCheckedBeforeItIsArmed) {
    Rig r;
    r.engine().on_boot();
    const std::string before = r.slot_b();
    const int writes = r.boot.writes;
    expect_code([&] { r.engine().install(Pipe(read_file(r.fixture.bundle("2.1", "cairn-other"))).take(), "-", {}, {}); },
                ErrorCode::incompatible, {"-: "});
    expect_code([&] { r.engine().install(Pipe(read_file(r.fixture.bundle("0.9"))).take(), "-", {}, {}); }, ErrorCode::downgrade);
    EXPECT_EQ(r.slot_b(), before);
    EXPECT_EQ(r.boot.writes, writes);

    struct Case {
        std::string version, payload;
        int64_t at;  // from the payload's start; negative: cut the stream there
        ErrorCode code;
        std::string names;  // the payload the message names
    };
    for (const Case& c : {Case{"2.2", "root", 5000, ErrorCode::bad_payload, "-: payload root"},
                          Case{"2.3", "root-verity", 4096 + 7, ErrorCode::bad_payload, "payload root-verity-b"},
                          Case{"2.4", "esp", 100, ErrorCode::bad_payload, "payload esp-b"},
                          Case{"2.5", "root", -3000, ErrorCode::transfer, "-: payload root"}}) {
        const fs::path bundle = r.fixture.bundle(c.version);
        std::string bytes = read_file(bundle);
        const uint64_t start = BundleReader(bundle, r.fixture.trust_anchor).manifest().find(c.payload, "b")->offset;
        if (c.at >= 0) bytes[start + static_cast<uint64_t>(c.at)] ^= 0x01;
        else bytes.resize(start + static_cast<uint64_t>(-c.at));
        std::vector<std::string> messages;
        expect_code([&] { r.engine().install(Pipe(bytes).take(), "-", {}, [&](int, const std::string& m) { messages.push_back(m); }); },
                    c.code, {c.names});
        EXPECT_NE(std::find(messages.begin(), messages.end(), "mark-bad: slot b"), messages.end()) << c.payload;
        EXPECT_FALSE(r.boot.next()) << c.payload;
        EXPECT_EQ(r.boot.order(), std::vector<Slot>{Slot::a}) << c.payload;
        EXPECT_EQ(r.engine().status().slots["b"].state, SlotState::installing) << c.payload;
    }

    std::vector<int> percents;
    r.engine().install(Pipe(read_file(r.fixture.bundle("3.0"))).take(), "-", {}, [&](int p, const std::string&) { percents.push_back(p); });
    EXPECT_TRUE(std::is_sorted(percents.begin(), percents.end()));
    EXPECT_EQ(percents.back(), 100);
    const std::string root = payload(r.scratch.path(), "3.0", "root");
    EXPECT_EQ(r.fixture.region("root_b", root.size()), root);
    const std::string tree = payload(r.scratch.path(), "3.0", "verity-b");
    EXPECT_EQ(r.fixture.region("root_b_verity", tree.size()), tree);
    const std::string esp = payload(r.scratch.path(), "3.0", "esp-b");
    EXPECT_EQ(r.fixture.region("esp_b", esp.size()), esp);
    EXPECT_EQ(r.boot.next(), Slot::b);
    EXPECT_EQ(r.reboot_into("3.0").kind, BootDecision::Kind::trial);
    r.engine().commit();
    EXPECT_EQ(r.engine().status().slots["b"].state, SlotState::good);
}

// A sender that stalls mid-bundle (an SSH session whose network went away) fails the install after
// the engine's stall timeout instead of keeping the daemon busy for ever; the slot stays marked bad.
TEST(Engine, ABundleFromAPipeThatStallsFailsAfterTheStallTimeout) {
    Rig r;
    r.config.stall_timeout = std::chrono::milliseconds(300);
    r.engine().on_boot();
    const fs::path bundle = r.fixture.bundle("2.0");
    std::string bytes = read_file(bundle);
    bytes.resize(BundleReader(bundle, r.fixture.trust_anchor).manifest().find("root", "b")->offset + 10000);
    const auto started = std::chrono::steady_clock::now();
    expect_code([&] { r.engine().install(Pipe(bytes, true).take(), "-", {}, {}); }, ErrorCode::transfer, {"-: payload root", "no data for 0.3 s"});
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
    EXPECT_FALSE(r.boot.next());
    EXPECT_EQ(r.engine().status().slots["b"].state, SlotState::installing);
}

namespace {

// Each progress report of an install, in order.
struct Reports {
    std::vector<std::pair<int, std::string>> seen;
    ProgressFn fn() {
        return [this](int percent, const std::string& message) { seen.emplace_back(percent, message); };
    }
    // The steps in the order their messages came ("write: root_b" is step write).
    std::vector<std::string> steps() const {
        std::vector<std::string> out;
        for (const auto& [percent, message] : seen) {
            const std::string step = message.substr(0, message.find(": "));
            if (out.empty() || out.back() != step) out.push_back(step);
        }
        return out;
    }
    // The percentage at the step's first message; -1 when it never came.
    int start_of(const std::string& step) const {
        for (const auto& [percent, message] : seen)
            if (message.rfind(step + ": ", 0) == 0) return percent;
        return -1;
    }
    std::vector<int> percents_of(const std::string& step) const {
        std::vector<int> out;
        for (const auto& [percent, message] : seen)
            if (message.rfind(step + ": ", 0) == 0) out.push_back(percent);
        return out;
    }
    void expect_well_formed() const {
        ASSERT_FALSE(seen.empty());
        int last = 0;
        for (size_t i = 0; i < seen.size(); ++i) {
            const auto& [percent, message] = seen[i];
            EXPECT_GE(percent, last) << message;  // never backwards
            last = percent;
            EXPECT_NE(message.find(": "), std::string::npos) << message;
            if (i + 1 < seen.size()) {
                EXPECT_LT(percent, 100) << message;  // 100 only at the end
            }
            if (i > 0) {
                EXPECT_NE(seen[i], seen[i - 1]) << "reported twice: " << message;
            }
        }
        EXPECT_EQ(seen.back().first, 100);
        EXPECT_EQ(seen.back().second, "arm: slot b installed; it boots once on the next reboot");
    }
};

}  // namespace

// Progress is the weighted sum of the named steps: the bytes each reads or writes (verify reads
// the payloads once; write writes them and reads them back: twice that), the small steps a
// hundredth of the payloads each. So with a file, verify is about a third, write two thirds.
TEST(Engine, ProgressGoesThroughTheNamedStepsWeightedByTheirWork) {
    Rig r;
    r.engine().on_boot();
    const uint64_t root_size = 7 * (1 << 20) + 3 * 4096;  // two write chunks
    Reports reports;
    r.engine().install(r.fixture.bundle("2.0", "cairn-test", {}, root_size), {}, reports.fn());
    reports.expect_well_formed();
    EXPECT_EQ(reports.steps(), (std::vector<std::string>{"check", "verify", "mark-bad", "write", "arm"}));
    for (InstallStep s : {InstallStep::check, InstallStep::verify, InstallStep::mark_bad, InstallStep::write, InstallStep::arm})
        EXPECT_NE(reports.start_of(std::string(install_step_name(s))), -1) << install_step_name(s);
    // The weights: check 1, verify 100, mark-bad 1, write 200, arm 1 (of 303).
    EXPECT_EQ(reports.start_of("check"), 0);
    EXPECT_LE(reports.start_of("verify"), 1);
    EXPECT_NEAR(reports.start_of("mark-bad"), 33, 1);
    EXPECT_NEAR(reports.start_of("write"), 33, 1);
    EXPECT_EQ(reports.start_of("arm"), 99);
    // Within the big steps, progress moves with the bytes, not in one jump at the end.
    const std::vector<int> verify = reports.percents_of("verify"), write = reports.percents_of("write");
    EXPECT_TRUE(std::any_of(verify.begin(), verify.end(), [](int p) { return p >= 10 && p <= 31; })) << ::testing::PrintToString(verify);
    EXPECT_TRUE(std::any_of(write.begin(), write.end(), [](int p) { return p >= 45 && p <= 60; })) << ::testing::PrintToString(write);
    EXPECT_TRUE(std::any_of(write.begin(), write.end(), [](int p) { return p >= 75 && p <= 98; })) << ::testing::PrintToString(write);
    for (const char* part : {"write: root_b_verity", "write: esp_b", "write: root_b", "write: reading back slot b"})
        EXPECT_TRUE(std::any_of(reports.seen.begin(), reports.seen.end(), [&](const auto& s) { return s.second == part; })) << part;
}

// From a pipe there is no verify step (each payload is checked as it arrives): write is nearly all.
TEST(Engine, ProgressFromAPipeHasNoVerifyStep) {
    Rig r;
    r.engine().on_boot();
    Reports reports;
    r.engine().install(Pipe(read_file(r.fixture.bundle("2.0", "cairn-test", {}, 7 * (1 << 20)))).take(), "-", {}, reports.fn());
    reports.expect_well_formed();
    EXPECT_EQ(reports.steps(), (std::vector<std::string>{"check", "mark-bad", "write", "arm"}));
    EXPECT_LE(reports.start_of("write"), 1);
    EXPECT_EQ(reports.start_of("arm"), 99);
    const std::vector<int> write = reports.percents_of("write");
    EXPECT_TRUE(std::any_of(write.begin(), write.end(), [](int p) { return p >= 25 && p <= 50; })) << ::testing::PrintToString(write);
    EXPECT_TRUE(std::any_of(write.begin(), write.end(), [](int p) { return p >= 60 && p <= 98; })) << ::testing::PrintToString(write);
}

// Every failure of an install has a code; the ones not covered above, provoked for real.
TEST(Engine, FailuresCarryTheirCode) {
    Rig r;
    r.engine().on_boot();
    const std::string before = r.slot_b();
    // Not a bundle; a bundle cut short.
    write_text(r.scratch / "junk.cairn", std::string(8192, 'x'));
    expect_code([&] { r.engine().install(r.scratch / "junk.cairn", {}, {}); }, ErrorCode::bad_bundle, {"junk.cairn"});
    const fs::path cut = r.fixture.bundle("2.0");
    fs::resize_file(cut, fs::file_size(cut) / 2);
    expect_code([&] { r.engine().install(cut, {}, {}); }, ErrorCode::bad_bundle, {"truncated"});
    // A pipe that ends before its payloads.
    const fs::path whole = r.fixture.bundle("2.1");
    std::string head = read_file(whole);
    head.resize(BundleReader(whole, r.fixture.trust_anchor).manifest().payloads.front().offset - 100);
    expect_code([&] { r.engine().install(Pipe(head).take(), "-", {}, {}); }, ErrorCode::transfer);
    EXPECT_EQ(r.slot_b(), before);

    // The firmware refuses the variable that takes the target out of the boot order.
    r.boot.refuse_at_write = r.boot.writes + 1;
    expect_code([&] { r.engine().install(r.fixture.bundle("2.2"), {}, {}); }, ErrorCode::boot_control, {"refused"});
    r.boot.refuse_at_write = 0;
    EXPECT_EQ(r.slot_b(), before);
    UpdateStatus st = r.engine().status();
    ASSERT_TRUE(st.last);
    EXPECT_EQ(st.last->kind, EventKind::failed);
    EXPECT_EQ(st.last->code, ErrorCode::boot_control);
    EXPECT_EQ(st.slots["b"].state, SlotState::installing);
    // ... or the one that arms it.
    expect_code(
        [&] {
            r.engine().install(r.fixture.bundle("2.3"), {}, [&](int, const std::string& message) {
                if (message.rfind("arm:", 0) == 0 && !r.boot.refuse_at_write) r.boot.refuse_at_write = r.boot.writes + 1;
            });
        },
        ErrorCode::boot_control);
    EXPECT_NE(r.boot.refuse_at_write, 0);
    r.boot.refuse_at_write = 0;
    EXPECT_FALSE(r.boot.next());
    EXPECT_EQ(r.engine().status().last->code, ErrorCode::boot_control);

    // The status file cannot record the target as installing: nothing is written.
    const fs::path state = r.config.state_file;
    r.config.state_file = r.scratch / "a-file" / "status.json";
    write_text(r.scratch / "a-file", "not a directory");
    const int writes = r.boot.writes;
    const std::string slot = r.slot_b();
    expect_code([&] { r.engine().install(r.fixture.bundle("2.4"), {}, {}); }, ErrorCode::save_failed, {"cannot save the update status"});
    EXPECT_EQ(r.boot.writes, writes);
    EXPECT_EQ(r.slot_b(), slot);
    r.config.state_file = state;

    r.engine().install(r.fixture.bundle("2.5"), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
    EXPECT_EQ(r.engine().status().last->kind, EventKind::installed);
    EXPECT_FALSE(r.engine().status().last->code);
}

// The power goes after the target was recorded as written but before BootNext was set: the next
// boot reports the install interrupted (with its code) and the slot bad; a retry goes in.
TEST(Engine, AnInstallCutOffBeforeItWasArmedIsReportedInterrupted) {
    Rig r;
    r.engine().on_boot();
    EXPECT_THROW(r.engine().install(r.fixture.bundle("2.0"), {},
                                    [&](int, const std::string& message) {
                                        if (message.rfind("arm:", 0) == 0 && !r.boot.cut_at_write) r.boot.cut_at_write = r.boot.writes + 1;
                                    }),
                 PowerCut);
    r.boot.cut_at_write = 0;
    ASSERT_TRUE(r.engine().status().pending);
    EXPECT_EQ(r.engine().status().pending->phase, PendingPhase::written);
    BootDecision d = r.reboot_into("1.0");
    EXPECT_EQ(d.kind, BootDecision::Kind::interrupted);
    UpdateStatus st = r.engine().status();
    ASSERT_TRUE(st.last);
    EXPECT_EQ(st.last->kind, EventKind::interrupted);
    EXPECT_EQ(st.last->code, ErrorCode::interrupted);
    EXPECT_EQ(st.slots["b"].state, SlotState::bad);
    r.engine().install(r.fixture.bundle("2.1"), {}, {});
    EXPECT_EQ(r.boot.next(), Slot::b);
}

// A disk image on a filesystem that runs out of room while the slot is written (ENOSPC): no-space.
TEST(Engine, ADiskThatRunsOutOfRoomIsNoSpace) {
    if (!is_root()) GTEST_SKIP() << "needs root (a tmpfs mount)";
    Rig r;
    const fs::path small = r.scratch / "small";
    fs::create_directories(small);
    if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=512k") != 0) GTEST_SKIP() << "cannot mount a tmpfs here";
    struct Unmount {
        fs::path dir;
        ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
    } unmount{small};
    RunResult copy = run({"cp", "--sparse=always", r.fixture.disk.string(), (small / "disk.img").string()});
    ASSERT_EQ(copy.exit_code, 0) << copy.err;  // the GPT only: the rest of the 40 MiB is holes
    r.config.disk = small / "disk.img";
    r.engine().on_boot();
    expect_code([&] { r.engine().install(r.fixture.bundle("2.0"), {}, {}); }, ErrorCode::no_space, {"No space left on device"});
    EXPECT_FALSE(r.boot.next());
    ASSERT_TRUE(r.engine().status().last);
    EXPECT_EQ(r.engine().status().last->code, ErrorCode::no_space);
}

// A disk that refuses writes (a read-only loop device): io, recorded, the slot not armed.
TEST(Engine, ADiskThatRefusesWritesIsAnIoFailure) {
    if (!is_root() || !fs::exists("/dev/loop-control")) GTEST_SKIP() << "needs root and loop devices";
    Rig r;
    RunResult attach = run({"losetup", "--read-only", "--find", "--show", r.fixture.disk.string()});
    if (attach.exit_code != 0) GTEST_SKIP() << "no loop device: " << attach.err;
    const std::string loop = trim_end(attach.out);
    struct Detach {
        std::string dev;
        ~Detach() { run({"losetup", "--detach", dev}); }
    } detach{loop};
    r.config.disk = loop;
    r.engine().on_boot();
    expect_code([&] { r.engine().install(r.fixture.bundle("2.0"), {}, {}); }, ErrorCode::io, {loop});
    EXPECT_FALSE(r.boot.next());
    UpdateStatus st = r.engine().status();
    EXPECT_EQ(st.slots["b"].state, SlotState::installing);
    ASSERT_TRUE(st.last);
    EXPECT_EQ(st.last->code, ErrorCode::io);
}
