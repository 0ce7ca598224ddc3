// cairn-updated and cairnctl on a private D-Bus system bus (a real dbus-daemon with the image's
// bus configuration and the updater's policy), installing into a disk image file, with a plain
// directory for the UEFI variables.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mount.h>

#include <functional>
#include <regex>
#include <thread>

#include "common/efivars.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "imager/publish.hpp"
#include "imager/update.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/pki.hpp"
#include "tests/support/test_support.hpp"
#include "tests/support/update_fixture.hpp"

using namespace cairn;
using namespace cairn::test;
using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// A tiny tmpfs over a directory, filled to the last byte; unmounted when the object dies.
struct FullFilesystem {
    fs::path dir;
    bool mounted = false;
    explicit FullFilesystem(const fs::path& d) : dir(d) {
        fs::create_directories(dir);
        if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=16k") != 0) return;
        mounted = true;
        fill();
    }
    void fill() {
        UniqueFd fd = open_file(dir / "filler", O_WRONLY | O_CREAT | O_APPEND);
        const std::string block(4096, 'x');
        while (::write(fd.get(), block.data(), block.size()) > 0) {
        }
        while (::write(fd.get(), "x", 1) > 0) {
        }
    }
    void free() { fs::remove(dir / "filler"); }
    ~FullFilesystem() {
        if (mounted) ::umount2(dir.c_str(), MNT_DETACH);
    }
};

struct Bus {
    Scratch s;
    UpdateFixture f{s.path()};
    std::unique_ptr<Process> bus, daemon;
    std::unique_ptr<FullFilesystem> full;  // when a test fills the state directory
    std::string address;

    // `prepare` runs before the daemon starts (e.g. to leave a damaged status file behind);
    // with `start` false, start() starts it (after the test used the fixture).
    explicit Bus(const std::function<void(const fs::path& scratch)>& prepare = {}, bool start_now = true) {
        if (prepare) prepare(s.path());
        fs::create_directories(s / "fixture");
        fs::create_directories(s / "system.d");
        fs::create_directories(s / "efivars");
        // The image's own configuration, with the socket moved into the scratch directory.
        std::string config = imager::dbus_system_config();
        config = std::regex_replace(config, std::regex("/run/dbus/system_bus_socket"), (s / "bus").string());
        config = std::regex_replace(config, std::regex("/usr/share/dbus-1/system.d"), (s / "system.d").string());
        write_text(s / "bus.conf", config);
        write_text(s / "system.d/org.cairn.Updater1.conf", imager::updater_dbus_policy());
        bus = std::make_unique<Process>(std::vector<std::string>{"dbus-daemon", "--nofork", "--nopidfile", "--config-file=" + (s / "bus.conf").string()},
                                        s / "bus.log");
        address = "unix:path=" + (s / "bus").string();
        for (int i = 0; i < 100 && !fs::exists(s / "bus"); ++i) std::this_thread::sleep_for(20ms);
        write_text(s / "cmdline", "cairn.slot=a console=ttyS0\n");
        write_text(s / "release.json", R"({"compatible":"cairn-test","version":"1.0","build_id":"x","etc":{}})");
        if (start_now) start();
    }
    void start() {
        RunOptions o;
        o.extra_env = {"DBUS_SYSTEM_BUS_ADDRESS=" + address};
        daemon = std::make_unique<Process>(
            std::vector<std::string>{CAIRN_UPDATED_BINARY, "--disk", f.disk.string(), "--efivars", (s / "efivars").string(), "--cmdline",
                                     (s / "cmdline").string(), "--state", (s / "state/status.json").string(), "--release",
                                     (s / "release.json").string(), "--trust-anchor", f.trust_anchor.string(), "--etc-upper",
                                     (s / "upper").string(), "--run-dir", (s / "run").string(), "--no-reboot",
                                     "--config", (s / "update.toml").string()},
            s / "daemon.log", o);
        for (int i = 0; i < 200 && read_file_or_empty(s / "daemon.log").find("serving") == std::string::npos; ++i)
            std::this_thread::sleep_for(20ms);
    }
    ~Bus() {
        daemon.reset();
        full.reset();  // unmounted before the scratch directory goes
    }
    static std::string read_file_or_empty(const fs::path& p) {
        std::error_code ec;
        return fs::exists(p, ec) ? read_file(p) : "";
    }
    // Waits until the daemon's log has `text`; false after `timeout`.
    bool log_says(const std::string& text, std::chrono::milliseconds timeout = 30s) {
        for (auto end = std::chrono::steady_clock::now() + timeout; std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(50ms))
            if (read_file_or_empty(s / "daemon.log").find(text) != std::string::npos) return true;
        return false;
    }
    RunResult cairnctl(std::vector<std::string> args, bool as_nobody = false, std::string input = {}) {
        std::vector<std::string> argv;
        if (as_nobody) argv = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"};
        argv.push_back(CAIRNCTL_BINARY);
        argv.insert(argv.end(), args.begin(), args.end());
        RunOptions o;
        o.extra_env = {"DBUS_SYSTEM_BUS_ADDRESS=" + address};
        o.input = std::move(input);
        return run(argv, o);
    }
};

}  // namespace

TEST(Daemon, InstallsStatusAndMarksOverTheSystemBus) {
    if (!is_root()) GTEST_SKIP() << "needs root (the D-Bus policy lets only root install)";
    Bus b;
    fs::path bundle = b.f.bundle("2.0");
    RunResult r = b.cairnctl({"update", "install", bundle.string(), "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err << b.read_file_or_empty(b.s / "daemon.log");
    EXPECT_EQ(json::parse(r.out)["result"], "installed");
    EXPECT_TRUE(json::parse(r.out)["code"].is_null()) << r.out;
    r = b.cairnctl({"update", "status", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json st = json::parse(r.out);
    EXPECT_EQ(st["booted"], "a");
    EXPECT_EQ(st["last"]["kind"], "installed");
    EXPECT_TRUE(st["last"]["code"].is_null()) << st.dump();
    EXPECT_EQ(st["pending"]["slot"], "b");
    EXPECT_EQ(st["slots"][1]["state"], "trial");
    EXPECT_EQ(st["slots"][1]["version"], "2.0");
    EXPECT_TRUE(st["slots"][1]["next"].get<bool>());
    // The UEFI variables the daemon wrote: entries for both ESPs, BootNext on B's.
    EfiVars vars(b.s / "efivars");
    EXPECT_TRUE(vars.read("BootNext", efi_global_guid));
    EXPECT_TRUE(vars.read("Boot0000", efi_global_guid));
    EXPECT_TRUE(vars.read("Boot0001", efi_global_guid));

    r = b.cairnctl({"update", "mark-bad", "other"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("marked slot b bad"), std::string::npos);
    EXPECT_FALSE(vars.read("BootNext", efi_global_guid));
    r = b.cairnctl({"update", "mark-bad", "booted"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("cannot be marked bad while it runs"), std::string::npos) << r.err;
    // A refused bundle: exit 1, the code and the reason (Completed carries both).
    Process monitor({"dbus-monitor", "--address", b.address, "type='signal',interface='org.cairn.Updater1',member='Completed'"},
                    b.s / "monitor.log");
    for (int i = 0; i < 100 && b.read_file_or_empty(b.s / "monitor.log").find("NameAcquired") == std::string::npos; ++i)
        std::this_thread::sleep_for(20ms);
    r = b.cairnctl({"update", "install", b.f.bundle("3.0", "cairn-else").string(), "--json"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.out.rfind("{\"code\":\"incompatible\",", 0), 0u) << r.out;  // what scripts (and the QEMU tests) look for
    json refused = json::parse(r.out);
    EXPECT_EQ(refused["result"], "failed");
    EXPECT_EQ(refused["code"], "incompatible") << r.out;
    EXPECT_NE(refused["error"].get<std::string>().find("cairn-else"), std::string::npos) << r.out;
    r = b.cairnctl({"update", "install", b.f.bundle("3.1", "cairn-else").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("install failed (incompatible): "), std::string::npos) << r.err;
    std::string signals;
    for (int i = 0; i < 100 && (signals = b.read_file_or_empty(b.s / "monitor.log")).find("cairn-else") == std::string::npos; ++i)
        std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(std::regex_search(signals, std::regex(R"(member=Completed\s+int32 1\s+string "incompatible"\s+string ".*cairn-else)")))
        << signals;
    monitor.stop();
    // The API is introspectable.
    RunResult intro = run({"dbus-send", "--bus=" + b.address, "--print-reply", "--dest=org.cairn.Updater1", "/org/cairn/Updater1",
                           "org.freedesktop.DBus.Introspectable.Introspect"});
    ASSERT_EQ(intro.exit_code, 0) << intro.err;
    for (const char* name : {"InstallBundle", "Mark", "GetSlotStatus", "Operation", "Progress", "LastError", "LastErrorCode", "BootSlot",
                             "Compatible", "Completed"})
        EXPECT_NE(intro.out.find(name), std::string::npos) << name;
    // Completed(i result, s code, s message): the result first, as before.
    EXPECT_TRUE(std::regex_search(intro.out, std::regex(R"(<signal name="Completed">\s*<arg type="i" name="result"/>\s*)"
                                                        R"(<arg type="s" name="code"/>\s*<arg type="s" name="message"/>\s*</signal>)")))
        << intro.out;
}

// `ssh DEVICE cairnctl update install - < BUNDLE`: cairnctl hands its standard input to the daemon,
// which installs from the pipe; nothing is stored on the device.
TEST(Daemon, InstallsABundleFromStandardInput) {
    if (!is_root()) GTEST_SKIP() << "needs root (the D-Bus policy lets only root install)";
    Bus b;
    const std::string bundle = read_file(b.f.bundle("2.0"));
    RunResult r = b.cairnctl({"update", "install", "-", "--json"}, false, bundle);
    ASSERT_EQ(r.exit_code, 0) << r.err << b.read_file_or_empty(b.s / "daemon.log");
    EXPECT_EQ(json::parse(r.out)["result"], "installed");
    r = b.cairnctl({"update", "status", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json st = json::parse(r.out);
    EXPECT_EQ(st["pending"]["slot"], "b");
    EXPECT_EQ(st["slots"][1]["version"], "2.0");
    const std::string root = read_file(b.s / "payloads-2.0/root");
    EXPECT_EQ(b.f.region("root_b", root.size()), root);
    // Cut short: refused with the reason, never armed; the status says why, with the code.
    r = b.cairnctl({"update", "install", "-", "--json"}, false, read_file(b.f.bundle("2.1")).substr(0, bundle.size() / 2));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(json::parse(r.out)["code"], "transfer") << r.out;
    EXPECT_NE(r.out.find("the bundle from standard input"), std::string::npos) << r.out;
    r = b.cairnctl({"update", "status", "--json"});
    st = json::parse(r.out);
    EXPECT_EQ(st["slots"][1]["state"], "installing");
    EXPECT_EQ(st["last"]["kind"], "failed");
    EXPECT_EQ(st["last"]["code"], "transfer");
    r = b.cairnctl({"update", "status"});
    EXPECT_NE(r.out.find("last: failed (transfer) slot b version 2.1: the bundle from standard input"), std::string::npos) << r.out;
    // Only root may hand a bundle over.
    ::chmod(b.s.path().c_str(), 0755);
    ::chmod((b.s / "bus").c_str(), 0777);
    r = b.cairnctl({"update", "install", "-"}, true, bundle);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("permission denied: only root"), std::string::npos) << r.err;
}

TEST(Daemon, OnlyRootMayInstallOrMarkAnyoneMayRead) {
    if (!is_root()) GTEST_SKIP() << "needs root (to run cairnctl as another user)";
    Bus b;
    fs::path bundle = b.f.bundle("2.0");
    ::chmod(b.s.path().c_str(), 0755);
    ::chmod((b.s / "bus").c_str(), 0777);
    RunResult r = b.cairnctl({"update", "install", bundle.string()}, true);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("permission denied: only root"), std::string::npos) << r.err;  // the bus policy
    r = b.cairnctl({"update", "mark-good"}, true);
    EXPECT_EQ(r.exit_code, 1);
    r = b.cairnctl({"update", "status", "--json"}, true);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["booted"], "a");
    EXPECT_EQ(b.f.region("root_b", 4096), std::string(4096, '\0'));  // nothing was written
}

TEST(Daemon, CairnctlSaysWhenTheDaemonIsNotThere) {
    Scratch s;
    RunOptions o;
    o.extra_env = {"DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + (s / "nobus").string()};
    RunResult r = run({CAIRNCTL_BINARY, "update", "status"}, o);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("cannot reach cairn-updated"), std::string::npos) << r.err;
    r = run({CAIRNCTL_BINARY, "update", "frobnicate"}, o);
    EXPECT_EQ(r.exit_code, 2);
    r = run({CAIRNCTL_BINARY, "update", "--help"}, o);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("install BUNDLE"), std::string::npos);
    r = run({CAIRN_UPDATED_BINARY, "--no-reboot", "--disk"}, o);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("cairn-updated: --disk needs a value"), std::string::npos) << r.err;
}

// A damaged status.json (init restarted the old daemon every 2 s, for ever): the daemon moves it
// aside, rebuilds the state from the boot variables, serves, and a fixing bundle installs.
TEST(Daemon, ADamagedStatusFileIsMovedAsideAndTheStateRebuilt) {
    if (!is_root()) GTEST_SKIP() << "needs root (the D-Bus policy lets only root install)";
    const std::string good =
        R"({"slots": {"a": {"state": "good", "version": "1.0", "build_id": "x", "changed": 1}}, "pending": null, "last": null, "etc_conflicts": []})";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"garbage", std::string("\x01\xff not json at all")},
        {"truncated", good.substr(0, good.size() / 2)},
        {"empty", ""},
        {"an array", "[1, 2, 3]\n"},
        {"slots of the wrong type", R"({"slots": 5, "pending": null, "last": null, "etc_conflicts": []})"},
        {"an unknown slot", R"({"slots": {"c": {"state": "good", "version": "1", "build_id": "", "changed": 0}}, "pending": null, "last": null, "etc_conflicts": []})"},
        {"a field of the wrong type", R"({"slots": {"a": {"state": 7, "version": "1", "build_id": "", "changed": 0}}, "pending": null, "last": null, "etc_conflicts": []})"},
    };
    bool installed = false;
    for (const auto& [name, text] : cases) {
        SCOPED_TRACE(name);
        Bus b([&](const fs::path& scratch) { write_text(scratch / "state/status.json", text); });
        RunResult r = b.cairnctl({"update", "status", "--json"});
        ASSERT_EQ(r.exit_code, 0) << r.err << b.read_file_or_empty(b.s / "daemon.log");
        json st = json::parse(r.out);
        EXPECT_EQ(st["booted"], "a");
        EXPECT_EQ(st["last"]["kind"], "state-rebuilt");
        EXPECT_NE(st["last"]["reason"].get<std::string>().find("damaged update status"), std::string::npos) << st.dump();
        EXPECT_EQ(st["slots"][0]["state"], "good");
        EXPECT_TRUE(st["save_error"].is_null()) << st.dump();
        const std::string log = b.read_file_or_empty(b.s / "daemon.log");
        EXPECT_NE(log.find("rebuilding the update state from the boot variables"), std::string::npos) << log;
        int aside = 0;
        for (const auto& e : fs::directory_iterator(b.s / "state")) {
            if (e.path().filename().string().rfind("status.json.damaged-", 0) == 0) {
                ++aside;
                EXPECT_EQ(read_file(e.path()), text);
            }
        }
        EXPECT_EQ(aside, 1);
        EXPECT_NO_THROW(json::parse(read_file(b.s / "state/status.json")));  // a good record again
        if (!installed) {  // a fixing bundle installs (once: it takes a while)
            r = b.cairnctl({"update", "install", b.f.bundle("2.0").string(), "--json"});
            EXPECT_EQ(r.exit_code, 0) << r.err << b.read_file_or_empty(b.s / "daemon.log");
            installed = true;
        }
        EXPECT_TRUE(b.daemon->running());
    }
}


// A full /var: the daemon keeps serving and says the state is only in memory; an install is
// refused before it arms anything (its record must be on disk first); once there is room again,
// the next change writes the whole state.
TEST(Daemon, AFailedSaveKeepsTheDaemonServingAndAnInstallUnarmed) {
    if (!is_root()) GTEST_SKIP() << "needs root (a tmpfs mount, and the D-Bus policy)";
    std::unique_ptr<FullFilesystem> full;
    Bus b([&](const fs::path& scratch) { full = std::make_unique<FullFilesystem>(scratch / "state"); });
    b.full = std::move(full);
    if (!b.full->mounted) GTEST_SKIP() << "cannot mount a tmpfs here";
    RunResult r = b.cairnctl({"update", "status", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err << b.read_file_or_empty(b.s / "daemon.log");
    json st = json::parse(r.out);
    EXPECT_NE(st["save_error"].get<std::string>().find("No space left on device"), std::string::npos) << st.dump();
    EXPECT_EQ(st["slots"][0]["state"], "good");  // the state at boot, held in memory
    r = b.cairnctl({"update", "status"});
    EXPECT_NE(r.out.find("warning: cannot save the update status"), std::string::npos) << r.out;

    r = b.cairnctl({"update", "install", b.f.bundle("2.0").string(), "--json"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(json::parse(r.out)["code"], "save-failed") << r.out;
    EfiVars vars(b.s / "efivars");
    EXPECT_FALSE(vars.read("BootNext", efi_global_guid));  // nothing armed
    EXPECT_TRUE(b.daemon->running());

    b.full->free();
    r = b.cairnctl({"update", "mark-good"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    st = json::parse(b.cairnctl({"update", "status", "--json"}).out);
    EXPECT_TRUE(st["save_error"].is_null()) << st.dump();
    json file = json::parse(read_file(b.s / "state/status.json"));
    EXPECT_EQ(file["slots"]["a"]["state"], "good");
}

// sdbus-c++ turns only sdbus::Error from a handler into an error reply; any other exception (here
// cairn::Error from a damaged BootOrder variable) used to unwind out of the event loop and end
// the daemon.
TEST(Daemon, AnExceptionInAHandlerIsAnErrorReplyNotTheEndOfTheDaemon) {
    if (!is_root()) GTEST_SKIP() << "needs root (the D-Bus policy lets only root own the name)";
    Bus b;
    ASSERT_EQ(b.cairnctl({"update", "status"}).exit_code, 0) << b.read_file_or_empty(b.s / "daemon.log");
    const fs::path order = b.s / "efivars" / (std::string("BootOrder-") + efi_global_guid);
    const std::string saved = read_file(order);
    write_text(order, "xx");  // shorter than its attributes
    RunResult r = b.cairnctl({"update", "status"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("BootOrder"), std::string::npos) << r.err;
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE(b.daemon->running()) << b.read_file_or_empty(b.s / "daemon.log");
    write_text(order, saved);
    r = b.cairnctl({"update", "status", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err << b.read_file_or_empty(b.s / "daemon.log");
}

// One install at a time: a second while the first runs is refused with the code busy; the first,
// whose sender then goes away, fails with the code transfer.
TEST(Daemon, ASecondInstallWhileOneRunsIsBusy) {
    if (!is_root()) GTEST_SKIP() << "needs root (the D-Bus policy lets only root install)";
    Bus b;
    const fs::path bundle = b.f.bundle("2.0");
    RunOptions o;
    o.extra_env = {"DBUS_SYSTEM_BUS_ADDRESS=" + b.address};
    // The head of the bundle, then nothing: the daemon is writing the slot and waits for more.
    Process first({"bash", "-c", "(head -c 300000 " + bundle.string() + "; sleep 120) | " + std::string(CAIRNCTL_BINARY) + " update install - --json"},
                  b.s / "first.log", o);
    auto operation = [&] { return json::parse(b.cairnctl({"update", "status", "--json"}).out)["operation"].get<std::string>(); };
    for (int i = 0; i < 200 && operation() != "installing"; ++i) std::this_thread::sleep_for(50ms);
    ASSERT_EQ(operation(), "installing") << b.read_file_or_empty(b.s / "daemon.log");
    RunResult r = b.cairnctl({"update", "install", bundle.string(), "--json"});
    EXPECT_EQ(r.exit_code, 1);
    json j = json::parse(r.out);
    EXPECT_EQ(j["result"], "failed");
    EXPECT_EQ(j["code"], "busy") << r.out;
    first.stop();
    for (int i = 0; i < 200 && operation() != "idle"; ++i) std::this_thread::sleep_for(50ms);
    json st = json::parse(b.cairnctl({"update", "status", "--json"}).out);
    EXPECT_EQ(st["last"]["kind"], "failed") << st.dump();
    EXPECT_EQ(st["last"]["code"], "transfer") << st.dump();
    EXPECT_TRUE(b.daemon->running());
}

// A device following a channel on a static server (Debian's nginx, TLS with the test CA): it finds
// the version `cairn publish` put there and installs it by itself, straight from the server;
// later checks see it waiting for its reboot; an old index served again is refused.
TEST(Daemon, FollowsAChannelAndInstallsWhatIsPublishedOnItByItself) {
    if (!is_root()) GTEST_SKIP() << "needs root (the D-Bus policy lets only root install)";
    Bus b({}, false);
    TestPki pki(b.s / "pki");
    Nginx nginx(b.s / "nginx", pki);
    imager::PublishOptions p;
    p.bundle = b.f.bundle("2.0");
    p.out_dir = nginx.www() / "minimal";
    p.key = b.f.key;
    p.cert = b.f.cert;
    p.now = static_cast<int64_t>(std::time(nullptr)) - 100;
    const std::string old_index_text = [&] {
        imager::PublishOptions older = p;
        older.bundle = b.f.bundle("1.5");
        older.now -= 1000;
        imager::publish(older);
        return read_file(nginx.www() / "minimal/stable.json");
    }();
    imager::publish(p);
    write_text(b.s / "update.toml", "[http]\nca_bundle = \"" + (pki / "root.pem").string() + "\"\n[channel]\nurl = \"" +
                                        nginx.https_url("minimal/stable.json?token=secret") + "\"\ninterval_sec = 3600\njitter_sec = 0\n"
                                        "reboot = \"never\"\n");
    b.start();
    ASSERT_TRUE(b.log_says("channel https://127.0.0.1:" + std::to_string(nginx.https_port()) + "/minimal/stable.json?…: installed"))
        << b.read_file_or_empty(b.s / "daemon.log");
    EXPECT_EQ(b.read_file_or_empty(b.s / "daemon.log").find("secret"), std::string::npos) << "the URL's token reached the log";
    RunResult r = b.cairnctl({"update", "status", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json st = json::parse(r.out);
    EXPECT_EQ(st["slots"][1]["state"], "trial");
    EXPECT_EQ(st["slots"][1]["version"], "2.0");
    EXPECT_EQ(st["pending"]["slot"], "b");
    EXPECT_EQ(st["channel"]["result"], "installed") << st.dump();
    EXPECT_EQ(st["channel"]["version"], "2.0");
    EXPECT_GT(st["channel"]["next_check"].get<int64_t>(), st["channel"]["checked"].get<int64_t>() + 3500);
    EXPECT_TRUE(st["last"]["transfer"].is_object()) << "installed from the server";
    // The bundle came by ranges from where the index said, relative to it.
    EXPECT_NE(nginx.access_log().find("GET /minimal/" + p.bundle.filename().string() + " 206"), std::string::npos) << nginx.access_log();
    // Asked again: installed, waiting for the reboot; nothing installed twice.
    r = b.cairnctl({"update", "check", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    EXPECT_EQ(json::parse(r.out)["result"], "waiting") << r.out;
    r = b.cairnctl({"update", "status"});
    EXPECT_NE(r.out.find("channel https://127.0.0.1"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(": waiting: 2.0 is installed"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(", next check 20"), std::string::npos) << r.out;  // when, in UTC
    // A stale copy of the older index (a CDN's, or an attacker's) is refused and named.
    write_text(nginx.www() / "minimal/stable.json", old_index_text);
    r = b.cairnctl({"update", "check", "--json"});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    json c = json::parse(r.out);
    EXPECT_EQ(c["result"], "failed");
    EXPECT_EQ(c["code"], "stale-channel") << r.out;
    // A device that follows no channel says so.
    Bus plain;
    r = plain.cairnctl({"update", "check"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("follows no channel"), std::string::npos) << r.err;
}

// A reboot a channel scheduled for its window belongs to the boot it was scheduled in: after the
// device rebooted (into the update, by hand) it is void; within the same boot (the daemon
// restarted) it still comes.
TEST(Daemon, AChannelsScheduledRebootHoldsOnlyForTheBootItWasScheduledIn) {
    if (!is_root()) GTEST_SKIP() << "needs root (the D-Bus policy lets only root own the name)";
    auto record = [](const std::string& boot) {
        return json{{"url", "https://u.example/stable.json"}, {"checked", 1}, {"published", 1}, {"version", "2.0"},
                    {"result", "installed"}, {"message", "installed 2.0"}, {"next_check", 0}, {"reboot_at", 1},
                    {"reboot_boot", boot}, {"code", nullptr}}
            .dump();
    };
    {
        Bus b([&](const fs::path& scratch) { write_text(scratch / "state/channel.json", record("an-earlier-boot")); });
        EXPECT_FALSE(b.log_says("would reboot", 2s)) << b.read_file_or_empty(b.s / "daemon.log");
        RunResult r = b.cairnctl({"update", "status", "--json"});
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(json::parse(r.out)["channel"]["reboot_at"], 0) << r.out;
    }
    const std::string this_boot = trim_end(read_file("/proc/sys/kernel/random/boot_id"));
    Bus b([&](const fs::path& scratch) { write_text(scratch / "state/channel.json", record(this_boot)); });
    EXPECT_TRUE(b.log_says("would reboot now (--no-reboot)", 10s)) << b.read_file_or_empty(b.s / "daemon.log");
}
