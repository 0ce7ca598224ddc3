// The head of an HTTP request as Cairn's HTTPS server (cairn-dps, cairn-verifier) reads it off a connection.
#include "fuzz/fuzz.hpp"
#include "http/server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::http;
    std::string_view input = cairn::fuzz::text(data, size);
    HttpRequest request;
    if (!parse_request_head(input.substr(0, input.find("\r\n\r\n")), request)) return 0;
    cairn::fuzz::expect_only_errors([&] { decode_request_target(request); });
    return 0;
}
