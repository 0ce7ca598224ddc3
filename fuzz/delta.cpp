// A delta file (updater/delta.hpp) as cairn-updated reads it from a server that may lie: the header,
// the table, and a frame decoded against a base. Nothing in it is signed; every byte it gives is
// checked later, but the parsing and the decoding must hold whatever the server sends.
#include "fuzz/fuzz.hpp"
#include "updater/delta.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::updater;
    const std::string_view in = cairn::fuzz::text(data, size);
    cairn::fuzz::expect_only_errors([&] {
        // As a whole file: header, then the table it announces.
        const uint64_t table = decode_delta_header(in, "fuzz.delta");
        if (delta_header_size + table > in.size()) return;
        const DeltaTable t = DeltaTable::parse(in.substr(delta_header_size, table), "fuzz.delta");
        (void)t.to_json();
        (void)t.of("root");
    });
    cairn::fuzz::expect_only_errors([&] {
        // As a frame: decoded against a small base, as a section of one segment.
        static const std::string base = [] {
            std::string b(64 << 10, '\0');
            for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>(i * 7 % 251);
            return b;
        }();
        DeltaSection s;
        s.payload = "root";
        s.size = 1 << 20;
        s.base_size = base.size();
        s.bytes = in.size();
        (void)decode_section(s, base, in, "fuzz.frame");
        s.size = 4096;
        (void)decode_section(s, base, in, "fuzz.frame");
    });
    return 0;
}
