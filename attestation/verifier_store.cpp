#include "attestation/verifier_store.hpp"

#include <algorithm>
#include <bit>

#include "store/sqlite.hpp"

namespace cairn::attestation {

namespace {

// Numbered migrations: append, never edit one that has shipped.
const std::vector<std::string_view> migrations = {
    R"(CREATE TABLE devices (
         device_id TEXT PRIMARY KEY,
         ek_public BLOB NOT NULL,
         enrolled_at INTEGER NOT NULL);
       CREATE TABLE bound_aks (
         device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
         ak_public BLOB NOT NULL,
         ak_name BLOB NOT NULL,
         bound_at TEXT NOT NULL);
       CREATE TABLE ak_challenges (
         device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
         ak_public BLOB NOT NULL,
         ak_name BLOB NOT NULL,
         secret_hash BLOB NOT NULL,
         expires_at INTEGER NOT NULL);
       CREATE TABLE nonces (
         device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
         nonce BLOB NOT NULL,
         ak_public BLOB NOT NULL,
         issued_seq INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         used INTEGER NOT NULL DEFAULT 0,
         PRIMARY KEY (device_id, nonce));
       CREATE TABLE quote_clocks (
         device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
         clock INTEGER NOT NULL,
         reset_count INTEGER NOT NULL,
         restart_count INTEGER NOT NULL);
       CREATE TABLE statuses (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
         judged_at INTEGER NOT NULL,
         record TEXT NOT NULL);
       CREATE INDEX statuses_by_device ON statuses(device_id, id);)",
};

// The TPM clock is a u64; SQLite integers are signed 64-bit: stored bit for bit.
int64_t to_db(uint64_t v) { return std::bit_cast<int64_t>(v); }
uint64_t from_db(int64_t v) { return std::bit_cast<uint64_t>(v); }

}  // namespace

VerifierStore::VerifierStore(const std::filesystem::path& file) : db_(file) { db_.migrate(migrations); }

void VerifierStore::enroll(const std::string& device_id, const std::string& ek_public, int64_t now) {
    store::Transaction tx(db_);
    auto existing = endorsement_key(device_id);
    if (existing && *existing == ek_public) {
        tx.commit();
        return;
    }
    if (existing) {
        // Another TPM: nothing proven through the old EK holds for it.
        for (const char* table : {"bound_aks", "ak_challenges", "nonces", "quote_clocks"})
            db_.prepare(std::string("DELETE FROM ") + table + " WHERE device_id = ?").bind(1, device_id).run();
        db_.prepare("UPDATE devices SET ek_public = ?, enrolled_at = ? WHERE device_id = ?").bind_blob(1, ek_public).bind(2, now).bind(3, device_id).run();
    } else {
        db_.prepare("INSERT INTO devices (device_id, ek_public, enrolled_at) VALUES (?, ?, ?)").bind(1, device_id).bind_blob(2, ek_public).bind(3, now).run();
    }
    tx.commit();
}

bool VerifierStore::remove(const std::string& device_id) {
    return db_.prepare("DELETE FROM devices WHERE device_id = ?").bind(1, device_id).run() > 0;
}

std::optional<std::string> VerifierStore::endorsement_key(const std::string& device_id) {
    auto s = db_.prepare("SELECT ek_public FROM devices WHERE device_id = ?");
    s.bind(1, device_id);
    if (!s.step()) return std::nullopt;
    return s.text(0);
}

std::vector<std::string> VerifierStore::devices() {
    std::vector<std::string> out;
    auto s = db_.prepare("SELECT device_id FROM devices ORDER BY device_id");
    while (s.step()) out.push_back(s.text(0));
    return out;
}

void VerifierStore::put_challenge(const std::string& device_id, const AkChallenge& c) {
    db_.prepare("INSERT OR REPLACE INTO ak_challenges (device_id, ak_public, ak_name, secret_hash, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(1, device_id)
        .bind_blob(2, c.ak_public)
        .bind_blob(3, c.ak_name)
        .bind_blob(4, c.secret_hash)
        .bind(5, c.expires_at)
        .run();
}

std::optional<AkChallenge> VerifierStore::take_challenge(const std::string& device_id) {
    store::Transaction tx(db_);
    auto s = db_.prepare("SELECT ak_public, ak_name, secret_hash, expires_at FROM ak_challenges WHERE device_id = ?");
    s.bind(1, device_id);
    if (!s.step()) return std::nullopt;
    AkChallenge c{s.text(0), s.text(1), s.text(2), s.integer(3)};
    db_.prepare("DELETE FROM ak_challenges WHERE device_id = ?").bind(1, device_id).run();
    tx.commit();
    return c;
}

void VerifierStore::bind_ak(const std::string& device_id, const BoundAk& ak) {
    db_.prepare("INSERT OR REPLACE INTO bound_aks (device_id, ak_public, ak_name, bound_at) VALUES (?, ?, ?, ?)")
        .bind(1, device_id)
        .bind_blob(2, ak.ak_public)
        .bind_blob(3, ak.ak_name)
        .bind(4, ak.bound_at)
        .run();
}

std::optional<BoundAk> VerifierStore::bound_ak(const std::string& device_id) {
    auto s = db_.prepare("SELECT ak_public, ak_name, bound_at FROM bound_aks WHERE device_id = ?");
    s.bind(1, device_id);
    if (!s.step()) return std::nullopt;
    return BoundAk{s.text(0), s.text(1), s.text(2)};
}

void VerifierStore::add_nonce(const std::string& device_id, const std::string& nonce, const IssuedNonce& issued, int64_t now,
                              size_t max_outstanding) {
    store::Transaction tx(db_);
    db_.prepare("DELETE FROM nonces WHERE device_id = ? AND expires_at <= ?").bind(1, device_id).bind(2, now).run();
    // Keep max_outstanding - 1 unused ones (the newest), so that with this one there are at most max_outstanding.
    const int64_t keep = max_outstanding > 0 ? static_cast<int64_t>(max_outstanding) - 1 : 0;
    db_.prepare(
           "DELETE FROM nonces WHERE device_id = ?1 AND used = 0 AND issued_seq NOT IN "
           "(SELECT issued_seq FROM nonces WHERE device_id = ?1 AND used = 0 ORDER BY issued_seq DESC LIMIT ?2)")
        .bind(1, device_id)
        .bind(2, keep)
        .run();
    int64_t seq = 0;
    {
        auto s = db_.prepare("SELECT COALESCE(MAX(issued_seq), 0) + 1 FROM nonces WHERE device_id = ?");
        s.bind(1, device_id);
        if (s.step()) seq = s.integer(0);
    }
    db_.prepare("INSERT INTO nonces (device_id, nonce, ak_public, issued_seq, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(1, device_id)
        .bind_blob(2, nonce)
        .bind_blob(3, issued.ak_public)
        .bind(4, seq)
        .bind(5, issued.expires_at)
        .run();
    tx.commit();
}

NonceState VerifierStore::peek_nonce(const std::string& device_id, const std::string& nonce, int64_t now, IssuedNonce& issued) {
    auto s = db_.prepare("SELECT ak_public, expires_at, used FROM nonces WHERE device_id = ? AND nonce = ?");
    s.bind(1, device_id).bind_blob(2, nonce);
    if (!s.step()) return NonceState::Unknown;
    issued = {s.text(0), s.integer(1)};
    if (s.integer(2) != 0) return NonceState::Used;
    if (issued.expires_at <= now) return NonceState::Expired;
    return NonceState::Valid;
}

NonceState VerifierStore::consume_nonce(const std::string& device_id, const std::string& nonce, int64_t now, IssuedNonce& issued) {
    store::Transaction tx(db_);
    const NonceState state = peek_nonce(device_id, nonce, now, issued);
    if (state != NonceState::Valid) return state;
    db_.prepare("UPDATE nonces SET used = 1 WHERE device_id = ? AND nonce = ?").bind(1, device_id).bind_blob(2, nonce).run();
    tx.commit();
    return NonceState::Valid;
}

size_t VerifierStore::outstanding_nonces(const std::string& device_id, int64_t now) {
    auto s = db_.prepare("SELECT COUNT(*) FROM nonces WHERE device_id = ? AND used = 0 AND expires_at > ?");
    s.bind(1, device_id).bind(2, now);
    s.step();
    return static_cast<size_t>(s.integer(0));
}

std::optional<QuoteClock> VerifierStore::last_clock(const std::string& device_id) {
    auto s = db_.prepare("SELECT clock, reset_count, restart_count FROM quote_clocks WHERE device_id = ?");
    s.bind(1, device_id);
    if (!s.step()) return std::nullopt;
    return QuoteClock{from_db(s.integer(0)), static_cast<uint32_t>(s.integer(1)), static_cast<uint32_t>(s.integer(2))};
}

void VerifierStore::set_last_clock(const std::string& device_id, const QuoteClock& c) {
    db_.prepare("INSERT OR REPLACE INTO quote_clocks (device_id, clock, reset_count, restart_count) VALUES (?, ?, ?, ?)")
        .bind(1, device_id)
        .bind(2, to_db(c.clock))
        .bind(3, static_cast<int64_t>(c.reset_count))
        .bind(4, static_cast<int64_t>(c.restart_count))
        .run();
}

void VerifierStore::add_status(const std::string& device_id, const StoredStatus& status, size_t keep) {
    store::Transaction tx(db_);
    insert_status(device_id, status, keep);
    tx.commit();
}

bool VerifierStore::record_judgement(const std::string& device_id, const std::string& nonce, const std::optional<QuoteClock>& clock,
                                     const StoredStatus& status, size_t keep) {
    store::Transaction tx(db_);
    IssuedNonce issued;
    if (peek_nonce(device_id, nonce, status.judged_at, issued) != NonceState::Valid) return false;
    db_.prepare("UPDATE nonces SET used = 1 WHERE device_id = ? AND nonce = ?").bind(1, device_id).bind_blob(2, nonce).run();
    if (clock) set_last_clock(device_id, *clock);
    insert_status(device_id, status, keep);
    tx.commit();
    return true;
}

void VerifierStore::insert_status(const std::string& device_id, const StoredStatus& status, size_t keep) {
    db_.prepare("INSERT INTO statuses (device_id, judged_at, record) VALUES (?, ?, ?)").bind(1, device_id).bind(2, status.judged_at).bind(3, status.record).run();
    db_.prepare(
           "DELETE FROM statuses WHERE device_id = ?1 AND id NOT IN "
           "(SELECT id FROM statuses WHERE device_id = ?1 ORDER BY id DESC LIMIT ?2)")
        .bind(1, device_id)
        .bind(2, static_cast<int64_t>(std::max<size_t>(keep, 1)))
        .run();
}

std::optional<StoredStatus> VerifierStore::last_status(const std::string& device_id) {
    auto h = history(device_id, 1);
    if (h.empty()) return std::nullopt;
    return h.front();
}

std::vector<StoredStatus> VerifierStore::history(const std::string& device_id, size_t limit) {
    std::vector<StoredStatus> out;
    auto s = db_.prepare("SELECT judged_at, record FROM statuses WHERE device_id = ? ORDER BY id DESC LIMIT ?");
    s.bind(1, device_id).bind(2, static_cast<int64_t>(limit));
    while (s.step()) out.push_back({s.integer(0), s.text(1)});
    return out;
}

std::vector<std::pair<std::string, std::optional<StoredStatus>>> VerifierStore::stale(int64_t before) {
    std::vector<std::pair<std::string, std::optional<StoredStatus>>> out;
    for (const std::string& id : devices()) {
        auto last = last_status(id);
        if (!last || last->judged_at < before) out.emplace_back(id, std::move(last));
    }
    return out;
}

}  // namespace cairn::attestation
