// ELF headers, PT_INTERP and PT_DYNAMIC of a host program (the imager copies programs and their libraries).
#include "fuzz/fuzz.hpp"
#include "imager/elf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::MemFile file(data, size);
    cairn::fuzz::expect_only_errors([&] { (void)cairn::elf::read_info(file.path()); });
    return 0;
}
