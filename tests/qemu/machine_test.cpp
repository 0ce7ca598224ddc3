// The QEMU runner itself, on the debug build of the minimal image (it has a console shell).
#include "qemu/machine.hpp"

#include <gtest/gtest.h>

#include "common/error.hpp"
#include "common/subprocess.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace std::chrono_literals;
using cairn::test::Scratch;
namespace fs = std::filesystem;

TEST(Machine, BootsTypesResetsAndRestartsWithItsState) {
    Scratch dir;
    fs::path disk = dir / "disk.raw";
    run_checked({"cp", "--sparse=always", (test::test_images() / "minimal-debug/disk.raw").string(), disk.string()});
    qemu::Config c;
    c.disk = disk;
    c.state_dir = dir / "state";
    qemu::Machine m(c);
    m.start();
    size_t ready = m.wait_for("cairn: ready", 180s);
    m.wait_for_after("# ", ready, 60s);  // the debug image's shell
    EXPECT_TRUE(fs::exists(dir / "state/OVMF_VARS.fd"));

    // Typing on the console, and the TPM that swtpm provides.
    m.send("cat /sys/class/tpm/tpm0/tpm_version_major; echo typed-\"ok\"\n");
    size_t typed = m.wait_for("typed-ok", 30s);
    EXPECT_NE(m.console().rfind("\n2", typed), std::string::npos) << m.console_tail(10);

    // A marker that never comes: a clear error with the console's last lines.
    try {
        m.wait_for("this never appears", 1s);
        FAIL();
    } catch (const Error& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("'this never appears' did not appear"), std::string::npos) << what;
        EXPECT_NE(what.find("typed-ok"), std::string::npos) << "the last console lines are shown";
    }

    // Reset in place: the same process boots again.
    size_t before = m.console().size();
    m.reset();
    m.wait_for_after("cairn: ready", before, 180s);

    // Power cut, then start again on the same disk, NVRAM and TPM state.
    m.kill();
    EXPECT_FALSE(m.running());
    EXPECT_FALSE(fs::is_empty(dir / "state/tpm")) << "swtpm keeps its state";
    m.start();
    EXPECT_EQ(m.console().find("cairn: ready"), std::string::npos) << "console() starts afresh at each start()";
    m.wait_for("cairn: ready", 180s);
    m.power_off(5s);  // no ACPI handler in the minimal image: the grace runs out, then the kill
    EXPECT_FALSE(m.running());
}
