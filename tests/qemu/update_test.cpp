// A/B update scenarios (CTest label `qemu`) on images Cairn builds: the 0.1.0 debug image of the
// fixture, and the bundles tests/qemu/build-update-images makes. Bundles reach the guest as
// read-only virtio disks (/dev/vdb, ...); cairnctl drives cairn-updated over D-Bus.
#include <gtest/gtest.h>

#include <random>

#include <nlohmann/json.hpp>

#include "common/file.hpp"
#include "tests/support/qemu_support.hpp"
#include "tests/support/test_support.hpp"

using namespace cairn;
using namespace cairn::test;
using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path bundle(const std::string& name) { return test_images() / "update" / (name + ".cairn"); }

// `cairnctl update status --json` in the guest.
json update_status(qemu::Machine& m) {
    std::string out = shell(m, "cairnctl update status --json");
    size_t open = out.find("\n{");
    size_t close = out.rfind("}");
    if (open == std::string::npos || close == std::string::npos) throw std::runtime_error("no status JSON in: " + out);
    json j = json::parse(out.substr(open + 1, close - open), nullptr, false);
    if (j.is_discarded()) throw std::runtime_error("status is not JSON: " + out);
    return j;
}

const json& slot(const json& status, const std::string& name) {
    for (const json& s : status["slots"])
        if (s["slot"] == name) return s;
    throw std::runtime_error("no slot " + name);
}

// Reboots the guest from its shell; returns the console offset to wait from.
size_t reboot(qemu::Machine& m) {
    size_t from = m.console().size();
    m.send("sync; reboot -f\n");
    return from;
}

// Waits for the daemon to be on the bus (it prints this line when it serves).
void wait_for_updater(qemu::Machine& m, size_t from) { m.wait_for_after("cairn-updated: serving", from, 120s); }

}  // namespace

// Install A -> B, reboot into B: the trial is committed; /etc changes and /var data are kept; a
// default the user had changed is reported. Then B -> A.
TEST(Update, InstallsIntoBCommitsKeepsDataAndUpdatesBackToA) {
    Booted b("minimal-debug");
    b.drives = {bundle("v2"), bundle("v3")};
    qemu::Machine& m = b.start();
    wait_for_shell(m);
    wait_for_updater(m, 0);
    EXPECT_NE(m.console().find("cairn: ready slot=a version=0.1.0"), std::string::npos);
    shell(m, "echo mine > /etc/motd; echo kept > /etc/user-note; mkdir -p /var/lib/app; echo data > /var/lib/app/state");
    std::string out = shell(m, "cairnctl update install /dev/vdb; echo exit=$?", 600s);
    EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
    json st = update_status(m);
    EXPECT_EQ(slot(st, "b")["state"], "trial");
    EXPECT_EQ(slot(st, "b")["version"], "0.2.0");
    EXPECT_TRUE(slot(st, "b")["next"].get<bool>());
    ASSERT_EQ(st["etc_conflicts"].size(), 1u) << st.dump();
    EXPECT_EQ(st["etc_conflicts"][0]["path"], "/etc/motd");

    size_t from = reboot(m);
    size_t ready = m.wait_for_after("cairn: ready slot=b version=0.2.0", from, 300s);
    m.wait_for_after("committed", ready, 120s);
    wait_for_shell(m, from);
    st = update_status(m);
    EXPECT_EQ(st["booted"], "b");
    EXPECT_EQ(slot(st, "b")["state"], "good");
    EXPECT_TRUE(slot(st, "b")["primary"].get<bool>());
    EXPECT_EQ(st["last"]["kind"], "committed");
    out = shell(m, "cat /etc/motd /etc/user-note /var/lib/app/state");
    EXPECT_NE(out.find("mine\r\nkept\r\ndata"), std::string::npos) << out;

    // Committed: an ordinary reboot stays on B.
    from = reboot(m);
    m.wait_for_after("cairn: ready slot=b version=0.2.0", from, 300s);
    wait_for_shell(m, from);
    wait_for_updater(m, from);

    // B -> A.
    out = shell(m, "cairnctl update install /dev/vdc; echo exit=$?", 600s);
    EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
    from = reboot(m);
    ready = m.wait_for_after("cairn: ready slot=a version=0.3.0", from, 300s);
    m.wait_for_after("committed", ready, 120s);
    wait_for_shell(m, from);
    st = update_status(m);
    EXPECT_EQ(slot(st, "a")["state"], "good");
    EXPECT_EQ(slot(st, "a")["version"], "0.3.0");
    EXPECT_TRUE(slot(st, "a")["primary"].get<bool>());
    out = shell(m, "cat /var/lib/app/state");
    EXPECT_NE(out.find("data"), std::string::npos);
}
