// The device's programs against the real verifier: `cairnctl attest now` and `cairn-attestd`
// (attestation/agent_cli.cpp) talk to the `cairn-verifier` program over HTTPS, with the device's
// TPM a swtpm that holds a recorded QEMU boot's PCRs and the agent's own EK and AK (tpm/). Nothing
// in between is played: the AK binding by credential activation, the nonce, the quote, the
// signed reference document and the judgement are the programs' own.
#include <gtest/gtest.h>

#include "attestation/agent.hpp"
#include "common/encoding.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "http/client.hpp"
#include "tests/attestation/verifier_fixture.hpp"
#include "tests/support/pki.hpp"
#include "tpm/tpm.hpp"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

class AgentAndVerifier : public cairn::test::QuoteFixture {
protected:
    std::unique_ptr<cairn::test::TestPki> pki;
    std::unique_ptr<cairn::test::VerifierProgram> verifier;
    std::string ek_public;

    // The device's EK (made by our TPM code, as the agent would) enrolled as "dev1"; the verifier
    // started on a fresh state file.
    void SetUp() override {
        pki = std::make_unique<cairn::test::TestPki>(scratch / "pki");
        {
            cairn::tpm::Options options;
            options.tcti = swtpm.tcti();
            cairn::tpm::Tpm tpm(options);
            ek_public = tpm.endorsement_key();
        }
        cairn::write_file_atomic(scratch / "admin-token", "admin-token\n", 0600);
        cairn::write_file_atomic(scratch / "enrollments.json",
                                 json{{"devices", {{{"deviceId", "dev1"}, {"endorsementKey", cairn::base64_encode(ek_public)}}}}}.dump());
        start_verifier();
        const auto reference = cairn::test::signed_reference();
        cairn::write_file_atomic(scratch / "reference.json", reference.document);
        cairn::write_file_atomic(scratch / "reference.json.sig", reference.signature);
    }

    void start_verifier() {
        verifier = std::make_unique<cairn::test::VerifierProgram>(
            std::vector<std::string>{"--cert", (*pki / "server-chain.pem").string(), "--key", (*pki / "server.key").string(), "--update-ca",
                                     cairn::test::update_ca().string(), "--state", path("verifier.db"), "--admin-token-file",
                                     path("admin-token"), "--enrollments", path("enrollments.json")},
            scratch / "verifier.log");
        ASSERT_NE(verifier->port, 0);
    }

    // The agent's configuration file for a recorded boot's event log, pointing at the verifier's
    // port `port` (the current verifier's by default).
    fs::path agent_config(const std::string& boot, uint16_t port = 0) {
        cairn::write_file_atomic(scratch / "eventlog.bin", cairn::test::recorded_log(boot));
        const fs::path file = scratch / "attestation.toml";
        cairn::write_file_atomic(file, "verifier_url = \"https://localhost:" + std::to_string(port ? port : verifier->port) +
                                           "\"\ntrust_bundle = \"" + (*pki / "root.pem").string() + "\"\ndevice_id = \"dev1\"\ntcti = \"" +
                                           swtpm.tcti() + "\"\nevent_log = \"" + path("eventlog.bin") + "\"\nreference = \"" +
                                           path("reference.json") + "\"\nreference_signature = \"" + path("reference.json.sig") +
                                           "\"\nstate_dir = \"" + path("state") + "\"\nretries = 1\ntimeout_sec = 5\n");
        return file;
    }

    // What the verifier holds for dev1 (admin API).
    json verifier_status() {
        cairn::http::HttpsRequest r;
        r.url = "https://localhost:" + std::to_string(verifier->port) + "/attest/v1/devices/dev1/status";
        r.trust_bundle = *pki / "root.pem";
        r.headers = {"Authorization: Bearer admin-token"};
        const auto reply = cairn::http::https_request(r);
        return reply.status == 200 ? json::parse(reply.body) : json();
    }
};

}  // namespace

// Scenario (a) and (e) of issue 14 on the host: a first round binds the AK and is Healthy; with the
// verifier down the next round is Unknown and names why, the last good record kept; with the
// verifier back (restarted on its state file: the AK stays bound) the daemon's round is Healthy.
TEST_F(AgentAndVerifier, BindsAttestsHealthyIsUnknownWhileTheVerifierIsDownAndHealthyAgain) {
    extend_log(cairn::test::recorded_log("sb-on"));
    const fs::path config = agent_config("sb-on");

    const auto first = cairn::run({CAIRNCTL_BINARY, "attest", "now", "--json", "--config", config.string()});
    ASSERT_EQ(first.exit_code, 0) << first.out << first.err << cairn::read_file(scratch / "verifier.log");
    const json record = json::parse(first.out);
    EXPECT_EQ(record["healthStatus"], "Healthy") << record.dump();
    EXPECT_EQ(record["attestSecureBootEnabled"], "Enabled");
    EXPECT_EQ(record["attestationCertValidated"], "Valid");
    EXPECT_EQ(record["bootIntegrityValidated"], "Valid");
    EXPECT_EQ(record["linuxKernelVersion"], cairn::test::uki_facts().at("kernel_release"));
    EXPECT_EQ(record["slot"], "a");
    EXPECT_EQ(record["errorMessage"], "");
    // What the device keeps is what the verifier stored.
    EXPECT_EQ(verifier_status(), cairn::attestation::read_status(scratch / "state")["record"]);

    // The verifier down: Unknown, with the reason; the Healthy record kept as lastGood.
    const uint16_t port = verifier->port;
    EXPECT_EQ(verifier->process->stop(5000), 0);
    const auto down = cairn::run({CAIRN_ATTESTD_BINARY, "--once", "--config", agent_config("sb-on", port).string()});
    EXPECT_EQ(down.exit_code, 1);
    const auto shown = cairn::run({CAIRNCTL_BINARY, "attest", "status", "--json", "--config", config.string()});
    ASSERT_EQ(shown.exit_code, 0) << shown.err;
    const json status = json::parse(shown.out);
    EXPECT_EQ(status["healthStatus"], "Unknown");
    EXPECT_NE(status["errorMessage"].get<std::string>().find("verifier unreachable"), std::string::npos) << status.dump();
    EXPECT_EQ(status["lastGood"]["healthStatus"], "Healthy");
    EXPECT_EQ(status["lastGood"]["timestamp"], record["timestamp"]);

    // Back up (another port: the state file keeps the device and its bound AK).
    start_verifier();
    const auto again = cairn::run({CAIRN_ATTESTD_BINARY, "--once", "--config", agent_config("sb-on").string()});
    EXPECT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(cairn::attestation::read_status(scratch / "state")["record"]["healthStatus"], "Healthy");
    EXPECT_EQ(again.err.find("binding"), std::string::npos) << "the AK was bound again: " << again.err;
}

// Scenario (b) on the host: the same device booted with Secure Boot off is Unhealthy, and says why.
TEST_F(AgentAndVerifier, SecureBootOffIsUnhealthyWithTheReason) {
    extend_log(cairn::test::recorded_log("sb-off"));
    const auto round = cairn::run({CAIRNCTL_BINARY, "attest", "now", "--json", "--config", agent_config("sb-off").string()});
    EXPECT_EQ(round.exit_code, 1) << round.err;
    const json record = json::parse(round.out);
    EXPECT_EQ(record["healthStatus"], "Unhealthy") << record.dump();
    EXPECT_EQ(record["attestSecureBootEnabled"], "Disabled");
    EXPECT_NE(record["errorMessage"].get<std::string>().find("Secure Boot disabled"), std::string::npos) << record.dump();
    EXPECT_EQ(record["attestationCertValidated"], "Valid");  // the AK and quote were fine: only the boot was not
}
