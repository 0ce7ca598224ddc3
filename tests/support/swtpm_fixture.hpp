// A fresh software TPM per test (swtpm on loopback, its state in the test's scratch directory),
// and the environment that points tpm2-tools at it. Shared by the TPM, provisioning and
// attestation tests: `using TpmTest = cairn::test::SwtpmFixture;` keeps a suite's name.
#pragma once

#include <gtest/gtest.h>

#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"
#include "tpm/swtpm.hpp"

namespace cairn::test {

class SwtpmFixture : public ::testing::Test {
protected:
    Scratch scratch;
    tpm::Swtpm swtpm{scratch / "tpm"};

    // Options for running tpm2-tools against this swtpm (TPM2TOOLS_TCTI). On its raw socket there
    // is no resource manager: flush transient objects and sessions (tpm2_flushcontext -t / -s)
    // between commands that leave them, or the TPM runs out of object slots (0x902).
    RunOptions tools() const;
};

}  // namespace cairn::test
