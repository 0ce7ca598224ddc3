// A multipart/byteranges answer (http/byteranges.hpp) from a bundle server: read in pieces as the
// network delivers it; every byte handed on must lie inside a part's Content-Range and the file.
#include "fuzz/fuzz.hpp"
#include "http/byteranges.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::http;
    if (size < 1) return 0;
    const size_t piece = data[0] % 64 + 1;  // the first byte chooses how the body is cut up
    const std::string_view body = cairn::fuzz::text(data + 1, size - 1);
    (void)parse_content_range(body.substr(0, 64));
    (void)byteranges_boundary(body.substr(0, 128));
    cairn::fuzz::expect_only_errors([&] {
        constexpr uint64_t total = 1 << 20;
        ByterangesReader reader("B", total, [&](uint64_t offset, const uint8_t*, size_t n) {
            if (offset + n > total || n == 0) __builtin_trap();
            return true;
        });
        for (size_t at = 0; at < body.size(); at += piece)
            if (!reader.feed(body.data() + at, std::min(piece, body.size() - at))) break;
    });
    return 0;
}
