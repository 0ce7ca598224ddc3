#include "attestation/verifier_store.hpp"

#include <gtest/gtest.h>

#include "store/sqlite.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::attestation;
using cairn::test::Scratch;

// Everything the store holds is there again after the file is reopened.
TEST(VerifierStore, SurvivesReopening) {
    Scratch scratch;
    const auto file = scratch / "state.db";
    {
        VerifierStore s(file);
        s.enroll("dev1", "ek-one", 100);
        s.bind_ak("dev1", {"ak-pub", "ak-name", "2026-12-04T12:00:00.000Z"});
        s.put_challenge("dev1", {"ak2", "name2", "hash", 500});
        s.add_nonce("dev1", "n1", {"ak-pub", 300}, 100, 8);
        s.set_last_clock("dev1", {0xFFFFFFFFFFFFFFF0ull, 7, 9});
        s.add_status("dev1", {150, R"({"healthStatus":"Healthy"})"}, 10);
    }
    VerifierStore s(file);
    EXPECT_EQ(s.endorsement_key("dev1"), "ek-one");
    ASSERT_TRUE(s.bound_ak("dev1"));
    EXPECT_EQ(s.bound_ak("dev1")->ak_name, "ak-name");
    EXPECT_EQ(s.bound_ak("dev1")->bound_at, "2026-12-04T12:00:00.000Z");
    auto clock = s.last_clock("dev1");
    ASSERT_TRUE(clock);
    EXPECT_EQ(clock->clock, 0xFFFFFFFFFFFFFFF0ull);  // a u64 beyond int64's range, bit for bit
    EXPECT_EQ(clock->reset_count, 7u);
    EXPECT_EQ(clock->restart_count, 9u);
    ASSERT_TRUE(s.last_status("dev1"));
    EXPECT_EQ(s.last_status("dev1")->judged_at, 150);
    IssuedNonce issued;
    EXPECT_EQ(s.consume_nonce("dev1", "n1", 200, issued), NonceState::Valid);
    EXPECT_EQ(issued.ak_public, "ak-pub");
    auto c = s.take_challenge("dev1");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->secret_hash, "hash");
    EXPECT_EQ(c->expires_at, 500);
    EXPECT_EQ(s.database().schema_version(), 1);
}

TEST(VerifierStore, NoncesAreSingleUseShortLivedAndCapped) {
    Scratch scratch;
    VerifierStore s(scratch / "state.db");
    s.enroll("dev1", "ek", 0);
    IssuedNonce issued;
    s.add_nonce("dev1", "a", {"ak", 100}, 0, 3);
    EXPECT_EQ(s.consume_nonce("dev1", "a", 50, issued), NonceState::Valid);
    EXPECT_EQ(s.consume_nonce("dev1", "a", 50, issued), NonceState::Used);
    EXPECT_EQ(s.consume_nonce("dev1", "zzz", 50, issued), NonceState::Unknown);
    EXPECT_EQ(s.consume_nonce("dev2", "a", 50, issued), NonceState::Unknown);  // another device's nonce
    s.add_nonce("dev1", "b", {"ak", 100}, 0, 3);
    EXPECT_EQ(s.consume_nonce("dev1", "b", 100, issued), NonceState::Expired);
    EXPECT_EQ(s.consume_nonce("dev1", "b", 99, issued), NonceState::Valid);  // an expired attempt did not use it
    // The cap: at most 3 unused ones; the oldest goes first.
    for (const char* n : {"c1", "c2", "c3", "c4", "c5"}) s.add_nonce("dev1", n, {"ak", 1000}, 10, 3);
    EXPECT_EQ(s.outstanding_nonces("dev1", 10), 3u);
    EXPECT_EQ(s.consume_nonce("dev1", "c1", 20, issued), NonceState::Unknown);
    EXPECT_EQ(s.consume_nonce("dev1", "c2", 20, issued), NonceState::Unknown);
    EXPECT_EQ(s.consume_nonce("dev1", "c5", 20, issued), NonceState::Valid);
    // Expired ones are dropped when the next one is issued.
    s.add_nonce("dev1", "d", {"ak", 5000}, 2000, 3);
    auto st = s.database().prepare("SELECT COUNT(*) FROM nonces");
    ASSERT_TRUE(st.step());
    EXPECT_EQ(st.integer(0), 1);
}

TEST(VerifierStore, ChallengesAreSingleUse) {
    Scratch scratch;
    VerifierStore s(scratch / "state.db");
    s.enroll("dev1", "ek", 0);
    EXPECT_FALSE(s.take_challenge("dev1"));
    s.put_challenge("dev1", {"ak", "name", "h1", 10});
    s.put_challenge("dev1", {"ak", "name", "h2", 10});  // a new one replaces the old
    EXPECT_EQ(s.take_challenge("dev1")->secret_hash, "h2");
    EXPECT_FALSE(s.take_challenge("dev1"));
}

// Another EK is another TPM: what was proven through the old one goes; the same EK changes nothing.
TEST(VerifierStore, ReEnrolmentWithAnotherEkDropsTheBinding) {
    Scratch scratch;
    VerifierStore s(scratch / "state.db");
    s.enroll("dev1", "ek", 0);
    s.bind_ak("dev1", {"ak", "name", "t"});
    s.set_last_clock("dev1", {1, 1, 1});
    s.add_status("dev1", {5, "{}"}, 10);
    s.enroll("dev1", "ek", 10);
    EXPECT_TRUE(s.bound_ak("dev1"));
    s.enroll("dev1", "ek-other", 20);
    EXPECT_EQ(s.endorsement_key("dev1"), "ek-other");
    EXPECT_FALSE(s.bound_ak("dev1"));
    EXPECT_FALSE(s.last_clock("dev1"));
    EXPECT_TRUE(s.last_status("dev1"));
    // Removal takes everything with it.
    EXPECT_TRUE(s.remove("dev1"));
    EXPECT_FALSE(s.remove("dev1"));
    EXPECT_FALSE(s.last_status("dev1"));
    EXPECT_FALSE(s.endorsement_key("dev1"));
    EXPECT_TRUE(s.devices().empty());
}

TEST(VerifierStore, HistoryIsBoundedNewestFirstAndStaleListsOldAndSilentDevices) {
    Scratch scratch;
    VerifierStore s(scratch / "state.db");
    s.enroll("old", "ek", 0);
    s.enroll("fresh", "ek", 0);
    s.enroll("silent", "ek", 0);
    for (int i = 0; i < 7; ++i) s.add_status("old", {100 + i, std::to_string(i)}, 5);
    s.add_status("fresh", {1000, "f"}, 5);
    const auto h = s.history("old", 100);
    ASSERT_EQ(h.size(), 5u);
    EXPECT_EQ(h.front().record, "6");
    EXPECT_EQ(h.back().record, "2");
    EXPECT_EQ(s.history("old", 2).size(), 2u);
    const auto stale = s.stale(500);
    ASSERT_EQ(stale.size(), 2u);
    EXPECT_EQ(stale[0].first, "old");
    EXPECT_EQ(stale[0].second->judged_at, 106);
    EXPECT_EQ(stale[1].first, "silent");
    EXPECT_FALSE(stale[1].second);
}

// A database from a newer program is refused, not guessed at.
TEST(VerifierStore, RefusesANewerSchema) {
    Scratch scratch;
    { VerifierStore s(scratch / "state.db"); s.database().exec("PRAGMA user_version = 99"); }
    cairn::test::expect_error([&] { VerifierStore s(scratch / "state.db"); }, {"state.db"});
}

// A judgement is stored with its nonce used, all or nothing.
TEST(VerifierStore, AJudgementUsesItsNonceOnlyWhenStored) {
    Scratch scratch;
    VerifierStore s(scratch / "state.db");
    s.enroll("dev1", "ek", 0);
    s.add_nonce("dev1", "n", {"ak", 100}, 0, 8);
    IssuedNonce issued;
    EXPECT_EQ(s.peek_nonce("dev1", "n", 10, issued), NonceState::Valid);
    EXPECT_EQ(s.peek_nonce("dev1", "n", 10, issued), NonceState::Valid);  // looking does not use it
    EXPECT_FALSE(s.record_judgement("dev1", "n", QuoteClock{5, 1, 1}, {100, "late"}, 10));  // expired by then
    EXPECT_FALSE(s.last_status("dev1"));
    EXPECT_FALSE(s.last_clock("dev1"));
    EXPECT_TRUE(s.record_judgement("dev1", "n", QuoteClock{5, 1, 1}, {10, "judged"}, 10));
    EXPECT_EQ(s.last_status("dev1")->record, "judged");
    EXPECT_EQ(s.last_clock("dev1")->clock, 5u);
    EXPECT_EQ(s.peek_nonce("dev1", "n", 10, issued), NonceState::Used);
    EXPECT_FALSE(s.record_judgement("dev1", "n", std::nullopt, {11, "again"}, 10));
    EXPECT_EQ(s.history("dev1", 10).size(), 1u);
}
