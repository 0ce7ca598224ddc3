#include "common/uuid.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"

using namespace cairn;

TEST(Uuid, RoundTripsText) {
    Uuid u = Uuid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "type");
    EXPECT_EQ(u.str(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    EXPECT_EQ(Uuid::parse("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "type"), u);
}

TEST(Uuid, RejectsMalformedText) {
    EXPECT_THROW(Uuid::parse("4f68bce3e8cd4db196e7fbcaf984b709", "seed"), Error);
    EXPECT_THROW(Uuid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b70z", "seed"), Error);
}

TEST(Uuid, DerivationIsDeterministicAndVersion4Shaped) {
    Uuid a = Uuid::derive("seed", "partition:data");
    EXPECT_EQ(a, Uuid::derive("seed", "partition:data"));
    EXPECT_NE(a, Uuid::derive("seed", "partition:log"));
    EXPECT_NE(a, Uuid::derive("other", "partition:data"));
    EXPECT_EQ(a.str()[14], '4');
    EXPECT_NE(std::string("89ab").find(a.str()[19]), std::string::npos);
}

// Found by fuzz/cmdline: dashes in the wrong places left fewer than 16 bytes, and all 16 were copied.
TEST(Uuid, DashesOnlyWhereTheyBelong) {
    EXPECT_THROW(Uuid::parse("2ddc4174-3b01--3e9-abfd-ba4f79579-15", "t"), Error);
    EXPECT_THROW(Uuid::parse("2ddc4174-3b01-43e9-abfd-ba4f7957-915", "t"), Error);
    EXPECT_EQ(Uuid::parse("2ddc4174-3b01-43e9-abfd-ba4f79579d15", "t").str(), "2ddc4174-3b01-43e9-abfd-ba4f79579d15");
}
