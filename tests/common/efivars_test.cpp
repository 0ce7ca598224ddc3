#include "common/efivars.hpp"

#include <gtest/gtest.h>

#include "common/file.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;

TEST(EfiVars, WritesReadsListsAndRemovesInTheEfivarfsFormat) {
    Scratch s;
    EfiVars vars(s.path());
    EXPECT_FALSE(vars.read("BootNext", efi_global_guid));
    vars.write("BootNext", efi_global_guid, efi_attr_nv_bs_rt, {0x03, 0x00});
    // efivarfs' file format: attributes (LE32) then the data.
    EXPECT_EQ(read_file(s / ("BootNext-" + std::string(efi_global_guid))), std::string("\x07\x00\x00\x00\x03\x00", 6));
    auto v = vars.read("BootNext", efi_global_guid);
    ASSERT_TRUE(v);
    EXPECT_EQ(v->attributes, 7u);
    EXPECT_EQ(v->data, (std::vector<uint8_t>{3, 0}));
    vars.write("BootNext", efi_global_guid, efi_attr_nv_bs_rt, {0x01});  // shorter: replaced, not overlaid
    EXPECT_EQ(vars.read("BootNext", efi_global_guid)->data, std::vector<uint8_t>{1});
    vars.write("CairnBootFailure", cairn_vendor_guid, efi_attr_nv_bs_rt, {'x'});
    EXPECT_EQ(vars.list(efi_global_guid), std::vector<std::string>{"BootNext"});
    EXPECT_EQ(vars.list(cairn_vendor_guid), std::vector<std::string>{"CairnBootFailure"});
    vars.remove("BootNext", efi_global_guid);
    vars.remove("BootNext", efi_global_guid);  // already gone: fine
    EXPECT_FALSE(vars.read("BootNext", efi_global_guid));
}

TEST(EfiVars, NamesTheVariableOnErrors) {
    Scratch s;
    write_text(s / ("Broken-" + std::string(efi_global_guid)), "ab");
    EfiVars vars(s.path());
    expect_error([&] { vars.read("Broken", efi_global_guid); }, {"UEFI variable Broken", "shorter than its attributes"});
    EfiVars missing(s / "nowhere");
    expect_error([&] { missing.write("BootNext", efi_global_guid, 7, {1, 0}); }, {"BootNext"});
}
