#include "store/sqlite.hpp"

#include "common/error.hpp"

namespace cairn::store {

void Database::fail_with(const std::string& what, int rc) const {
    std::string message = db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
    fail("database " + file_.string() + ": " + what + ": " + message);
}

Database::Database(const std::filesystem::path& file) : file_(file) {
    if (file != ":memory:" && file.has_parent_path()) {
        std::error_code ec;
        std::filesystem::create_directories(file.parent_path(), ec);
        if (ec) fail("database " + file.string() + ": cannot create " + file.parent_path().string() + ": " + ec.message());
    }
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(file.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    db_.reset(raw);
    if (rc != SQLITE_OK) fail_with("cannot open", rc);
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw, 5000);
    exec("PRAGMA foreign_keys = ON");
    if (file != ":memory:") {
        // journal_mode returns a row; a database on a filesystem without shared memory stays in
        // its old mode, which is still crash-safe.
        Statement wal = prepare("PRAGMA journal_mode = WAL");
        while (wal.step()) {
        }
    }
    exec("PRAGMA synchronous = FULL");
    // Is it a database at all? (A file of another kind fails here, not at the first query.)
    schema_version();
}

void Database::exec(std::string_view sql) {
    std::string text(sql);
    char* message = nullptr;
    const int rc = sqlite3_exec(db_.get(), text.c_str(), nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
        std::string why = message ? message : sqlite3_errstr(rc);
        sqlite3_free(message);
        fail("database " + file_.string() + ": " + why);
    }
}

Statement Database::prepare(std::string_view sql) {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v2(db_.get(), sql.data(), static_cast<int>(sql.size()), &raw, nullptr);
    if (rc != SQLITE_OK) fail_with("cannot prepare \"" + std::string(sql) + "\"", rc);
    return Statement(*this, raw);
}

int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_.get()); }

int64_t Database::schema_version() {
    Statement s = prepare("PRAGMA user_version");
    if (!s.step()) fail("database " + file_.string() + ": PRAGMA user_version returned nothing");
    return s.integer(0);
}

void Database::migrate(const std::vector<std::string_view>& migrations) {
    const int64_t version = schema_version();
    const auto latest = static_cast<int64_t>(migrations.size());
    if (version > latest)
        fail("database " + file_.string() + ": its schema is version " + std::to_string(version) + ", newer than this program's " +
             std::to_string(latest) + " (written by a later version; refusing to guess at it)");
    for (int64_t i = version; i < latest; ++i) {
        Transaction t(*this);
        exec(migrations[static_cast<size_t>(i)]);
        exec("PRAGMA user_version = " + std::to_string(i + 1));
        t.commit();
    }
}

void Statement::check_bind(int rc, int index) {
    if (rc != SQLITE_OK) db_->fail_with("cannot bind parameter " + std::to_string(index), rc);
}

Statement& Statement::bind(int index, int64_t value) {
    check_bind(sqlite3_bind_int64(statement_.get(), index, value), index);
    return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
    check_bind(sqlite3_bind_text64(statement_.get(), index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8), index);
    return *this;
}

Statement& Statement::bind_blob(int index, std::string_view bytes) {
    check_bind(sqlite3_bind_blob64(statement_.get(), index, bytes.data(), bytes.size(), SQLITE_TRANSIENT), index);
    return *this;
}

Statement& Statement::bind_null(int index) {
    check_bind(sqlite3_bind_null(statement_.get(), index), index);
    return *this;
}

bool Statement::step() {
    const int rc = sqlite3_step(statement_.get());
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_->fail_with(std::string("\"") + sqlite3_sql(statement_.get()) + "\"", rc);
}

int Statement::run() {
    while (step()) {
    }
    const int changed = sqlite3_changes(db_->handle());
    reset();
    return changed;
}

void Statement::reset() { sqlite3_reset(statement_.get()); }

bool Statement::is_null(int column) const { return sqlite3_column_type(statement_.get(), column) == SQLITE_NULL; }

int64_t Statement::integer(int column) const { return sqlite3_column_int64(statement_.get(), column); }

std::string Statement::text(int column) const {
    const void* data = sqlite3_column_blob(statement_.get(), column);
    const int size = sqlite3_column_bytes(statement_.get(), column);
    return data ? std::string(static_cast<const char*>(data), static_cast<size_t>(size)) : std::string();
}

std::optional<std::string> Statement::optional_text(int column) const {
    if (is_null(column)) return std::nullopt;
    return text(column);
}

Transaction::Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
    if (!done_) {
        char* message = nullptr;
        sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, &message);
        sqlite3_free(message);
    }
}

void Transaction::commit() {
    db_.exec("COMMIT");
    done_ = true;
}

}  // namespace cairn::store
