// A package's /usr/share/doc/PKG/copyright (Debian's machine-readable DEP-5 format), which the SBOM
// reads from the staged tree: its License expressions mapped to SPDX.
#include "fuzz/fuzz.hpp"
#include "imager/sbom.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] {
        auto info = cairn::imager::sbom::parse_copyright(cairn::fuzz::text(data, size));
        // Whatever it found must make a document.
        cairn::imager::sbom::Bom bom;
        bom.image = {"fuzz", "1", "0", 0, "0", ""};
        cairn::imager::sbom::DebPackage package;
        package.name = "fuzz";
        package.version = "1";
        package.architecture = "all";
        package.license = info;
        bom.packages.push_back(package);
        (void)cairn::imager::sbom::to_cyclonedx_text(bom);
    });
    return 0;
}
