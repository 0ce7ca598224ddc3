#include "tpm/swtpm.hpp"

#include <gtest/gtest.h>

#include "tpm/tpm.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn::tpm;

TEST(Swtpm, StartsOnLoopbackAndKeepsStateAcrossRestarts) {
    cairn::test::Scratch scratch;
    Swtpm swtpm(scratch / "tpm");
    EXPECT_TRUE(swtpm.running());
    EXPECT_EQ(swtpm.tcti(), "swtpm:host=127.0.0.1,port=" + std::to_string(swtpm.port()));
    std::string ek;
    {
        Tpm tpm({swtpm.tcti()});
        ek = tpm.endorsement_key();
    }
    const uint16_t port = swtpm.port();
    swtpm.restart();
    EXPECT_EQ(swtpm.port(), port);
    Tpm tpm({swtpm.tcti()});
    EXPECT_TRUE(tpm.persistent_exists(ek_handle));
    EXPECT_EQ(tpm.endorsement_key(), ek);
    swtpm.stop();
    EXPECT_FALSE(swtpm.running());
}

TEST(Swtpm, TwoAtOnceGetTheirOwnPorts) {
    cairn::test::Scratch scratch;
    Swtpm a(scratch / "a"), b(scratch / "b");
    EXPECT_NE(a.port(), b.port());
    EXPECT_NE(Tpm({a.tcti()}).endorsement_key(), Tpm({b.tcti()}).endorsement_key());
}
