// The update engine on a real disk image file and a fake boot control, for the updater's tests:
// a Rig per test, reboots into a version, and the checks on error codes.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/file.hpp"
#include "common/hash.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"
#include "updater/engine.hpp"
#include "updater/fake_boot_control.hpp"

namespace cairn::test {

namespace fs = std::filesystem;
using namespace cairn::updater;

struct Rig {
    Scratch scratch;
    UpdateFixture fixture{scratch.path()};
    FakeBootControl boot;
    EngineConfig config;
    Rig(const std::string& running_version = "1.0") {
        config.disk = fixture.disk;
        config.state_file = scratch / "state/status.json";
        config.trust_anchor = fixture.trust_anchor;
        config.etc_upper = scratch / "etc-upper";
        config.boot_id_file = scratch / "boot_id";
        config.release.compatible = "cairn-test";
        config.release.version = running_version;
        config.release.etc["/etc/hostname"] = to_hex(sha256("cairn\n"));
        config.release.etc["/etc/app.conf"] = to_hex(sha256("setting=" + running_version + "\n"));
        new_boot();
    }
    void new_boot() {
        static int n = 0;
        write_text(config.boot_id_file, "boot-" + std::to_string(++n) + "\n");
    }
    Engine engine() { return Engine(boot, config); }
    // The firmware reboots; the booted system runs a release of `version`.
    BootDecision reboot_into(const std::string& version, const std::string& reason = {}) {
        boot.reboot();
        new_boot();
        config.release.version = version;
        return engine().on_boot(reason);
    }
    std::string slot_b() { return fixture.region("root_b") + fixture.region("root_b_verity") + fixture.region("esp_b"); }
};

inline std::string payload(const fs::path& dir, const std::string& version, const std::string& name) {
    return read_file(dir / ("payloads-" + version) / name);
}

// `action` fails with an UpdateError of `code` (clients branch on it, not on the text); `parts`,
// when given, must be in its message too (where the test is about which check refused).
inline void expect_code(const std::function<void()>& action, ErrorCode code, const std::vector<std::string>& parts = {}) {
    try {
        action();
        ADD_FAILURE() << "no error; expected " << error_code_name(code);
    } catch (const UpdateError& e) {
        EXPECT_EQ(error_code_name(e.code()), error_code_name(code)) << e.what();
        for (const std::string& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what() << "\n  lacks: " << part;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "an error without a code: " << e.what() << "; expected " << error_code_name(code);
    }
}


}  // namespace cairn::test
