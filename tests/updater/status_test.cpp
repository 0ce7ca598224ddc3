#include "updater/status.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/file.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::updater;
using namespace cairn::test;
namespace fs = std::filesystem;

TEST(Status, RoundTripsAndAMissingFileIsEmpty) {
    Scratch s;
    EXPECT_TRUE(load_status(s / "none.json").slots.empty());
    UpdateStatus st;
    st.slots["a"] = SlotRecord{SlotState::good, "1.0", "x", 5};
    st.slots["b"] = SlotRecord{SlotState::trial, "2.0", "y", 6};
    st.pending = Pending{"b", "2.0", PendingPhase::armed, "boot"};
    st.last = Event{EventKind::failed, "b", "2.0", "it broke", 7, ErrorCode::verify_failed};
    st.etc_conflicts.push_back({"/etc/app.conf", "kept your version"});
    save_status(s / "state/status.json", st);
    UpdateStatus back = load_status(s / "state/status.json");
    EXPECT_EQ(back.to_json(), st.to_json());
    ASSERT_TRUE(back.last);
    EXPECT_EQ(back.last->code, ErrorCode::verify_failed);
    EXPECT_NE(read_file(s / "state/status.json").find("\"code\": \"verify-failed\""), std::string::npos);
}

// The names are the strings on disk and on D-Bus: each enum value has one, and it parses back.
TEST(Status, EveryStateHasANameThatParsesBack) {
    for (SlotState v : {SlotState::unknown, SlotState::good, SlotState::bad, SlotState::installing, SlotState::trial})
        EXPECT_EQ(parse_slot_state(slot_state_name(v)), v);
    for (PendingPhase v : {PendingPhase::written, PendingPhase::armed}) EXPECT_EQ(parse_pending_phase(pending_phase_name(v)), v);
    for (EventKind v : {EventKind::installed, EventKind::committed, EventKind::rolled_back, EventKind::failed, EventKind::interrupted,
                        EventKind::fell_back, EventKind::state_rebuilt})
        EXPECT_EQ(parse_event_kind(event_kind_name(v)), v);
    EXPECT_EQ(slot_state_name(SlotState::installing), "installing");
    EXPECT_EQ(event_kind_name(EventKind::rolled_back), "rolled-back");
    EXPECT_FALSE(parse_slot_state("Good"));
    EXPECT_FALSE(parse_event_kind("rolled_back"));
}

// A status file as the version before error codes and enums wrote it (tests/updater/data/): it
// loads unchanged, the last event without a code; written again, it keeps every string.
TEST(Status, AFileOfTheVersionBeforeLoads) {
    Scratch s;
    const std::string old = read_file(source_dir() / "tests/updater/data/status-before-codes.json");
    write_text(s / "status.json", old);
    UpdateStatus st = load_status(s / "status.json");
    EXPECT_EQ(st.slots["a"].state, SlotState::good);
    EXPECT_EQ(st.slots["b"].state, SlotState::trial);
    EXPECT_EQ(st.slots["b"].version, "2.0");
    ASSERT_TRUE(st.pending);
    EXPECT_EQ(st.pending->phase, PendingPhase::armed);
    EXPECT_EQ(st.pending->boot_id, "6a0c3c5e-7c1e-4f59-a3a4-1d3c1bd0e0b2");
    ASSERT_TRUE(st.last);
    EXPECT_EQ(st.last->kind, EventKind::rolled_back);
    EXPECT_EQ(st.last->reason, "device service(s) exited: 50-broken");
    EXPECT_FALSE(st.last->code);
    ASSERT_EQ(st.etc_conflicts.size(), 1u);
    const std::string again = st.to_json();
    for (const char* kept : {"\"state\": \"good\"", "\"state\": \"trial\"", "\"phase\": \"armed\"", "\"kind\": \"rolled-back\"", "\"code\": null"})
        EXPECT_NE(again.find(kept), std::string::npos) << kept;
    // A slot an earlier version recorded with an empty state (it knew nothing of it) is unknown.
    write_text(s / "status.json",
               R"({"slots": {"b": {"state": "", "version": "", "build_id": "", "changed": 3}}, "pending": null, "last": null, "etc_conflicts": []})");
    EXPECT_EQ(load_status(s / "status.json").slots["b"].state, SlotState::unknown);
    // A code a later version added is read as internal, not as damage.
    write_text(s / "status.json",
               R"({"slots": {}, "pending": null, "last": {"kind": "failed", "slot": "b", "version": "3", "reason": "r", "time": 1, "code": "from-the-future"}, "etc_conflicts": []})");
    EXPECT_EQ(load_status(s / "status.json").last->code, ErrorCode::internal);
}

TEST(Status, DamageOfEveryKindIsDamagedStatus) {
    Scratch s;
    const std::string good =
        R"({"slots": {"a": {"state": "good", "version": "1.0", "build_id": "x", "changed": 1}}, "pending": null, "last": null, "etc_conflicts": []})";
    for (const std::string& text : {std::string("\x01garbage"), good.substr(0, 40), std::string(), std::string("[]"), std::string("null"),
                                    std::string(R"({"slots": 5, "pending": null, "last": null, "etc_conflicts": []})"),
                                    std::string(R"({"slots": {"c": {"state": "good", "version": "", "build_id": "", "changed": 0}}, "pending": null, "last": null, "etc_conflicts": []})"),
                                    std::string(R"({"slots": {"a": {"state": "sideways", "version": "", "build_id": "", "changed": 0}}, "pending": null, "last": null, "etc_conflicts": []})"),
                                    std::string(R"({"slots": {}, "pending": {"slot": "q", "version": "", "phase": "armed", "boot_id": ""}, "last": null, "etc_conflicts": []})"),
                                    std::string(R"({"slots": {}, "pending": null, "last": null, "etc_conflicts": {}})"),
                                    std::string(R"({"slots": {}, "pending": {"slot": "b", "version": "", "phase": "half", "boot_id": ""}, "last": null, "etc_conflicts": []})"),
                                    std::string(R"({"slots": {}, "pending": null, "last": {"kind": "exploded", "slot": "b", "version": "", "reason": "", "time": 0}, "etc_conflicts": []})"),
                                    std::string(R"({"slots": {}, "pending": null, "last": {"kind": "failed", "slot": "b", "version": "", "reason": "", "time": 0, "code": 7}, "etc_conflicts": []})")}) {
        SCOPED_TRACE(text);
        write_text(s / "status.json", text);
        try {
            load_status(s / "status.json");
            ADD_FAILURE() << "accepted";
        } catch (const DamagedStatus& e) {
            EXPECT_NE(std::string(e.what()).find((s / "status.json").string() + ": damaged update status"), std::string::npos) << e.what();
        }
    }
    write_text(s / "status.json", good);
    EXPECT_EQ(load_status(s / "status.json").slots["a"].version, "1.0");
}

TEST(Status, ADamagedFileIsSetAsideKeepingTheNewestThree) {
    Scratch s;
    std::vector<fs::path> aside;
    for (int i = 0; i < 5; ++i) {
        write_text(s / "status.json", "damaged " + std::to_string(i));
        aside.push_back(set_aside_damaged(s / "status.json"));
        EXPECT_FALSE(fs::exists(s / "status.json"));
        EXPECT_EQ(read_file(aside.back()), "damaged " + std::to_string(i));
    }
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(s.path())) left.push_back(read_file(e.path()));
    std::sort(left.begin(), left.end());
    EXPECT_EQ(left, (std::vector<std::string>{"damaged 2", "damaged 3", "damaged 4"}));
}
