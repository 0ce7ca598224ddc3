// The device side of the verifier tests, played by tpm2-tools on a swtpm (QuoteFixture): the EK and
// AK tpm2_createek/tpm2_createak made, credential activation with tpm2_activatecredential on the
// verifier's blobs (so another implementation than ours proves it interoperates), quotes with
// tpm2_quote, and the recorded reference document signed like the imager signs it. How requests
// reach the verifier (the handler in-process, or the real program over HTTPS) is the subclass's.
#pragma once

#include <unistd.h>

#include <chrono>
#include <memory>
#include <regex>

#include <nlohmann/json.hpp>

#include "attestation/reference.hpp"
#include "common/encoding.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "tests/attestation/attestation_fixture.hpp"
#include "tests/support/verifier_program.hpp"
#include "updater/signature.hpp"

namespace cairn::test {

inline std::filesystem::path update_ca() { return source_dir() / "recipes/keys/update-ca.pem"; }

// The recorded image's reference document as the imager writes it, signed with the test
// attestation signer (under the test update CA).
struct SignedReference {
    std::string document, signature;
};
inline SignedReference signed_reference(const attestation::ReferenceDocument& doc = recorded_reference()) {
    SignedReference r;
    r.document = attestation::to_json(doc);
    r.signature = updater::cms_sign(r.document, source_dir() / "recipes/keys/attestation-signer.key",
                                    source_dir() / "recipes/keys/attestation-signer.pem");
    return r;
}

struct Reply {
    int status = 0;
    nlohmann::json body;
};

class VerifierDeviceFixture : public QuoteFixture {
protected:
    const std::string policy_pcrs = "0,1,2,3,4,5,6,7,9,11";
    std::string ek_public, ak_public;

    // One request to the verifier: `admin` adds the admin token.
    virtual Reply call(const std::string& method, const std::string& path, const nlohmann::json& body, bool admin = false) = 0;

    // The TPM's EK and an RSA AK (tpm2-tools).
    void make_keys() {
        ak_public = make_ak("rsa");
        ek_public = read_file(path("ek.pub"));
    }

    nlohmann::json ak_request() const {
        return {{"endorsementKey", base64_encode(ek_public)}, {"attestationKey", base64_encode(ak_public)}};
    }

    // tpm2_activatecredential on the verifier's credentialBlob and encryptedSecret, written in
    // tpm2-tools' credential file format (magic 0xBADCC0DE, version 1, then both TPM2B structures).
    std::string activate_with_tpm2_tools(const nlohmann::json& challenge) {
        std::string file = std::string("\xBA\xDC\xC0\xDE\x00\x00\x00\x01", 8);
        file += base64_decode(challenge.at("credentialBlob").get<std::string>(), "credentialBlob");
        file += base64_decode(challenge.at("encryptedSecret").get<std::string>(), "encryptedSecret");
        write_file_atomic(path("cred.bin"), file);
        // The EK's authorisation is a policy: PolicySecret with the endorsement hierarchy.
        run_checked({"tpm2_startauthsession", "--policy-session", "-S", path("session.ctx")}, tools());
        run_checked({"tpm2_policysecret", "-S", path("session.ctx"), "-c", "e"}, tools());
        run_checked({"tpm2_activatecredential", "-c", path("ak.ctx"), "-C", "0x81010001", "-i", path("cred.bin"), "-o", path("secret.bin"), "-P",
                     "session:" + path("session.ctx")},
                    tools());
        run({"tpm2_flushcontext", path("session.ctx")}, tools());
        run({"tpm2_flushcontext", "-t"}, tools());
        run({"tpm2_flushcontext", "-s"}, tools());
        return read_file(path("secret.bin"));
    }

    // Step 1 of the contract: the AK bound by credential activation. Returns the activate reply.
    Reply bind(const std::string& device) {
        const Reply challenge = call("POST", "/attest/v1/devices/" + device + "/ak", ak_request());
        EXPECT_EQ(challenge.status, 200) << challenge.body.dump();
        if (challenge.status != 200) return challenge;
        const std::string secret = activate_with_tpm2_tools(challenge.body);
        return call("POST", "/attest/v1/devices/" + device + "/ak/activate", {{"secret", base64_encode(secret)}});
    }

    Reply nonce(const std::string& device) {
        return call("POST", "/attest/v1/devices/" + device + "/nonce", {{"attestationKey", base64_encode(ak_public)}});
    }

    // The evidence document for a quote (tpm2_quote) with `nonce_bytes`.
    nlohmann::json evidence(const std::string& nonce_bytes, const std::string& log, const SignedReference& ref) {
        const Quoted q = quote(nonce_bytes, policy_pcrs);
        return {{"nonce", base64_encode(nonce_bytes)},       {"quote", base64_encode(q.attest)},
                {"signature", base64_encode(q.signature)},   {"eventLog", base64_encode(log)},
                {"reference", base64_encode(ref.document)},  {"referenceSignature", base64_encode(ref.signature)}};
    }

    // A whole round: the PCRs made those of `log` (once per TPM), a nonce, a quote, the evidence.
    Reply attest(const std::string& device, const std::string& boot, const SignedReference& ref = signed_reference()) {
        if (extended_.empty()) {
            extend_log(recorded_log(boot));
            extended_ = boot;
        }
        EXPECT_EQ(extended_, boot) << "one TPM holds one boot's PCRs";
        const Reply n = nonce(device);
        EXPECT_EQ(n.status, 200) << n.body.dump();
        if (n.status != 200) return n;
        const std::string nonce_bytes = base64_decode(n.body.at("nonce").get<std::string>(), "nonce");
        return call("POST", "/attest/v1/devices/" + device + "/evidence", evidence(nonce_bytes, recorded_log(boot), ref));
    }

private:
    std::string extended_;
};

}  // namespace cairn::test
