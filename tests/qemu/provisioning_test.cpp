// Zero-touch provisioning in an image Cairn builds (CTest label `qemu`): the agent in the guest
// registers through the VM's TPM (swtpm) with cairn-dps running on the host, reached over QEMU's
// user network (10.0.2.2), with real TLS; the identity is kept across a reboot without asking the
// service again, unless the mode is AlwaysOnStartup.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/provisioning/dps_fixture.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The line after `label`.
std::string line_after(const std::string& text, const std::string& label) {
    size_t at = text.find(label);
    if (at == std::string::npos) throw std::runtime_error("no '" + label + "' in: " + text);
    size_t begin = text.find('\n', at) + 1;
    size_t end = text.find_first_of("\r\n", begin);
    return text.substr(begin, end - begin);
}

// Hub checks the simulated hub answered with `status`.
size_t hub_checks(const DpsFixture& dps, int status) {
    size_t n = 0;
    for (const json& r : dps.requests())
        if (r.value("path", "").rfind("/devices/", 0) == 0 && r.value("status", 0) == status) ++n;
    return n;
}

size_t device_registrations(const DpsFixture& dps) {
    size_t n = 0;
    for (const json& r : dps.requests())
        if (r.value("method", "") == "PUT") ++n;
    return n;
}

}  // namespace

TEST(Provisioning, TheAgentProvisionsThroughTheVmsTpmAndKeepsItsIdentity) {
    Scratch dir;
    DpsFixture dps(dir / "dps", json{{"enrollments", json::array()}});

    // What the operator gives the device: config.toml and the service's CA, on a read-only disk.
    fs::create_directories(dir / "give");
    fs::copy_file(dps.trust_bundle(), dir / "give/dps-ca.pem");
    auto config = [&](const std::string& mode) {
        return "trust_bundle_cert = \"file:///etc/cairn/dps-ca.pem\"\n[provisioning]\nsource = \"dps\"\n"
               "global_endpoint = \"https://10.0.2.2:" + std::to_string(dps.port()) + "/\"\nid_scope = \"" + dps_scope + "\"\n"
               "auto_reprovisioning_mode = \"" + mode + "\"\n[provisioning.attestation]\nmethod = \"tpm\"\n[tpm]\ntcti = \"device:/dev/tpmrm0\"\n"
               "[cairn.hub]\nendpoint = \"https://10.0.2.2:" + std::to_string(dps.port()) + "/\"\n";  // cairn-dps plays the hub
    };
    write_text(dir / "give/config.toml", config("Dynamic"));
    write_text(dir / "give/always.toml", config("AlwaysOnStartup"));
    run_checked({"tar", "-cf", (dir / "give.tar").string(), "-C", (dir / "give").string(), "config.toml", "always.toml", "dps-ca.pem"});

    Booted b("minimal-debug");
    b.drives = {dir / "give.tar"};
    const uint16_t ssh_port = free_port();
    b.forwards = {{ssh_port, 22}};
    qemu::Machine& m = b.start();
    wait_for_shell(m);
    m.wait_for("cairn: network eth0", 120s);
    wait_for_sshd(m);

    // The factory step: read the TPM's registration ID and endorsement key over SSH, as a factory
    // station would, and enroll them.
    RunResult tpm_info = run(ssh_command(ssh_port, {"-i", test_private_key(dir.path(), "ssh-admin").string()}, "cairnctl provision tpm-info"));
    ASSERT_EQ(tpm_info.exit_code, 0) << tpm_info.err;
    const std::string info = tpm_info.out;
    const std::string registration_id = line_after(info, "Registration Id:");
    const std::string ek = line_after(info, "Endorsement Key:");
    ASSERT_FALSE(registration_id.empty()) << info;
    auto reply = dps.admin("PUT", "/admin/enrollments/" + registration_id,
                           json{{"attestation", {{"type", "tpm"}, {"tpm", {{"endorsementKey", ek}}}}}}.dump());
    ASSERT_LT(reply.status, 300) << reply.body;
    EXPECT_EQ(device_registrations(dps), 0u);

    // A bad config is refused with its key named, and changes nothing.
    std::string out = shell(m, "printf '[provisioning]\\nsource = \"dps\"\\nid_scop = \"x\"\\n' > /tmp/bad.toml; "
                               "cairnctl config apply -c /tmp/bad.toml; echo exit=$?; ls /etc/cairn/config.toml");
    EXPECT_NE(out.find("provisioning.id_scop: unknown key"), std::string::npos) << out;
    EXPECT_NE(out.find("exit=1"), std::string::npos) << out;
    EXPECT_NE(out.find("No such file"), std::string::npos) << out;

    // The real one: applied, and the agent provisions through the TPM.
    size_t from = m.console().size();
    out = shell(m, "mkdir -p /tmp/give && tar -xf /dev/vdb -C /tmp/give && cp /tmp/give/dps-ca.pem /etc/cairn/ && "
                   "cairnctl config apply -c /tmp/give/config.toml; echo exit=$?");
    EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
    EXPECT_NE(out.find("provisions again with it"), std::string::npos) << out;
    m.wait_for_after("cairn: provisioning done", from, 300s);
    out = shell(m, "cairnctl provision status");
    EXPECT_NE(out.find("State: Provisioned"), std::string::npos) << out;
    EXPECT_NE(out.find("Device ID: " + registration_id), std::string::npos) << out;
    EXPECT_NE(out.find("Hub: hub-"), std::string::npos) << out;
    size_t registrations = device_registrations(dps);
    EXPECT_GE(registrations, 2u) << "a TPM registration is two PUTs (the challenge, then with the SAS token)";

    // After a reboot the agent keeps the stored identity: the service hears nothing.
    from = m.console().size();
    m.send("sync; reboot -f\n");
    size_t ready = m.wait_for_after("cairn: ready", from, 300s);
    m.wait_for_after("cairn: provisioning done", ready, 300s);
    wait_for_shell(m, from);
    out = shell(m, "cairnctl provision status");
    EXPECT_NE(out.find("State: Provisioned"), std::string::npos) << out;
    EXPECT_NE(out.find("Device ID: " + registration_id), std::string::npos) << out;
    EXPECT_EQ(device_registrations(dps), registrations) << "the agent registered again after a reboot";
    EXPECT_EQ(hub_checks(dps, 204), 1u) << "Dynamic mode asks the hub, with a SAS token signed inside the TPM";

    // The hub disables the device: at the next start, Dynamic mode registers again.
    auto disabled = dps.admin("PUT", "/admin/devices/" + registration_id, json{{"hubStatus", "disabled"}}.dump());
    ASSERT_EQ(disabled.status, 200) << disabled.body;
    from = m.console().size();
    m.send("sync; reboot -f\n");
    ready = m.wait_for_after("cairn: ready", from, 300s);
    m.wait_for_after("cairn: provisioning done", ready, 300s);
    wait_for_shell(m, from);
    EXPECT_EQ(hub_checks(dps, 403), 1u);
    EXPECT_GT(device_registrations(dps), registrations) << "the hub refused the device, but it did not register again";
    registrations = device_registrations(dps);

    // Unless the mode is AlwaysOnStartup: then every start registers (the apply, then the reboot).
    from = m.console().size();
    out = shell(m, "mkdir -p /tmp/give && tar -xf /dev/vdb -C /tmp/give && cairnctl config apply -c /tmp/give/always.toml; echo exit=$?");
    EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
    m.wait_for_after("cairn: provisioning done", from, 300s);
    const size_t after_apply = device_registrations(dps);
    EXPECT_GT(after_apply, registrations) << "AlwaysOnStartup did not register";
    from = m.console().size();
    m.send("sync; reboot -f\n");
    ready = m.wait_for_after("cairn: ready", from, 300s);
    m.wait_for_after("cairn: provisioning done", ready, 300s);
    EXPECT_GT(device_registrations(dps), after_apply) << "AlwaysOnStartup did not register after the reboot";
}
