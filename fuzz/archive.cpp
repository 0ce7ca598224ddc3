// Archives unpacked into an image's root tree (tar in any dialect and compression; other formats
// are refused): the recipe's tar steps and a .deb's data member go through extract_into.
#include <filesystem>

#include "fuzz/fuzz.hpp"
#include "imager/archive.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::imager;
    static const std::filesystem::path scratch = std::filesystem::temp_directory_path();
    cairn::TempDir staging(scratch, "cairn-fuzz-archive-");
    cairn::fuzz::expect_only_errors([&] {
        ArchiveReader a = new_archive_reader();
        if (archive_read_open_memory(a.get(), data, size) != ARCHIVE_OK)
            cairn::fail("fuzz: " + archive_error(a.get()));
        Tree tree(staging.path() / "root");
        (void)extract_into(a.get(), tree, ExtractOptions{}, "fuzz.tar");
    });
    return 0;
}
