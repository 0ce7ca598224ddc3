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
    st.slots["a"] = SlotRecord{"good", "1.0", "x", 5};
    st.slots["b"] = SlotRecord{"trial", "2.0", "y", 6};
    st.pending = Pending{"b", "2.0", "armed", "boot"};
    st.last = Event{"installed", "b", "2.0", "", 7};
    st.etc_conflicts.push_back({"/etc/app.conf", "kept your version"});
    save_status(s / "state/status.json", st);
    UpdateStatus back = load_status(s / "state/status.json");
    EXPECT_EQ(back.to_json(), st.to_json());
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
                                    std::string(R"({"slots": {}, "pending": null, "last": null, "etc_conflicts": {}})")}) {
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
