// The firewall policy, /etc/cairn/firewall.toml. Links the firewall library alone (libnftnl, no OpenSSL).
#include "firewall/policy.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    cairn::fuzz::expect_only_errors([&] { (void)cairn::firewall::parse_policy(std::string(cairn::fuzz::text(data, size)), "/fuzz/firewall.toml"); });
    return 0;
}
