#include "updater/boot_control.hpp"

#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"
#include "updater/fake_boot_control.hpp"
#include "updater/uefi_boot_control.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;

TEST(Fallback, AFreshImageWithADamagedSlotABootsB) {
    FakeBootControl boot(Slot::a);  // blank NVRAM: the firmware started esp_a's removable path
    boot.broken = {Slot::a};
    EXPECT_EQ(fall_back(boot, Slot::a, false), Fallback::to_other);
    EXPECT_EQ(boot.order().front(), Slot::b);
    EXPECT_EQ(boot.reboot(), Slot::b);
}

TEST(Fallback, ACommittedSlotThatRotsGivesWayToTheOther) {
    FakeBootControl boot(Slot::a);
    boot.ensure_entries();
    boot.set_primary(Slot::b);
    boot.set_primary(Slot::a);  // a committed, b good behind it
    ASSERT_EQ(boot.order(), (std::vector<Slot>{Slot::a, Slot::b}));
    boot.broken = {Slot::a};
    EXPECT_EQ(fall_back(boot, Slot::a, false), Fallback::to_other);
    EXPECT_EQ(boot.order(), (std::vector<Slot>{Slot::b, Slot::a}));
    EXPECT_EQ(boot.reboot(), Slot::b);
}

TEST(Fallback, NeverToASlotOutOfBootOrderNorTwiceWithoutAGoodBoot) {
    FakeBootControl boot(Slot::a);
    boot.ensure_entries();
    boot.set_primary(Slot::a);
    ASSERT_EQ(boot.order(), (std::vector<Slot>{Slot::a}));  // b is being written (out of BootOrder)
    EXPECT_EQ(fall_back(boot, Slot::a, false), Fallback::no_other);
    EXPECT_EQ(boot.order(), (std::vector<Slot>{Slot::a}));

    FakeBootControl both(Slot::b);
    both.ensure_entries();
    both.set_primary(Slot::a);
    both.set_primary(Slot::b);  // b first after an earlier fallback from a
    EXPECT_EQ(fall_back(both, Slot::b, true), Fallback::not_again);
    EXPECT_EQ(both.order(), (std::vector<Slot>{Slot::b, Slot::a}));
}

TEST(Fallback, ATrialThatFailsIsLeftToTheFirmware) {
    FakeBootControl boot(Slot::a);
    boot.ensure_entries();
    boot.set_primary(Slot::a);
    boot.set_next(Slot::b);
    ASSERT_EQ(boot.reboot(), Slot::b);  // the trial boot; its root does not verify
    const int writes = boot.writes;
    EXPECT_EQ(fall_back(boot, Slot::b, false), Fallback::already_other);
    EXPECT_EQ(boot.writes, writes) << "nothing to write: BootOrder still starts with a";
}

TEST(Fallback, OnUefiVariablesAFreshNvramGetsEntriesWithTheOtherSlotFirst) {
    Scratch s;
    UpdateFixture f{s.path()};
    std::filesystem::create_directories(s / "efivars");
    write_text(s / "cmdline", "cairn.slot=a\n");
    EfiVars vars{s / "efivars"};
    // OVMF's own entry first, as on a blank NVRAM.
    vars.write("Boot0000", efi_global_guid, 7, {1, 0, 0, 0, 4, 0, 'U', 0, 0, 0, 0x7f, 0xff, 4, 0});
    vars.write("BootOrder", efi_global_guid, 7, {0, 0});
    UefiBootControl control(vars, f.disk, s / "cmdline");
    EXPECT_EQ(fall_back(control, Slot::a, false), Fallback::to_other);
    EXPECT_EQ(control.order().front(), Slot::b);
    EXPECT_EQ(control.boot_order().front(), *control.entry(Slot::b)) << "before the firmware's own entries";
}
