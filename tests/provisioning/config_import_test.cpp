#include "provisioning/config_import.hpp"

#include <gtest/gtest.h>

#include <sstream>

#include "common/file.hpp"
#include "provisioning/config.hpp"
#include "provisioning/config_cli.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::provisioning;

namespace {

// The shape of IoT Edge 1.1's config.yaml, other sections included.
const std::string tpm_yaml = R"(# IoT Edge 1.1
provisioning:
  source: "dps"
  global_endpoint: "https://global.azure-devices-provisioning.net"
  scope_id: "0ne00000A0A"   # the ID scope
  attestation:
    method: "tpm"
    registration_id: "edge-device-1"
  always_reprovision_on_startup: true
  dynamic_reprovisioning: false

agent:
  name: "edgeAgent"
  type: "docker"
  env:
    - name: "UpstreamProtocol"
      value: "AmqpWs"
  config:
    image: "mcr.microsoft.com/azureiotedge-agent:1.1"
    auth: {}

hostname: "edge-device-1"
connect:
  management_uri: "unix:///var/run/iotedge/mgmt.sock"
homedir: "/var/lib/iotedge"
)";

}  // namespace

TEST(ConfigImport, TpmWithItsModeAndTheRestIgnored) {
    std::string toml = import_iotedge_config(tpm_yaml, "/etc/iotedge/config.yaml");
    ProvisioningConfig c = parse_config(toml, "config.toml");
    EXPECT_EQ(c.source, "dps");
    EXPECT_EQ(c.global_endpoint, "https://global.azure-devices-provisioning.net");
    EXPECT_EQ(c.id_scope, "0ne00000A0A");
    EXPECT_EQ(c.method, AttestationMethod::Tpm);
    EXPECT_EQ(c.registration_id, "edge-device-1");
    EXPECT_EQ(c.mode, ReprovisioningMode::AlwaysOnStartup);
    EXPECT_NE(toml.find("Imported from /etc/iotedge/config.yaml"), std::string::npos);

    std::string dynamic = tpm_yaml;
    dynamic.replace(dynamic.find("dynamic_reprovisioning: false"), 29, "dynamic_reprovisioning: true");
    EXPECT_EQ(parse_config(import_iotedge_config(dynamic, "c.yaml"), "c.toml").mode, ReprovisioningMode::Dynamic);
    std::string neither = tpm_yaml;
    neither.replace(neither.find("always_reprovision_on_startup: true"), 35, "always_reprovision_on_startup: false");
    EXPECT_EQ(parse_config(import_iotedge_config(neither, "c.yaml"), "c.toml").mode, ReprovisioningMode::OnErrorOnly);
}

TEST(ConfigImport, SymmetricKeyX509AndTheOldestForm) {
    ProvisioningConfig c = parse_config(import_iotedge_config("provisioning:\n  source: dps\n  global_endpoint: 'https://dps.example'\n"
                                                              "  scope_id: 0ne1\n  attestation:\n    method: symmetric_key\n"
                                                              "    registration_id: dev-2\n    symmetric_key: \"a2V5LWJ5dGVz\"\n",
                                                              "c.yaml"),
                                        "c.toml");
    EXPECT_EQ(c.method, AttestationMethod::SymmetricKey);
    EXPECT_EQ(c.symmetric_key, "a2V5LWJ5dGVz");
    EXPECT_EQ(c.registration_id, "dev-2");

    test::Scratch dir;
    test::write_text(dir / "cert.pem", "x");
    test::write_text(dir / "key.pem", "x");
    test::write_text(dir / "ca.pem", "x");
    c = parse_config(import_iotedge_config("certificates:\n  trusted_ca_certs: \"file://" + (dir / "ca.pem").string() +
                                               "\"\nprovisioning:\n  source: dps\n  scope_id: s\n  attestation:\n    method: x509\n"
                                               "    identity_cert: \"file://" + (dir / "cert.pem").string() + "\"\n    identity_pk: \"file://" +
                                               (dir / "key.pem").string() + "\"\n",
                                           "c.yaml"),
                     "c.toml");
    EXPECT_EQ(c.method, AttestationMethod::X509);
    EXPECT_EQ(c.identity_cert, dir / "cert.pem");
    EXPECT_EQ(c.trust_bundle, dir / "ca.pem");

    c = parse_config(import_iotedge_config("provisioning:\n  source: dps\n  scope_id: s\n  registration_id: old-style\n", "c.yaml"), "c.toml");
    EXPECT_EQ(c.method, AttestationMethod::Tpm);
    EXPECT_EQ(c.registration_id, "old-style");
}

TEST(ConfigImport, WhatCannotBeCarriedOverIsNamed) {
    test::expect_error([] { import_iotedge_config("provisioning:\n  source: \"manual\"\n  device_connection_string: \"x\"\n", "c.yaml"); },
                       {"c.yaml:2: provisioning.source", "'manual'", "DPS only"});
    test::expect_error([] { import_iotedge_config("provisioning:\n  source: dps\n", "c.yaml"); }, {"provisioning.scope_id: missing"});
    test::expect_error([] { import_iotedge_config("provisioning:\n  source: dps\n  scope_id: s\n  attestation:\n    method: psk\n", "c.yaml"); },
                       {"c.yaml:5: provisioning.attestation.method", "'psk' is not tpm, x509 or symmetric_key"});
    test::expect_error([] { import_iotedge_config("provisioning:\n\tsource: dps\n", "c.yaml"); }, {"c.yaml:2", "tab"});
    test::expect_error([] { import_iotedge_config("hostname: x\n", "c.yaml"); }, {"provisioning: missing"});
    test::expect_error([] { import_iotedge_config("provisioning:\n  source dps\n", "c.yaml"); }, {"c.yaml:2", "expected 'key: value'"});
}

TEST(ConfigImport, TheCommandKeepsAnExistingFileUnlessForced) {
    test::Scratch dir;
    test::write_text(dir / "config.yaml", tpm_yaml);
    auto import = [&](std::vector<std::string> extra, std::string* err = nullptr) {
        std::vector<std::string> args = {"import", "-i", (dir / "config.yaml").string(), "-o", (dir / "config.toml").string()};
        args.insert(args.end(), extra.begin(), extra.end());
        std::ostringstream o, e;
        int rc = config_command(args, o, e);
        if (err) *err = e.str();
        return rc;
    };
    EXPECT_EQ(import({}), 0);
    EXPECT_EQ(parse_config(read_file(dir / "config.toml"), dir / "config.toml").registration_id, "edge-device-1");
    test::write_text(dir / "config.toml", "mine\n");
    std::string err;
    EXPECT_EQ(import({}, &err), 1);
    EXPECT_NE(err.find("exists (--force overwrites it)"), std::string::npos) << err;
    EXPECT_EQ(read_file(dir / "config.toml"), "mine\n");
    EXPECT_EQ(import({"--force"}), 0);
    EXPECT_NE(read_file(dir / "config.toml").find("[provisioning.attestation]"), std::string::npos);
}
