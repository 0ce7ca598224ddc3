#include "updater/uefi_boot_control.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;

namespace {
std::vector<uint8_t> u16s(std::initializer_list<uint16_t> v) {
    std::vector<uint8_t> out;
    for (uint16_t n : v) {
        out.push_back(static_cast<uint8_t>(n & 0xff));
        out.push_back(static_cast<uint8_t>(n >> 8));
    }
    return out;
}
struct Rig {
    Scratch s;
    UpdateFixture f{s.path()};
    EfiVars vars{s / "efivars"};
    Rig() {
        std::filesystem::create_directories(s / "efivars");
        write_text(s / "cmdline", "cairn.slot=a cairn.roothash=00 console=ttyS0\n");
    }
    UefiBootControl control() { return UefiBootControl(vars, f.disk, s / "cmdline"); }
    std::vector<uint16_t> order() { return control().boot_order(); }
};
}  // namespace

TEST(UefiBootControl, CreatesEntriesForBothEspsAndKeepsForeignOnes) {
    Rig r;
    // What OVMF leaves on a fresh NVRAM: an entry of its own first in BootOrder.
    r.vars.write("Boot0000", efi_global_guid, 7, {1, 0, 0, 0, 4, 0, 'U', 0, 0, 0, 0x7f, 0xff, 4, 0});
    r.vars.write("BootOrder", efi_global_guid, 7, u16s({0}));
    UefiBootControl c = r.control();
    EXPECT_EQ(c.booted(), Slot::a);
    EXPECT_TRUE(c.order().empty());
    c.ensure_entries();
    EXPECT_EQ(c.entry(Slot::a), 1);
    EXPECT_EQ(c.entry(Slot::b), 2);
    LoadOption a = decode_load_option(r.vars.read("Boot0001", efi_global_guid)->data, "Boot0001");
    EXPECT_EQ(a.description, "Cairn slot A");
    EXPECT_EQ(a.file, "\\EFI\\BOOT\\BOOTX64.EFI");
    EXPECT_EQ(a.partition_number, 1u);
    EXPECT_EQ(a.start_lba, 2048u);  // esp_a at 1 MiB
    c.ensure_entries();             // again: nothing new
    EXPECT_EQ(r.vars.list(efi_global_guid).size(), 4u);

    c.set_primary(Slot::a);
    EXPECT_EQ(r.order(), (std::vector<uint16_t>{1, 0}));
    c.mark_unbootable(Slot::b);  // not in the order: nothing to do
    c.set_next(Slot::b);
    EXPECT_EQ(c.next(), Slot::b);
    EXPECT_EQ(r.vars.read("BootNext", efi_global_guid)->data, u16s({2}));
    c.set_primary(Slot::b);
    EXPECT_EQ(r.order(), (std::vector<uint16_t>{2, 1, 0}));
    EXPECT_EQ(c.order(), (std::vector<Slot>{Slot::b, Slot::a}));
    c.mark_unbootable(Slot::b);
    EXPECT_EQ(r.order(), (std::vector<uint16_t>{1, 0}));
    EXPECT_FALSE(c.next());  // BootNext named b: cleared with it
}

TEST(UefiBootControl, RecognisesAnEntryMadeBySomeoneElse) {
    Rig r;
    UefiBootControl first = r.control();
    first.ensure_entries();
    // Move slot b's entry to Boot0007 as another tool might have made it.
    auto b = r.vars.read("Boot0001", efi_global_guid);
    r.vars.remove("Boot0001", efi_global_guid);
    r.vars.write("Boot0007", efi_global_guid, 7, b->data);
    UefiBootControl c = r.control();
    EXPECT_EQ(c.entry(Slot::b), 7);
    c.ensure_entries();
    EXPECT_EQ(c.entry(Slot::b), 7);
    EXPECT_EQ(r.vars.list(efi_global_guid).size(), 2u);
}

TEST(UefiBootControl, SaysWhatIsMissing) {
    Rig r;
    write_text(r.s / "cmdline", "console=ttyS0\n");
    expect_error([&] { r.control().booted(); }, {"cmdline", "no cairn.slot="});
    expect_error([&] { r.control().set_next(Slot::b); }, {"no UEFI boot entry for slot b"});
    write_random(r.s / "not-a-disk", 1 << 20, 1);
    expect_error([&] { UefiBootControl(r.vars, r.s / "not-a-disk", r.s / "cmdline"); }, {"not-a-disk"});
}
