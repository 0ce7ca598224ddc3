#include "updater/load_option.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace cairn::updater;

namespace {
std::vector<uint8_t> bytes(std::initializer_list<int> list) {
    std::vector<uint8_t> out;
    for (int b : list) out.push_back(static_cast<uint8_t>(b));
    return out;
}
}  // namespace

// Byte by byte against the UEFI specification's layout.
TEST(LoadOption, EncodesAHardDriveFilePathEntryExactly) {
    LoadOption o;
    o.description = "A";
    o.partition = Uuid::parse("01234567-89ab-cdef-0011-223344556677", "t");
    o.partition_number = 1;
    o.start_lba = 2048;
    o.size_lba = 131072;
    o.file = "\\X";
    std::vector<uint8_t> expected = bytes({
        0x01, 0x00, 0x00, 0x00,                    // attributes: LOAD_OPTION_ACTIVE
        0x3a, 0x00,                                // FilePathListLength: 42 + 10 + 4 = 56 = 0x38? see below
    });
    std::vector<uint8_t> got = encode_load_option(o);
    // FilePathListLength = HD node (42) + file node (4 + 2 * 3) + end node (4) = 56.
    expected[4] = 56;
    std::vector<uint8_t> rest = bytes({
        'A', 0, 0, 0,                                                    // description "A" in UCS-2 + NUL
        0x04, 0x01, 42, 0,                                               // media / hard drive, length 42
        1, 0, 0, 0,                                                      // partition number
        0x00, 0x08, 0, 0, 0, 0, 0, 0,                                    // start LBA 2048
        0x00, 0x00, 0x02, 0, 0, 0, 0, 0,                                 // size 131072
        0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd,                  // GUID, mixed endian
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
        0x02, 0x02,                                                      // GPT, GUID signature
        0x04, 0x04, 10, 0, '\\', 0, 'X', 0, 0, 0,                        // media / file path "\X"
        0x7f, 0xff, 0x04, 0x00,                                          // end of path
    });
    expected.insert(expected.end(), rest.begin(), rest.end());
    EXPECT_EQ(got, expected);
    LoadOption back = decode_load_option(got, "Boot0001");
    EXPECT_EQ(back.description, "A");
    EXPECT_EQ(back.partition, o.partition);
    EXPECT_EQ(back.partition_number, 1u);
    EXPECT_EQ(back.start_lba, 2048u);
    EXPECT_EQ(back.size_lba, 131072u);
    EXPECT_EQ(back.file, "\\X");
}

TEST(LoadOption, ReadsForeignEntriesAndRefusesTruncatedOnes) {
    // A firmware entry with a PCI node and no hard drive node.
    std::vector<uint8_t> foreign = bytes({1, 0, 0, 0, 10, 0, 'U', 0, 0, 0, 0x01, 0x01, 6, 0, 0, 1, 0x7f, 0xff, 4, 0});
    LoadOption o = decode_load_option(foreign, "Boot0000");
    EXPECT_EQ(o.description, "U");
    EXPECT_FALSE(o.partition);
    EXPECT_EQ(o.file, "");
    LoadOption full;
    full.description = "Cairn slot A";
    full.partition = Uuid::parse("01234567-89ab-cdef-0011-223344556677", "t");
    full.file = "\\EFI\\BOOT\\BOOTX64.EFI";
    std::vector<uint8_t> b = encode_load_option(full);
    for (size_t cut : {size_t(3), size_t(10), b.size() - 30, b.size() - 1}) {
        std::vector<uint8_t> t(b.begin(), b.begin() + static_cast<long>(cut));
        expect_error([&] { decode_load_option(t, "Boot0007"); }, {"Boot0007"});
    }
}

TEST(LoadOption, BootVariableNames) {
    EXPECT_EQ(boot_variable_name(0x1a), "Boot001A");
    EXPECT_EQ(boot_variable_number("Boot001A"), 0x1a);
    EXPECT_FALSE(boot_variable_number("BootOrder"));
    EXPECT_FALSE(boot_variable_number("Boot001a"));
}
