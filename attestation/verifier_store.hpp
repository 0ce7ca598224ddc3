// cairn-verifier's state in SQLite (store/sqlite.hpp), so that a restart keeps what the verifier
// knows: the enrolled devices and their EKs, the AK bound to each, the pending AK challenges, the
// nonces handed out, the last accepted quote's clock, and each device's status records with a
// bounded history. Times are seconds since the epoch, given by the caller (the service owns the
// clock, so tests can move it). Not thread-safe: the service calls it under its lock.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "attestation/quote.hpp"
#include "store/sqlite.hpp"

namespace cairn::attestation {

// The AK bound to a device by credential activation.
struct BoundAk {
    std::string ak_public;  // TPM2B_PUBLIC
    std::string ak_name;    // its Name (0x000B ‖ SHA-256)
    std::string bound_at;   // UTC RFC 3339
};

// A pending AK challenge: the AK it was made for and the SHA-256 of the secret (the secret itself
// is never stored: a copy of the database does not let anyone answer the challenge).
struct AkChallenge {
    std::string ak_public, ak_name;
    std::string secret_hash;
    int64_t expires_at = 0;
};

// A nonce handed out: the AK the device named when it asked for it.
struct IssuedNonce {
    std::string ak_public;
    int64_t expires_at = 0;
};

// What consume_nonce found.
enum class NonceState { Valid, Unknown, Used, Expired };

// A stored status record (the JSON text the service built) and when it was judged.
struct StoredStatus {
    int64_t judged_at = 0;
    std::string record;
};

class VerifierStore {
public:
    // Opens (creating) the database and brings its schema up to date. Throws Error naming the file.
    explicit VerifierStore(const std::filesystem::path& file);

    // Enrols a device or replaces its EK. With another EK than before, everything known of the
    // device through the old EK (bound AK, challenge, nonces, clock) is dropped; statuses stay.
    void enroll(const std::string& device_id, const std::string& ek_public, int64_t now);
    // Removes the device and everything known of it; false when it was not enrolled.
    bool remove(const std::string& device_id);
    std::optional<std::string> endorsement_key(const std::string& device_id);
    std::vector<std::string> devices();

    // One pending challenge per device: a new one replaces the old.
    void put_challenge(const std::string& device_id, const AkChallenge& challenge);
    // Removes and returns the pending challenge (single use, whatever the answer).
    std::optional<AkChallenge> take_challenge(const std::string& device_id);

    void bind_ak(const std::string& device_id, const BoundAk& ak);
    std::optional<BoundAk> bound_ak(const std::string& device_id);

    // Records a nonce; first drops the device's expired ones, then its oldest unused ones so that
    // at most `max_outstanding` unused, unexpired nonces remain (this one included).
    void add_nonce(const std::string& device_id, const std::string& nonce, const IssuedNonce& issued, int64_t now, size_t max_outstanding);
    // What the nonce is, without using it; `issued` receives what it was issued with.
    NonceState peek_nonce(const std::string& device_id, const std::string& nonce, int64_t now, IssuedNonce& issued);
    // peek_nonce, and marks the nonce used when it is Valid.
    NonceState consume_nonce(const std::string& device_id, const std::string& nonce, int64_t now, IssuedNonce& issued);
    size_t outstanding_nonces(const std::string& device_id, int64_t now);

    std::optional<QuoteClock> last_clock(const std::string& device_id);
    void set_last_clock(const std::string& device_id, const QuoteClock& clock);

    // Appends a status record and keeps the newest `keep` of the device's.
    void add_status(const std::string& device_id, const StoredStatus& status, size_t keep);
    // One judgement, all or nothing: the nonce used (false, and nothing changed, when it is not
    // Valid at `status.judged_at`), the quote's clock when given, the status added. A failure half
    // way leaves the nonce unused, so the device may send the same evidence again.
    bool record_judgement(const std::string& device_id, const std::string& nonce, const std::optional<QuoteClock>& clock,
                          const StoredStatus& status, size_t keep);
    std::optional<StoredStatus> last_status(const std::string& device_id);
    // Newest first, at most `limit`.
    std::vector<StoredStatus> history(const std::string& device_id, size_t limit);
    // Enrolled devices whose last status was judged before `before`, or that have none.
    std::vector<std::pair<std::string, std::optional<StoredStatus>>> stale(int64_t before);

    store::Database& database() { return db_; }

private:
    void insert_status(const std::string& device_id, const StoredStatus& status, size_t keep);
    store::Database db_;
};

}  // namespace cairn::attestation
