// SQLite for the state Cairn's services keep across restarts (cairn-dps, cairn-verifier): one owner
// of a connection, one of a prepared statement, a transaction that rolls back unless committed,
// and numbered schema migrations. Errors are Error naming the database file and SQLite's words.
//
// A connection is opened in WAL mode with foreign keys on and a busy timeout, so a crash at any
// point leaves the last committed transaction (SQLite's own guarantee; synchronous=FULL makes a
// commit durable before it returns). One connection per service, used under the service's lock:
// the wrapper adds no locking of its own.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::store {

class Database;

// A prepared statement. Parameters are numbered from 1 (`?` in the SQL, in order); columns from 0.
class Statement {
public:
    Statement(Statement&&) noexcept = default;
    Statement& operator=(Statement&&) noexcept = default;

    Statement& bind(int index, int64_t value);
    Statement& bind(int index, std::string_view text);           // TEXT
    Statement& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
    Statement& bind(int index, const std::string& text) { return bind(index, std::string_view(text)); }
    Statement& bind_blob(int index, std::string_view bytes);      // BLOB
    Statement& bind_null(int index);

    // Runs to the next row: true with a row to read, false when done.
    bool step();
    // Runs a statement that returns no rows (INSERT, UPDATE, DELETE); returns the rows changed.
    int run();
    // Back to before the first step, bindings kept.
    void reset();

    bool is_null(int column) const;
    int64_t integer(int column) const;
    std::string text(int column) const;  // TEXT or BLOB bytes; "" for NULL
    std::optional<std::string> optional_text(int column) const;

private:
    friend class Database;
    struct Finalizer {
        void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
    };
    Statement(Database& db, sqlite3_stmt* statement) : db_(&db), statement_(statement) {}
    void check_bind(int rc, int index);
    Database* db_;
    std::unique_ptr<sqlite3_stmt, Finalizer> statement_;
};

class Database {
public:
    // Opens (creating it and missing parent folders) `file`; ":memory:" for a database that lives
    // as long as this object. Throws Error naming the file.
    explicit Database(const std::filesystem::path& file);
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    // Runs SQL with no parameters and no rows wanted (several statements allowed).
    void exec(std::string_view sql);
    Statement prepare(std::string_view sql);
    int64_t last_insert_rowid() const;

    // Brings the schema to migrations.size(): migration i (SQL, several statements allowed) runs
    // when the database's user_version is i, each in its own transaction with the version bump.
    // A database newer than the program (user_version > size) is an Error: never guess at it.
    void migrate(const std::vector<std::string_view>& migrations);
    int64_t schema_version();

    const std::filesystem::path& file() const { return file_; }
    sqlite3* handle() { return db_.get(); }
    // "database FILE: what: SQLite's message" (for errors about this database).
    [[noreturn]] void fail_with(const std::string& what, int rc) const;

private:
    struct Closer {
        void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
    };
    std::filesystem::path file_;
    std::unique_ptr<sqlite3, Closer> db_;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless commit() ran.
class Transaction {
public:
    explicit Transaction(Database& db);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();
    void commit();

private:
    Database& db_;
    bool done_ = false;
};

}  // namespace cairn::store
