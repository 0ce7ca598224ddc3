// OpenSSL helpers (common/openssl.hpp).
#include "common/openssl.hpp"

#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/objects.h>

using namespace cairn;

// The build signs both slots' UKIs at once, and each signature registers Authenticode's object
// identifiers: many threads registering the same new identifier at the same instant all get its
// one NID (OBJ_create alone fails for all but the first with "oid exists").
TEST(ObjectNid, ManyThreadsRegisteringOneIdentifierAtOnceAllGetItsNid) {
    for (int round = 0; round < 20; ++round) {
        const std::string oid = "1.3.6.1.4.1.99999." + std::to_string(::getpid()) + "." + std::to_string(round);
        const std::string name = "cairnTest" + std::to_string(round);
        constexpr int n = 16;
        std::atomic<int> waiting{n};
        std::vector<int> nids(n, NID_undef);
        std::atomic<int> failures{0};
        std::vector<std::thread> threads;
        for (int i = 0; i < n; ++i)
            threads.emplace_back([&, i] {
                --waiting;
                while (waiting.load() > 0) {
                }
                try {
                    nids[i] = object_nid(oid.c_str(), name.c_str(), name.c_str());
                } catch (const std::exception&) {
                    ++failures;
                }
            });
        for (auto& t : threads) t.join();
        ASSERT_EQ(failures.load(), 0) << "round " << round;
        for (int nid : nids) EXPECT_EQ(nid, nids[0]);
        EXPECT_NE(nids[0], NID_undef);
        EXPECT_EQ(OBJ_txt2nid(oid.c_str()), nids[0]);
    }
    // A known one is found, not registered again.
    EXPECT_EQ(object_nid("2.16.840.1.101.3.4.2.1", "x", "x"), NID_sha256);
}
