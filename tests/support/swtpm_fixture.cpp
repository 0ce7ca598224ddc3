#include "tests/support/swtpm_fixture.hpp"

namespace cairn::test {

RunOptions SwtpmFixture::tools() const {
    RunOptions o;
    o.extra_env = {"TPM2TOOLS_TCTI=" + swtpm.tcti()};
    return o;
}

}  // namespace cairn::test
