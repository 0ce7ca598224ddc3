// dpkg's status file of the staged tree (written by dpkg from the packages' control files), which
// the SBOM reads for sources and dependencies.
#include "fuzz/fuzz.hpp"
#include "imager/dpkg.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] { (void)cairn::imager::parse_dpkg_status(cairn::fuzz::text(data, size), "status"); });
    return 0;
}
