// `cairnctl config import`: an IoT Edge 1.1 config.yaml's provisioning settings as Cairn's
// config.toml (the [provisioning] schema of the IoT Identity Service, which Cairn reads).
#pragma once

#include <filesystem>
#include <string>

namespace cairn::provisioning {

// Turns the text of an IoT Edge 1.1 config.yaml (`file` names it in errors) into config.toml text.
// Reads `provisioning:` (source dps; global_endpoint; scope_id; attestation: method tpm |
// x509 | symmetric_key with registration_id, identity_cert, identity_pk, symmetric_key; a bare
// registration_id meaning TPM; always_reprovision_on_startup; dynamic_reprovisioning) and
// `certificates: trusted_ca_certs`. The mode is Dynamic when dynamic_reprovisioning is true, else
// AlwaysOnStartup when always_reprovision_on_startup is true, else OnErrorOnly. Other sections
// are ignored. Throws Error "<file>:<line>: <key>: <what>" for what it cannot carry over (manual
// or external provisioning, an unknown method, a missing scope_id, YAML it cannot read).
std::string import_iotedge_config(const std::string& yaml, const std::filesystem::path& file);

}  // namespace cairn::provisioning
