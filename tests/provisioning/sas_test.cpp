#include "provisioning/sas.hpp"

#include <gtest/gtest.h>

#include "common/encoding.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;

TEST(Sas, TokenMatchesAReferenceHmac) {
    // Reference from Python: hmac.new(b'secret', quote(sr, safe='') + '\n' + se, sha256), base64.
    const std::string token = make_sas_token(sas_resource("0NE00000001", "device-1"), 1700000000, key_signer("secret"));
    EXPECT_EQ(token, "SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fdevice-1&sig=" +
                         url_encode("MDjWA3uN/DUwnbhm5ehNfmPDBUxkLtcn0g40xwtvheo=") + "&se=1700000000&skn=registration");
    SasToken parsed = parse_sas_token(token);
    EXPECT_EQ(parsed.resource, "0ne00000001/registrations/device-1");
    EXPECT_EQ(parsed.signature, "MDjWA3uN/DUwnbhm5ehNfmPDBUxkLtcn0g40xwtvheo=");
    EXPECT_EQ(parsed.expiry, 1700000000);
    EXPECT_EQ(parsed.key_name.value_or(""), "registration");
    EXPECT_TRUE(sas_signature_matches(parsed, "secret"));
    EXPECT_FALSE(sas_signature_matches(parsed, "Secret"));
}

TEST(Sas, TokenWithoutKeyNameIsAccepted) {
    const std::string token = make_sas_token("scope/registrations/d", 42, key_signer("k"), "");
    EXPECT_EQ(token.find("skn"), std::string::npos);
    SasToken parsed = parse_sas_token(token);
    EXPECT_FALSE(parsed.key_name);
    EXPECT_TRUE(sas_signature_matches(parsed, "k"));
}

TEST(Sas, ForgedOrMalformedTokens) {
    SasToken parsed = parse_sas_token(make_sas_token("s/registrations/d", 42, key_signer("k")));
    parsed.expiry_text = "43";  // a changed expiry breaks the signature
    EXPECT_FALSE(sas_signature_matches(parsed, "k"));
    cairn::test::expect_error([] { parse_sas_token("Bearer abc"); }, {"SharedAccessSignature"});
    cairn::test::expect_error([] { parse_sas_token("SharedAccessSignature sr=a&sig=b"); }, {"no se"});
    cairn::test::expect_error([] { parse_sas_token("SharedAccessSignature sr=a&sig=b&se=12x"); }, {"se '12x'"});
    cairn::test::expect_error([] { parse_sas_token("SharedAccessSignature sr=a&sig=b&se=1&foo=2"); }, {"unknown field 'foo'"});
}

TEST(Sas, GroupDeviceKeyDerivation) {
    // Reference from Python: base64(hmac(b64decode(group key), b'device-1', sha256)).
    EXPECT_EQ(derive_device_key("Z3JvdXAta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2", "device-1"), "jIZSDYBb6P8Lu495KDgtKTQpjbvGtPSVIyGJyHKcPU0=");
    cairn::test::expect_error([] { derive_device_key("not base64!", "d"); }, {"group key"});
}
