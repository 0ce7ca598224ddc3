#include "attestation/agent.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "attestation/verify.hpp"
#include "common/encoding.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "http/server.hpp"
#include "tests/attestation/attestation_fixture.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/test_support.hpp"
#include "tpm/tpm.hpp"

using namespace cairn::attestation;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string minimal = "verifier_url = \"https://verifier.example:8443/\"\ndevice_id = \"dev1\"\n";

// A port nobody listens on: bound, then closed.
uint16_t closed_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

}  // namespace

TEST(AgentConfig, DefaultsAndEveryKey) {
    AgentConfig c = parse_agent_config(minimal, "/etc/cairn/attestation.toml");
    EXPECT_EQ(c.verifier_url, "https://verifier.example:8443");
    EXPECT_EQ(c.device_id, "dev1");
    EXPECT_EQ(c.interval, std::chrono::hours(8));
    EXPECT_EQ(c.tpm.tcti, "device:/dev/tpmrm0");
    EXPECT_EQ(c.event_log, "/sys/kernel/security/tpm0/binary_bios_measurements");
    EXPECT_TRUE(c.reference.empty());
    EXPECT_EQ(c.state_dir, "/var/lib/cairn/attestation");
    EXPECT_TRUE(c.trust_bundle.empty());

    cairn::test::Scratch scratch;
    cairn::test::write_text(scratch / "ca.pem", "x");
    c = parse_agent_config(minimal + "trust_bundle = \"" + (scratch / "ca.pem").string() +
                               "\"\ninterval_sec = 600\ntcti = \"swtpm:port=2321\"\nevent_log = \"/tmp/log\"\n"
                               "reference = \"/r.json\"\nreference_signature = \"/r.json.sig\"\nstate_dir = \"/s\"\ntimeout_sec = 5\nretries = 0\n"
                               "[hierarchy_authorization]\nowner = \"o\"\nendorsement = \"e\"\n",
                           "f.toml");
    EXPECT_EQ(c.trust_bundle, scratch / "ca.pem");
    EXPECT_EQ(c.interval, std::chrono::seconds(600));
    EXPECT_EQ(c.tpm.tcti, "swtpm:port=2321");
    EXPECT_EQ(c.tpm.owner_auth, "o");
    EXPECT_EQ(c.tpm.endorsement_auth, "e");
    EXPECT_EQ(c.event_log, "/tmp/log");
    EXPECT_EQ(c.reference, "/r.json");
    EXPECT_EQ(c.reference_signature, "/r.json.sig");
    EXPECT_EQ(c.state_dir, "/s");
    EXPECT_EQ(c.timeout_sec, 5);
    EXPECT_EQ(c.retries, 0);
}

TEST(AgentConfig, BadConfigurationsNameTheFileAndKey) {
    using cairn::test::expect_error;
    auto parse = [](const std::string& text) { return [text] { parse_agent_config(text, "/etc/cairn/attestation.toml"); }; };
    expect_error(parse("device_id = \"dev1\"\n"), {"/etc/cairn/attestation.toml", "verifier_url", "missing"});
    expect_error(parse("verifier_url = \"http://v\"\ndevice_id = \"dev1\"\n"), {"attestation.toml:1: verifier_url", "https://"});
    expect_error(parse("verifier_url = \"https://\"\ndevice_id = \"dev1\"\n"), {"verifier_url", "https://"});
    expect_error(parse("verifier_url = \"https://v\"\n"), {"device_id", "missing"});
    expect_error(parse("verifier_url = \"https://v\"\ndevice_id = \"Dev/1\"\n"), {"attestation.toml:2: device_id", "not a device ID"});
    expect_error(parse(minimal + "device_idd = 1\n"), {"attestation.toml:3: device_idd", "unknown key"});
    expect_error(parse(minimal + "interval_sec = 5\n"), {"interval_sec", "between 60 and"});
    expect_error(parse(minimal + "interval_sec = \"8h\"\n"), {"interval_sec", "whole number"});
    expect_error(parse(minimal + "retries = -1\n"), {"retries", "between 0 and 10"});
    expect_error(parse(minimal + "trust_bundle = \"/nonexistent/ca.pem\"\n"), {"trust_bundle", "no such file"});
    expect_error(parse(minimal + "event_log = \"relative\"\n"), {"event_log", "absolute path"});
    expect_error(parse(minimal + "reference = \"/r.json\"\n"), {"reference", "go together"});
    expect_error(parse(minimal + "tcti = \"\"\n"), {"tcti", "must not be empty"});
    expect_error(parse(minimal + "hierarchy_authorization = 1\n"), {"hierarchy_authorization", "must be a table"});
    expect_error(parse(minimal + "[hierarchy_authorization]\nadmin = \"x\"\n"), {"hierarchy_authorization.admin", "unknown key"});
    expect_error(parse(minimal + "verifier_url = 3\n"), {"attestation.toml", "not valid TOML"});
    expect_error(parse("verifier_url = [\"https://v\"]\ndevice_id = \"d\"\n"), {"verifier_url", "must be a string"});
    expect_error([] { load_agent_config("/nonexistent/attestation.toml"); }, {"/nonexistent/attestation.toml", "no such file"});
}

// The agent's evidence, checked by the verifier's own judgement (no verifier process): a swtpm
// holding the recorded Secure Boot boot's PCRs, the agent's AK and quote, the recorded log.
class AgentEvidenceTest : public cairn::test::QuoteFixture {
protected:
    AgentConfig config() {
        AgentConfig c = parse_agent_config(minimal, path("attestation.toml"));
        c.tpm.tcti = swtpm.tcti();
        c.event_log = path("eventlog.bin");
        c.reference = path("reference.json");
        c.reference_signature = path("reference.json.sig");
        c.state_dir = path("state");
        c.retries = 1;
        c.retry_delay = std::chrono::milliseconds(10);
        c.timeout_sec = 5;
        c.cmdline = path("cmdline");
        cairn::write_file_atomic(c.event_log, cairn::test::recorded_log("sb-on"));
        cairn::write_file_atomic(c.reference, "{\"reference\": true}");
        cairn::write_file_atomic(c.reference_signature, "signature bytes");
        cairn::write_file_atomic(c.cmdline, "console=ttyS0 cairn.slot=a quiet\n");
        return c;
    }
};

TEST_F(AgentEvidenceTest, QuoteAndLogAreHealthyForTheVerifiersJudgement) {
    extend_log(cairn::test::recorded_log("sb-on"));
    const AgentConfig c = config();
    cairn::tpm::Tpm tpm(c.tpm);
    const std::string nonce = "0123456789abcdef0123456789abcdef";
    Policy policy;
    policy.nonce = nonce;
    const AgentEvidence e = collect_evidence(tpm, c, nonce, policy.pcrs);
    EXPECT_EQ(e.reference, "{\"reference\": true}");
    EXPECT_EQ(e.reference_signature, "signature bytes");
    const Evidence evidence{e.ak_public, e.quote, e.signature, e.event_log};
    const AttestationStatus status = verify_evidence(evidence, cairn::test::recorded_reference(), policy);
    EXPECT_EQ(status.healthStatus, Health::Healthy) << status.errorMessage;
    EXPECT_EQ(status.attestSecureBootEnabled, SecureBootState::Enabled);
    EXPECT_EQ(status.slot, "a");

    // The same evidence against another nonce is not (the check can fail).
    policy.nonce = "another nonce";
    EXPECT_TRUE(verify_evidence(evidence, cairn::test::recorded_reference(), policy).failed_check(CheckCode::QuoteNonceMismatch));

    // The request body carries each part in base64, under the contract's names.
    const json body = e.to_json();
    EXPECT_EQ(cairn::base64_decode(body.at("nonce").get<std::string>(), "nonce"), nonce);
    EXPECT_EQ(cairn::base64_decode(body.at("quote").get<std::string>(), "quote"), e.quote);
    EXPECT_EQ(cairn::base64_decode(body.at("signature").get<std::string>(), "signature"), e.signature);
    EXPECT_EQ(cairn::base64_decode(body.at("eventLog").get<std::string>(), "log"), e.event_log);
    EXPECT_EQ(cairn::base64_decode(body.at("reference").get<std::string>(), "r"), e.reference);
    EXPECT_EQ(cairn::base64_decode(body.at("referenceSignature").get<std::string>(), "s"), e.reference_signature);
    EXPECT_EQ(body.size(), 6u);
}

TEST_F(AgentEvidenceTest, UnreachableVerifierIsUnknownAndKeepsTheLastGoodRecord) {
    AgentConfig c = config();
    c.verifier_url = "https://127.0.0.1:" + std::to_string(closed_port());
    // A Healthy record from an hour ago, as an earlier round left it.
    json good = unknown_record(c, "");
    good["healthStatus"] = "Healthy";
    good["timestamp"] = cairn::utc_timestamp(std::chrono::system_clock::now() - std::chrono::hours(1));
    fs::create_directories(c.state_dir);
    cairn::write_file_atomic(status_file(c), json({{"record", good}, {"lastGood", good}, {"lastAttempt", nullptr}}).dump());

    const json record = run_round(c);
    EXPECT_EQ(record["healthStatus"], "Unknown");
    EXPECT_EQ(record["provisioningState"], "Failed");
    EXPECT_EQ(record["slot"], "a");
    const std::string why = record["errorMessage"];
    EXPECT_NE(why.find("verifier unreachable"), std::string::npos) << why;
    EXPECT_NE(why.find(c.verifier_url + "/attest/v1/devices/dev1/nonce"), std::string::npos) << why;

    const json status = read_status(c.state_dir);
    EXPECT_EQ(status["record"], record);
    EXPECT_EQ(status["lastGood"], good);
    EXPECT_EQ(status["lastAttempt"]["outcome"], "Unknown");
    const json view = status_view(status, std::chrono::system_clock::now());
    EXPECT_EQ(view["healthStatus"], "Unknown");
    EXPECT_GE(view["lastGood"]["age"].get<int>(), 3599);
    EXPECT_LE(view["lastGood"]["age"].get<int>(), 3700);
    EXPECT_LE(view["age"].get<int>(), 60);
    EXPECT_FALSE(view["stale"].get<bool>());

    // cairnctl attest status --json prints the same, from the file alone.
    cairn::write_file_atomic(c.file, minimal + "state_dir = \"" + c.state_dir.string() + "\"\n");
    const auto shown = cairn::run({CAIRNCTL_BINARY, "attest", "status", "--json", "--config", c.file.string()});
    ASSERT_EQ(shown.exit_code, 0) << shown.err;
    const json printed = json::parse(shown.out);
    EXPECT_EQ(printed["healthStatus"], "Unknown");
    EXPECT_EQ(printed["errorMessage"], why);
    EXPECT_EQ(printed["lastGood"]["healthStatus"], "Healthy");
    EXPECT_TRUE(printed["age"].is_number());
    const auto text = cairn::run({CAIRNCTL_BINARY, "attest", "status", "--config", c.file.string()});
    EXPECT_EQ(text.exit_code, 0);
    EXPECT_NE(text.out.find("health:          Unknown"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("last good:"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("verifier unreachable"), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find("STALE"), std::string::npos) << text.out;

    // Nothing new for longer than the interval (50 minutes here) and its jitter: stale, and said so.
    cairn::write_file_atomic(c.file, minimal + "state_dir = \"" + c.state_dir.string() + "\"\ninterval_sec = 3000\n");
    const auto later = cairn::run({CAIRNCTL_BINARY, "attest", "status", "--json", "--config", c.file.string()});
    EXPECT_FALSE(json::parse(later.out)["stale"].get<bool>()) << "the record itself is new: " << later.out;
    json old = status;
    old["record"]["timestamp"] = cairn::utc_timestamp(std::chrono::system_clock::now() - std::chrono::seconds(3400));
    cairn::write_file_atomic(status_file(c), old.dump());
    const auto stale = cairn::run({CAIRNCTL_BINARY, "attest", "status", "--json", "--config", c.file.string()});
    EXPECT_TRUE(json::parse(stale.out)["stale"].get<bool>()) << stale.out;
    const auto stale_text = cairn::run({CAIRNCTL_BINARY, "attest", "status", "--config", c.file.string()});
    EXPECT_NE(stale_text.out.find("STALE:"), std::string::npos) << stale_text.out;
}

// A server that answers every request with one fixed reply: a fault injector, not a verifier.
class FaultyVerifier {
public:
    FaultyVerifier(const cairn::test::TestPki& pki, int status, std::string body) {
        cairn::http::HttpsServerConfig config;
        config.certificate_chain = pki / "server-chain.pem";
        config.private_key = pki / "server.key";
        server_ = std::make_unique<cairn::http::HttpsServer>(config, [this, status, body](const cairn::http::HttpRequest& request) {
            ++requests;
            last_path = request.path;
            cairn::http::HttpResponse r;
            r.status = status;
            r.body = body;
            r.headers = {{"Content-Type", "application/json"}};
            return r;
        });
    }
    std::string url() const { return "https://127.0.0.1:" + std::to_string(server_->port()); }
    std::atomic<int> requests{0};
    std::string last_path;

private:
    std::unique_ptr<cairn::http::HttpsServer> server_;
};

TEST_F(AgentEvidenceTest, ServerErrorsAndBadRepliesAreUnknownWithTheReason) {
    cairn::test::TestPki pki(scratch / "pki");
    AgentConfig c = config();
    c.trust_bundle = pki / "root.pem";
    auto round = [&](int status, const std::string& body) {
        FaultyVerifier server(pki, status, body);
        c.verifier_url = server.url();
        const json record = attest_once(c);
        EXPECT_EQ(record["healthStatus"], "Unknown");
        return std::make_pair(record["errorMessage"].get<std::string>(), server.requests.load());
    };
    // 500: tried again (retries = 1), then Unknown naming the URL and the status.
    auto [why, requests] = round(500, "{\"error\": \"internal\", \"message\": \"database locked\"}");
    EXPECT_NE(why.find("/attest/v1/devices/dev1/nonce: HTTP 500 (internal: database locked)"), std::string::npos) << why;
    EXPECT_EQ(requests, 2);
    // A refusal is not tried again, and the verifier's code and message are kept.
    std::tie(why, requests) = round(404, "{\"error\": \"unknown-device\", \"message\": \"no device dev1\"}");
    EXPECT_NE(why.find("HTTP 404 (unknown-device: no device dev1)"), std::string::npos) << why;
    EXPECT_EQ(requests, 1);
    std::tie(why, requests) = round(200, "<html>hello</html>");
    EXPECT_NE(why.find("not a JSON object"), std::string::npos) << why;
    std::tie(why, requests) = round(502, "");
    EXPECT_NE(why.find("HTTP 502 (empty reply)"), std::string::npos) << why;
    // Hostile nonce replies.
    std::tie(why, requests) = round(200, "{\"nonce\": \"!!!\", \"pcrs\": [0], \"attestationKeyBound\": true}");
    EXPECT_NE(why.find("\"nonce\""), std::string::npos) << why;
    std::tie(why, requests) = round(200, "{\"nonce\": \"" + cairn::base64_encode(std::string(65, 'n')) + "\", \"pcrs\": [0], \"attestationKeyBound\": true}");
    EXPECT_NE(why.find("a nonce of 65 bytes"), std::string::npos) << why;
    std::tie(why, requests) = round(200, "{\"nonce\": \"bm9uY2U=\", \"pcrs\": [0, 99], \"attestationKeyBound\": true}");
    EXPECT_NE(why.find("\"pcrs\" holds 99"), std::string::npos) << why;
    std::tie(why, requests) = round(200, "{\"nonce\": \"bm9uY2U=\", \"pcrs\": \"all\", \"attestationKeyBound\": true}");
    EXPECT_NE(why.find("no \"pcrs\" list"), std::string::npos) << why;
    std::tie(why, requests) = round(200, "{\"nonce\": \"bm9uY2U=\", \"pcrs\": [0]}");
    EXPECT_NE(why.find("attestationKeyBound"), std::string::npos) << why;
    // The AK is unbound: the agent asks to bind it and gets a challenge it cannot use.
    std::tie(why, requests) = round(200, "{\"nonce\": \"bm9uY2U=\", \"pcrs\": [0], \"attestationKeyBound\": false, \"credentialBlob\": \"AAA=\"}");
    EXPECT_NE(why.find("/ak"), std::string::npos) << why;
    // An untrusted certificate is a transport failure, not retried.
    c.trust_bundle = pki / "unknown-root.pem";
    std::tie(why, requests) = round(200, "{}");
    EXPECT_NE(why.find("cannot talk to the verifier"), std::string::npos) << why;
    EXPECT_NE(why.find("certificate"), std::string::npos) << why;
    EXPECT_EQ(requests, 0);
}

TEST_F(AgentEvidenceTest, CairnctlAttestNowRunsARoundAndSaysSoInItsExitStatus) {
    AgentConfig c = config();
    const std::string file_text = "verifier_url = \"https://127.0.0.1:" + std::to_string(closed_port()) + "\"\ndevice_id = \"dev1\"\ntcti = \"" +
                                  swtpm.tcti() + "\"\nevent_log = \"" + c.event_log.string() + "\"\nreference = \"" + c.reference.string() +
                                  "\"\nreference_signature = \"" + c.reference_signature.string() + "\"\nstate_dir = \"" + c.state_dir.string() +
                                  "\"\nretries = 0\ntimeout_sec = 2\n";
    cairn::write_file_atomic(c.file, file_text);
    const auto now = cairn::run({CAIRNCTL_BINARY, "attest", "now", "--json", "--config", c.file.string()});
    EXPECT_EQ(now.exit_code, 1) << now.err;
    EXPECT_EQ(json::parse(now.out)["healthStatus"], "Unknown");
    EXPECT_TRUE(read_status(c.state_dir).is_object());
    const auto daemon = cairn::run({CAIRN_ATTESTD_BINARY, "--once", "--config", c.file.string()});
    EXPECT_EQ(daemon.exit_code, 1);
    EXPECT_NE(daemon.err.find("Unknown: verifier unreachable"), std::string::npos) << daemon.err;
    EXPECT_EQ(cairn::run({CAIRNCTL_BINARY, "attest", "frobnicate"}).exit_code, 2);
    EXPECT_EQ(cairn::run({CAIRNCTL_BINARY, "attest"}).exit_code, 2);
    EXPECT_EQ(cairn::run({CAIRN_ATTESTD_BINARY, "--bogus"}).exit_code, 2);
    const auto help = cairn::run({CAIRN_ATTESTD_BINARY, "--help"});
    EXPECT_EQ(help.exit_code, 0);
    EXPECT_NE(help.out.find("--once"), std::string::npos);
    const auto bad = cairn::run({CAIRN_ATTESTD_BINARY, "--config", path("missing.toml")});
    EXPECT_EQ(bad.exit_code, 1);
    EXPECT_NE(bad.err.find("missing.toml: no such file"), std::string::npos) << bad.err;
}

TEST(AgentStatus, AgeIsNullForATimestampThatDoesNotParse) {
    const auto now = std::chrono::system_clock::now();
    json record = {{"healthStatus", "Unknown"}, {"timestamp", cairn::utc_timestamp(now - std::chrono::seconds(90))}};
    EXPECT_EQ(status_view({{"record", record}}, now)["age"], 90);
    EXPECT_FALSE(status_view({{"record", record}}, now)["stale"].get<bool>());
    EXPECT_TRUE(status_view({{"record", record}}, now, std::chrono::seconds(60))["stale"].get<bool>());
    EXPECT_TRUE(status_view({{"record", record}}, now)["lastGood"].is_null());
    record["timestamp"] = "2026-12-04T12:00:00Z";
    EXPECT_TRUE(status_view({{"record", record}}, now)["age"].is_number());
    for (const char* bad : {"yesterday", "2026-12-04T12:00:00", "2026-12-04T12:00:00+01:00", "2026-12-04T12:00:00.Z1"}) {
        record["timestamp"] = bad;
        EXPECT_TRUE(status_view({{"record", record}}, now)["age"].is_null()) << bad;
        EXPECT_TRUE(status_view({{"record", record}}, now)["stale"].get<bool>()) << "an unknown age is no sign of life";
    }
    record["timestamp"] = 5;
    EXPECT_TRUE(status_view({{"record", record}}, now)["age"].is_null());
}

TEST_F(AgentEvidenceTest, DaemonRunsARoundAtStartAndStopsCleanlyOnSigterm) {
    AgentConfig c = config();
    cairn::write_file_atomic(c.file, "verifier_url = \"https://127.0.0.1:" + std::to_string(closed_port()) + "\"\ndevice_id = \"dev1\"\ntcti = \"" +
                                         swtpm.tcti() + "\"\nevent_log = \"" + c.event_log.string() + "\"\nreference = \"" + c.reference.string() +
                                         "\"\nreference_signature = \"" + c.reference_signature.string() + "\"\nstate_dir = \"" +
                                         c.state_dir.string() + "\"\nretries = 0\ntimeout_sec = 2\ninterval_sec = 3600\n");
    cairn::Process daemon({CAIRN_ATTESTD_BINARY, "--config", c.file.string()}, path("attestd.log"));
    // The first round happens at start: wait for its status file.
    for (int i = 0; i < 100 && !fs::exists(status_file(c)); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(fs::exists(status_file(c))) << cairn::read_file(path("attestd.log"));
    EXPECT_TRUE(daemon.running());
    daemon.signal(SIGTERM);
    EXPECT_EQ(daemon.wait(5000), std::optional<int>(0)) << cairn::read_file(path("attestd.log"));
    EXPECT_NE(cairn::read_file(path("attestd.log")).find("stopping (SIGTERM)"), std::string::npos);
}

TEST_F(AgentEvidenceTest, RoundsNeverOverlap) {
    AgentConfig c = config();
    c.verifier_url = "https://127.0.0.1:" + std::to_string(closed_port());
    fs::create_directories(c.state_dir);
    // Another round (the daemon's) holds the lock: ours waits for it.
    cairn::UniqueFd held = cairn::open_file(c.state_dir / ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_EQ(::flock(held.get(), LOCK_EX), 0);
    std::atomic<bool> done{false};
    std::thread round([&] {
        run_round(c);
        done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    EXPECT_FALSE(done.load());
    EXPECT_FALSE(fs::exists(status_file(c)));
    ::flock(held.get(), LOCK_UN);
    round.join();
    EXPECT_TRUE(done.load());
    EXPECT_EQ(read_status(c.state_dir)["record"]["healthStatus"], "Unknown");
}

TEST_F(AgentEvidenceTest, ReferenceFromTheEspNeedsTheBootedSlot) {
    AgentConfig c = config();
    c.reference.clear();
    c.reference_signature.clear();
    cairn::write_file_atomic(c.cmdline, "console=ttyS0 quiet\n");
    cairn::test::expect_error([&] { read_signed_reference(c); }, {c.cmdline.string(), "no cairn.slot=a or cairn.slot=b"});
    cairn::write_file_atomic(c.cmdline, "cairn.slot=c\n");
    cairn::test::expect_error([&] { read_signed_reference(c); }, {"no cairn.slot=a or cairn.slot=b"});
    // A bad status file is an error naming it, and the next round replaces it.
    fs::create_directories(c.state_dir);
    cairn::write_file_atomic(status_file(c), "[1, 2]");
    cairn::test::expect_error([&] { read_status(c.state_dir); }, {status_file(c).string(), "not a status file"});
    c.verifier_url = "https://127.0.0.1:" + std::to_string(closed_port());
    run_round(c);
    EXPECT_EQ(read_status(c.state_dir)["record"]["healthStatus"], "Unknown");
    EXPECT_TRUE(read_status(c.state_dir)["lastGood"].is_null());
}

TEST_F(AgentEvidenceTest, AKeyAtTheAkHandleThatIsNoAkIsNamed) {
    AgentConfig c = config();
    c.verifier_url = "https://127.0.0.1:" + std::to_string(closed_port());
    // A storage key persisted at 0x81010002 by someone else.
    cairn::run_checked({"tpm2_createprimary", "-C", "o", "-c", path("primary.ctx")}, tools());
    cairn::run_checked({"tpm2_evictcontrol", "-C", "o", "-c", path("primary.ctx"), "0x81010002"}, tools());
    cairn::run({"tpm2_flushcontext", "-t"}, tools());
    const json record = attest_once(c);
    EXPECT_EQ(record["healthStatus"], "Unknown");
    const std::string why = record["errorMessage"];
    EXPECT_NE(why.find("the key at persistent handle 0x81010002"), std::string::npos) << why;
}
