#include "provisioning/config.hpp"

#include <gtest/gtest.h>

#include "tests/support/test_support.hpp"

using namespace cairn::provisioning;

class ConfigTest : public ::testing::Test {
protected:
    cairn::test::Scratch scratch;
    ProvisioningConfig parse(const std::string& text) { return parse_config(text, "/etc/cairn/config.toml"); }
};

TEST_F(ConfigTest, TpmWithIdentityServiceKeys) {
    auto c = parse(R"(
auto_reprovisioning_mode = "AlwaysOnStartup"
[provisioning]
source = "dps"
global_endpoint = "https://dps.example:8443/"
id_scope = "0ne00000001"
[provisioning.attestation]
method = "tpm"
[tpm]
tcti = "swtpm:port=2321"
auth_key_index = "0x00_01_02"
[tpm.hierarchy_authorization]
owner = "o"
[updates]
anything = "belongs to another program"
)");
    EXPECT_EQ(c.method, AttestationMethod::Tpm);
    EXPECT_EQ(c.mode, ReprovisioningMode::AlwaysOnStartup);
    EXPECT_EQ(c.global_endpoint, "https://dps.example:8443/");
    EXPECT_EQ(c.tpm.tcti, "swtpm:port=2321");
    EXPECT_EQ(c.tpm.auth_key_handle, 0x81000102u);
    EXPECT_EQ(c.tpm.owner_auth, "o");
    EXPECT_EQ(c.registration_id, "");
}

TEST_F(ConfigTest, SymmetricKeyAndX509WithFiles) {
    cairn::test::write_text(scratch / "key", "a2V5LWJ5dGVz\n");
    cairn::test::write_text(scratch / "cert.pem", "x");
    cairn::test::write_text(scratch / "payload.json", R"({"modelId":"m"})");
    auto c = parse("[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\npayload = { uri = \"file://" + (scratch / "payload.json").string() +
                   "\" }\nauto_reprovisioning_mode = \"OnErrorOnly\"\n[provisioning.attestation]\nmethod = \"symmetric_key\"\nregistration_id = \"d1\"\n"
                   "symmetric_key = { uri = \"file://" + (scratch / "key").string() + "\" }\n");
    EXPECT_EQ(c.symmetric_key, "a2V5LWJ5dGVz");
    EXPECT_EQ(c.mode, ReprovisioningMode::OnErrorOnly);
    EXPECT_EQ((*c.payload)["modelId"], "m");
    c = parse("trust_bundle_cert = \"file://" + (scratch / "cert.pem").string() + "\"\n[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\n"
              "[provisioning.attestation]\nmethod = \"x509\"\nidentity_cert = \"file://" + (scratch / "cert.pem").string() +
              "\"\nidentity_pk = \"file://" + (scratch / "cert.pem").string() + "\"\n");
    EXPECT_EQ(c.method, AttestationMethod::X509);
    EXPECT_EQ(c.trust_bundle, scratch / "cert.pem");
    auto client = client_config(c);
    EXPECT_EQ(client.identity_cert, scratch / "cert.pem");
    EXPECT_EQ(client.timeout_ms, 70000);
}

TEST_F(ConfigTest, MistakesNameTheKey) {
    const std::string head = "[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\n[provisioning.attestation]\n";
    cairn::test::expect_error([&] { parse(head + "method = \"tpm\"\nregistraton_id = \"x\"\n"); },
                              {"config.toml:6", "provisioning.attestation.registraton_id", "unknown key"});
    // Cairn's own table: the hub check.
    EXPECT_TRUE(parse(head + "method = \"tpm\"\n").hub_check);
    auto hub = parse(head + "method = \"tpm\"\n[cairn.hub]\ncheck = false\nendpoint = \"https://hub.example/\"\n");
    EXPECT_FALSE(hub.hub_check);
    EXPECT_EQ(hub.hub_endpoint, "https://hub.example/");
    cairn::test::expect_error([&] { parse(head + "method = \"tpm\"\n[cairn.hub]\nendpoint = \"http://hub\"\n"); },
                              {"cairn.hub.endpoint", "not an https:// URL"});
    cairn::test::expect_error([&] { parse(head + "method = \"tpm\"\n[cairn.hub]\ncheck = \"yes\"\n"); }, {"cairn.hub.check"});
    cairn::test::expect_error([&] { parse(head + "method = \"tpm\"\n[cairn.hub]\nendpont = \"x\"\n"); }, {"cairn.hub.endpont", "unknown key"});
    cairn::test::expect_error([&] { parse(head + "method = 3\n"); }, {"provisioning.attestation.method", "must be a string"});
    cairn::test::expect_error([&] { parse(head + "method = \"psk\"\n"); }, {"'psk' is not tpm, x509 or symmetric_key"});
    cairn::test::expect_error([&] { parse(head + "method = \"x509\"\nidentity_cert = \"file:///nonexistent.pem\"\n"); },
                              {"provisioning.attestation.identity_cert", "no such file: /nonexistent.pem"});
    cairn::test::expect_error([&] { parse(head + "method = \"x509\"\nidentity_cert = \"pkcs11:slot-id=0;object=id\"\n"); },
                              {"identity_cert", "PKCS#11 URIs are not supported yet"});
    cairn::test::expect_error([&] { parse(head + "method = \"symmetric_key\"\nregistration_id = \"d\"\nsymmetric_key = { value = \"!!\" }\n"); },
                              {"symmetric_key", "not a base64 key"});
    cairn::test::expect_error([&] { parse(head + "method = \"symmetric_key\"\nsymmetric_key = { value = \"a2V5\" }\n"); },
                              {"registration_id", "required for symmetric_key"});
    cairn::test::expect_error([&] { parse("[provisioning]\nsource = \"dps\"\n"); }, {"provisioning.id_scope", "missing"});
    cairn::test::expect_error([&] { parse("[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\nauto_reprovisioning_mode = \"Sometimes\"\n"); },
                              {"auto_reprovisioning_mode", "'Sometimes'"});
    cairn::test::expect_error([&] { parse("[provisioning\n"); }, {"config.toml:1"});
    cairn::test::expect_error([&] { parse(head + "method = \"tpm\"\n[tpm]\nauth_key_index = \"zz\"\n"); }, {"tpm.auth_key_index"});
    cairn::test::expect_error([&] { parse("x = 1\n"); }, {"[provisioning] table is required"});
    EXPECT_EQ(parse("[provisioning]\nsource = \"none\"\n").source, "none");
    EXPECT_EQ(file_uri_path("file:///var/secrets/a%20b", "k"), "/var/secrets/a b");
}

// With source = "none" the rest of the file still counts: [tpm] is read (tpm-info on a factory
// station reaches a non-default TPM) and every table is checked as for dps.
TEST_F(ConfigTest, SourceNoneStillReadsAndChecksTheWholeFile) {
    ProvisioningConfig c = parse("[provisioning]\nsource = \"none\"\n[tpm]\ntcti = \"swtpm:port=2321\"\nauth_key_index = \"0x00_01_02\"\n"
                                 "[tpm.hierarchy_authorization]\nendorsement = \"e\"\n[cairn.hub]\ncheck = false\n");
    EXPECT_EQ(c.source, "none");
    EXPECT_EQ(c.tpm.tcti, "swtpm:port=2321");
    EXPECT_EQ(c.tpm.auth_key_handle, 0x81000102u);
    EXPECT_EQ(c.tpm.endorsement_auth, "e");
    EXPECT_FALSE(c.hub_check);
    const std::string none = "[provisioning]\nsource = \"none\"\n";
    cairn::test::expect_error([&] { parse(none + "[tpm]\ntcti = 5\n"); }, {"tpm.tcti"});
    cairn::test::expect_error([&] { parse(none + "[tpm]\nfrobnicate = 1\n"); }, {"tpm", "frobnicate"});
    cairn::test::expect_error([&] { parse(none + "[tpm]\nauth_key_index = \"zz\"\n"); }, {"tpm.auth_key_index"});
    cairn::test::expect_error([&] { parse(none + "[cairn.hub]\nendpoint = \"http://x\"\n"); }, {"cairn.hub.endpoint"});
    cairn::test::expect_error([&] { parse(none + "id_scope = 7\n"); }, {"provisioning.id_scope"});
    cairn::test::expect_error([&] { parse(none + "global_endpoint = \"http://x\"\n"); }, {"provisioning.global_endpoint"});
    cairn::test::expect_error([&] { parse(none + "[provisioning.attestation]\nmethod = \"carrier-pigeon\"\n"); }, {"provisioning.attestation.method"});
    cairn::test::expect_error([&] { parse("[provisioning]\nsource = \"nowhere\"\n"); }, {"provisioning.source", "'nowhere'"});
}

// Found by fuzz/config: a file name the kernel refuses (ENAMETOOLONG) threw filesystem_error.
TEST_F(ConfigTest, FileNameTooLongIsAnErrorNamingTheKey) {
    const std::string long_name = "file:///etc/" + std::string(300, 'x') + "/ca.pem";
    cairn::test::expect_error([&] { parse("trust_bundle_cert = \"" + long_name + "\"\n[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\n"); },
                              {"config.toml:1", "trust_bundle_cert", "no such file"});
    cairn::test::expect_error([&] {
        parse("[provisioning]\nsource = \"dps\"\nid_scope = \"s\"\npayload = { uri = \"" + long_name + "\" }\n[provisioning.attestation]\nmethod = \"tpm\"\n");
    }, {"provisioning.payload.uri", "no such file"});
}
