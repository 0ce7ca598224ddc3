// A disk image's GUID Partition Table, read through libfdisk (the input is the whole disk image).
#include "fuzz/fuzz.hpp"
#include "partitions/gpt.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::MemFile file(data, size);
    cairn::fuzz::expect_only_errors([&] { (void)cairn::partitions::read_gpt(file.path()); });
    return 0;
}
