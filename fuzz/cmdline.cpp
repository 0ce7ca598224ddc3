// The kernel command line as cairn-init reads it from /proc/cmdline.
#include "fuzz/fuzz.hpp"
#include "initrd/boot.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] { (void)cairn::initrd::parse_cmdline(std::string(cairn::fuzz::text(data, size))); });
    return 0;
}
