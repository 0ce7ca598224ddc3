// A Debian package: the ar container, control.tar's control file and data.tar into a root tree.
#include <filesystem>

#include "fuzz/fuzz.hpp"
#include "imager/deb.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::imager;
    static const std::filesystem::path scratch = std::filesystem::temp_directory_path();
    cairn::fuzz::MemFile file(data, size);
    cairn::TempDir staging(scratch, "cairn-fuzz-deb-");
    cairn::fuzz::expect_only_errors([&] {
        Tree tree(staging.path() / "root");
        (void)extract_deb(file.path(), tree, ExtractOptions{});
    });
    return 0;
}
