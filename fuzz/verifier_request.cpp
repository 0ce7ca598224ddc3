// Whole requests to cairn-verifier (device and admin paths): an HTTP head parsed as the server
// parses it, the rest as the body, handed to VerifierService::handle with its state in memory.
// One device ("dev1") is enrolled with a real RSA EK (tpm2_createek's, the quote target's corpus),
// so AK binding reaches credential making; the admin token is known ("Bearer fuzz"). Evidence
// stops at the nonce check (the fuzzer cannot guess a random nonce): the judgement behind it has
// targets of its own (eventlog, quote, reference).
#include "attestation/verifier_service.hpp"
#include "common/hash.hpp"
#include "fuzz/fuzz.hpp"
#include "http/server.hpp"

namespace {

const char* ek_hex =
    "013a0001000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa00060080"
    "004300100800000000000100b83f3c4dbb5b053de61ca8d2d951f11ad711892ee6f596d836aecfa026864fcf7eb862fc"
    "dcd099dca03d7546d702b7a852cf2b65df6866d0d2369132735506a0487fb75674ba6a20af5a7b23ef71d263a10c30f1"
    "4dfb976c07f1afdae2df8c2382585c23f511a3e660478ab7a1bc8fb84963e02e6d8d0d326b9f2bed46e70d9bc2c99a5f"
    "5858fe03c1d37c44485fe253a2c280f18542e62a20506ca129dca35c7551fcff87f9f032b6d83265ba488b4265347935"
    "84d5b71e6974cb5849a39ab2a73cecbac2ef0d586285532ba67829d96283a16317ae7502d8c590505bdce321c0d550bc"
    "d03e500365d3e6fb6174ae87716d9e2225c5596f29f2c743ed568477";

std::string ek_public() {
    const auto v = cairn::from_hex(ek_hex, "ek");
    return std::string(v.begin(), v.end());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace cairn::attestation;
    static const std::string ek = ek_public();
    std::string_view input = cairn::fuzz::text(data, size);
    size_t end = input.find("\r\n\r\n");
    cairn::http::HttpRequest request;
    if (!cairn::http::parse_request_head(input.substr(0, end), request)) return 0;
    request.body = end == std::string_view::npos ? "" : input.substr(end + 4);
    cairn::fuzz::expect_only_errors([&] {
        cairn::http::decode_request_target(request);
        VerifierConfig config;
        config.state = ":memory:";
        config.update_ca = "/nonexistent/update-ca.pem";
        config.admin_token = "fuzz";
        VerifierService service(config);
        service.enroll("dev1", ek);
        (void)service.handle(request);
        // A second request against the state the first one left (a challenge, a nonce, an enrolment).
        (void)service.handle(request);
    });
    return 0;
}
