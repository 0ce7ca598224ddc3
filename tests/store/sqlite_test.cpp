#include "store/sqlite.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::store;
using cairn::test::Scratch;

namespace {

const std::vector<std::string_view> schema = {
    "CREATE TABLE device (id TEXT PRIMARY KEY, key BLOB NOT NULL, seen INTEGER)",
    "ALTER TABLE device ADD COLUMN note TEXT",
};

}  // namespace

TEST(Sqlite, MigratesOnceAndKeepsRowsAcrossReopening) {
    Scratch scratch;
    const auto file = scratch / "state" / "db.sqlite";  // the folder is made
    {
        Database db(file);
        db.migrate(schema);
        EXPECT_EQ(db.schema_version(), 2);
        const std::string key("\0\x01\xff", 3);  // bytes, NUL included
        EXPECT_EQ(db.prepare("INSERT INTO device (id, key, seen, note) VALUES (?, ?, ?, ?)").bind(1, "dev1").bind_blob(2, key).bind(3, int64_t(42)).bind_null(4).run(), 1);
    }
    Database db(file);
    db.migrate(schema);  // nothing left to do: the rows are still there
    Statement s = db.prepare("SELECT key, seen, note FROM device WHERE id = ?");
    s.bind(1, "dev1");
    ASSERT_TRUE(s.step());
    EXPECT_EQ(s.text(0), std::string("\0\x01\xff", 3));
    EXPECT_EQ(s.integer(1), 42);
    EXPECT_FALSE(s.optional_text(2).has_value());
    EXPECT_FALSE(s.step());
}

TEST(Sqlite, ATransactionNotCommittedLeavesNothing) {
    Database db(":memory:");
    db.migrate(schema);
    {
        Transaction t(db);
        db.prepare("INSERT INTO device (id, key) VALUES ('a', x'00')").run();
    }
    {
        Transaction t(db);
        db.prepare("INSERT INTO device (id, key) VALUES ('b', x'00')").run();
        t.commit();
    }
    Statement s = db.prepare("SELECT group_concat(id) FROM device");
    ASSERT_TRUE(s.step());
    EXPECT_EQ(s.text(0), "b");
}

TEST(Sqlite, ErrorsNameTheFile) {
    Scratch scratch;
    cairn::test::write_text(scratch / "not-a-db", std::string(4096, 'x'));
    cairn::test::expect_error([&] { Database db(scratch / "not-a-db"); }, {"not-a-db", "not a database"});
    Database db(scratch / "db");
    db.migrate(schema);
    cairn::test::expect_error([&] { db.prepare("INSERT INTO device (id, key) VALUES ('a', x'00'), ('a', x'01')").run(); },
                              {(scratch / "db").string(), "UNIQUE"});
    cairn::test::expect_error([&] { db.prepare("SELECT x FROM nowhere"); }, {"no such table"});
}

TEST(Sqlite, ADatabaseFromALaterProgramIsRefused) {
    Scratch scratch;
    {
        Database db(scratch / "db");
        db.migrate(schema);
    }
    Database db(scratch / "db");
    cairn::test::expect_error([&] { db.migrate({schema[0]}); }, {"schema is version 2", "newer than this program's 1"});
}
