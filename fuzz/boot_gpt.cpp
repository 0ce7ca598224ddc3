// The primary GPT as cairn-init reads it to choose the boot disk and its partitions (no
// libfdisk: partitions/disk.cpp's own parser), then every role looked up on it. The input is the
// start of a disk: LBA 0 to the end of the entry array.
#include "fuzz/fuzz.hpp"
#include "partitions/disk.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::partitions;
    for (uint64_t sector_size : {512u, 4096u}) {
        cairn::fuzz::expect_only_errors([&] {
            DiskTable t = parse_primary_gpt(data, size, sector_size, "fuzz");
            for (Role role : {Role::Esp, Role::Root, Role::RootVerity})
                for (char slot : {'a', 'b'}) (void)find_role(t, role, slot, "fuzz");
            (void)find_role(t, Role::Data, 0, "fuzz");
            (void)find_role(t, Role::Log, 0, "fuzz");
        });
    }
    return 0;
}
