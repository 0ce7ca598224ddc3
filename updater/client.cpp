#include "updater/client.hpp"

#include <unistd.h>

#include <sdbus-c++/sdbus-c++.h>

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include "common/args.hpp"
#include "common/encoding.hpp"
#include "common/error.hpp"
#include "common/version.hpp"
#include "common/units.hpp"
#include "updater/dbus_api.hpp"
#include "updater/bundle_url.hpp"
#include "updater/error_code.hpp"

namespace cairn::updater {

using json = nlohmann::json;

const char* update_usage = R"(Usage: cairnctl update COMMAND [OPTIONS]

Installs signed update bundles into the slot that is not running and shows and changes which
slot boots.

Commands:
  install BUNDLE [--force] [--reboot]   install a signed bundle into the other slot; it boots once
                                        on the next reboot (--reboot: now) and is committed when
                                        healthy. --force allows an older version.
                                        BUNDLE is a file, an https:// URL, or -
                                        to read it from standard input:
                                        ssh DEVICE cairnctl update install - < BUNDLE
  status                                slots, the pending trial, the last install or rollback,
                                        /etc files whose new default you had changed, and the
                                        channel followed
  check                                 check the update channel now (/etc/cairn/update.toml
                                        [channel]); installs a newer version as the channel
                                        says (install, reboot)
  mark-good [SLOT]                      make SLOT (default: booted) first in the boot order
  mark-bad SLOT                         take SLOT out of the boot order
  mark-active SLOT                      boot SLOT once on the next reboot
Options:
  --json        machine-readable output
  --quiet       no progress bar
SLOT is a, b, booted or other. Talks to cairn-updated (org.cairn.Updater1) on the system bus.
)";

namespace {

struct Proxy {
    std::unique_ptr<sdbus::IProxy> proxy;
    // `subscribe` registers signal handlers before the proxy starts; they run on its own thread.
    explicit Proxy(const std::function<void(sdbus::IProxy&)>& subscribe = {}) {
        try {
            proxy = sdbus::createProxy(sdbus::createSystemBusConnection(), dbus::service, dbus::object);
            if (subscribe) subscribe(*proxy);
            proxy->finishRegistration();
        } catch (const sdbus::Error& e) {
            fail(std::string("cannot reach cairn-updated on the system bus: ") + e.getMessage());
        }
    }
    template <typename T>
    T property(const std::string& name) {
        sdbus::Variant v = proxy->getProperty(name).onInterface(dbus::interface);
        return v.get<T>();
    }
};

// How an install ended: Completed(i result, s code, s message).
struct Completion {
    int result = 0;
    std::string code, message;  // "" on success
};

// What the daemon says about a running install: Progress from PropertiesChanged, the end from Completed.
struct InstallWatch {
    std::mutex mutex;
    std::condition_variable changed;
    std::optional<Completion> result;
    std::optional<std::pair<int, std::string>> progress;

    void subscribe(sdbus::IProxy& proxy) {
        // Read by hand: an earlier daemon sends only the result (the code and message stay "").
        proxy.registerSignalHandler(dbus::interface, "Completed", [this](sdbus::Signal& signal) {
            Completion c;
            int32_t r = 0;
            signal >> r;
            c.result = r;
            if (r != 0) signal >> c.code >> c.message;
            std::lock_guard lock(mutex);
            result = c;
            changed.notify_all();
        });
        proxy.uponSignal("PropertiesChanged")
            .onInterface("org.freedesktop.DBus.Properties")
            .call([this](const std::string& interface, const std::map<std::string, sdbus::Variant>& values,
                         const std::vector<std::string>&) {
                auto it = values.find("Progress");
                if (interface != dbus::interface || it == values.end()) return;
                auto p = it->second.get<sdbus::Struct<int32_t, std::string>>();
                std::lock_guard lock(mutex);
                progress = std::pair{int(std::get<0>(p)), std::get<1>(p)};
                changed.notify_all();
            });
    }
};

// The code (updater/error_code.hpp) of a refused call, where there is one.
std::optional<std::string> dbus_code(const sdbus::Error& e) {
    if (e.getName() == "org.cairn.Updater1.Error.Busy") return std::string(error_code_name(ErrorCode::busy));
    if (e.getName() == "org.cairn.Updater1.Error.BadOption") return std::string(error_code_name(ErrorCode::bad_option));
    return std::nullopt;
}

// `install --json`: {"result": "installed"|"failed", "error": reason or "", "code": name or null},
// and for an install from a server "transfer" (the status file's: payload_bytes, downloaded,
// reused, seconds).
void print_result(const std::string& error, const std::optional<std::string>& code, const json& transfer = nullptr) {
    json j{{"result", error.empty() ? "installed" : "failed"}, {"error", error}, {"code", code ? json(*code) : json(nullptr)}};
    if (!transfer.is_null()) j["transfer"] = transfer;
    std::printf("%s\n", j.dump().c_str());
}

std::string dbus_message(const sdbus::Error& e) {
    if (e.getName() == "org.freedesktop.DBus.Error.AccessDenied")
        return "permission denied: only root may install bundles or mark slots (" + e.getMessage() + ")";
    std::string m = e.getMessage();
    return m.empty() ? e.getName() : m;
}

// What the last install from a server moved, from the daemon's status; null when it was not one.
json last_transfer(Proxy& p) {
    try {
        std::string text;
        p.proxy->callMethod("GetStatus").onInterface(dbus::interface).storeResultsTo(text);
        const json st = json::parse(text);
        if (st.contains("last") && st["last"].is_object() && st["last"].contains("transfer")) return st["last"]["transfer"];
    } catch (const std::exception&) {  // the report is extra: never fail an install over it
    }
    return nullptr;
}

// "downloaded 12.0 MiB of 150 MiB (8.0 %), reused 120 MiB the device had, in 4.2 s"; with a delta
// "downloaded 90 KiB of 150 MiB (0.1 %; 70 KiB of it a delta), ..."
std::string transfer_line(const json& t) {
    const uint64_t downloaded = t.value("downloaded", uint64_t{0}), total = t.value("payload_bytes", uint64_t{0});
    char share[32] = "";
    if (total > 0) std::snprintf(share, sizeof share, " (%.1f %%", 100.0 * static_cast<double>(downloaded) / static_cast<double>(total));
    std::string note = total > 0 ? std::string(share) : "";
    if (const uint64_t delta = t.value("delta", uint64_t{0})) note += (note.empty() ? " (" : "; ") + format_size(delta) + " of it a delta";
    if (!note.empty()) note += ")";
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.1f s", t.value("seconds", 0.0));
    return "downloaded " + format_size(downloaded) + " of " + format_size(total) + note + ", reused " +
           format_size(t.value("reused", uint64_t{0})) + " the device had, in " + seconds;
}

// Shows the progress of what the daemon started (an install, a channel check) until Completed, or
// the daemon is idle again; returns the error and its code ("" and none: success).
// `may_vanish`: the daemon reboots at the end, so losing it is no failure.
std::pair<std::string, std::optional<std::string>> wait_for_end(Proxy& p, InstallWatch& watch, bool quiet, bool may_vanish) {
    const bool bar = !quiet && ::isatty(2);
    int last_percent = -1;
    std::string last_message;
    auto show = [&](int percent, const std::string& message) {
        if (quiet || (percent == last_percent && message == last_message)) return;
        if (bar) {
            int filled = percent * 30 / 100;
            std::fprintf(stderr, "\r[%-30s] %3d%% %-50.50s", std::string(filled, '#').c_str(), percent, message.c_str());
        } else if (message != last_message) {
            std::fprintf(stderr, "%3d%% %s\n", percent, message.c_str());
        }
        last_percent = percent;
        last_message = message;
    };
    // The signals end the wait at once; once a second the daemon is also asked, so that a lost
    // signal or a daemon that died cannot leave the client waiting for ever.
    std::optional<Completion> completed;
    for (;;) {
        std::unique_lock lock(watch.mutex);
        bool signalled = watch.changed.wait_for(lock, std::chrono::seconds(1), [&] { return watch.result || watch.progress; });
        auto progress = std::exchange(watch.progress, std::nullopt);
        completed = watch.result;
        lock.unlock();
        if (progress) show(progress->first, progress->second);
        if (completed) break;
        if (signalled) continue;
        try {
            auto now = p.property<sdbus::Struct<int32_t, std::string>>("Progress");
            show(std::get<0>(now), std::get<1>(now));
            if (p.property<std::string>("Operation") == "idle") break;
        } catch (const sdbus::Error& e) {
            if (may_vanish) break;  // the daemon went away with the reboot
            fail(dbus_message(e));
        }
    }
    if (bar) std::fputc('\n', stderr);
    // From the signal; else (the wait ended by asking) from the properties.
    std::string error;
    std::optional<std::string> code;
    if (completed && (completed->result == 0 || !completed->message.empty())) {
        error = completed->message;
        if (!completed->code.empty()) code = completed->code;
    } else if (!may_vanish) {
        error = p.property<std::string>("LastError");
        if (!error.empty()) {
            try {
                std::string c = p.property<std::string>("LastErrorCode");
                if (!c.empty()) code = c;
            } catch (const sdbus::Error&) {  // an earlier daemon: no codes
            }
        }
    }
    return {error, code};
}

int install(const std::vector<std::string>& args, bool as_json, bool quiet) {
    std::string source;
    bool force = false, reboot = false;
    for (const std::string& a : args) {
        if (a == "--force") force = true;
        else if (a == "--reboot") reboot = true;
        else if (!a.empty() && a[0] == '-' && a != "-") {
            std::fprintf(stderr, "cairnctl update install: unknown option '%s'\n", a.c_str());
            return 2;
        } else if (source.empty()) source = a;
        else {
            std::fprintf(stderr, "cairnctl update install: one bundle at a time\n");
            return 2;
        }
    }
    if (source.empty()) {
        std::fprintf(stderr, "cairnctl update install: which bundle? (cairnctl update install BUNDLE)\n");
        return 2;
    }
    const bool from_stdin = source == "-";
    if (from_stdin && ::isatty(0)) {
        std::fprintf(stderr, "cairnctl update install: '-' reads the bundle from standard input, which is a terminal "
                             "(pipe it in: ssh DEVICE cairnctl update install - < BUNDLE)\n");
        return 2;
    }
    std::error_code ec;
    const bool url = is_bundle_url(source);  // the daemon fetches it
    std::string absolute = url ? source : std::filesystem::absolute(source, ec).string();
    InstallWatch watch;
    Proxy p([&](sdbus::IProxy& proxy) { watch.subscribe(proxy); });
    std::map<std::string, sdbus::Variant> options{{"force", sdbus::Variant(force)}, {"reboot", sdbus::Variant(reboot)}};
    try {
        if (from_stdin)  // the daemon reads the pipe itself: no copy of the bundle on the device
            p.proxy->callMethod("InstallBundleFd").onInterface(dbus::interface).withArguments(sdbus::UnixFd(0), options);
        else
            p.proxy->callMethod("InstallBundle").onInterface(dbus::interface).withArguments(absolute, options);
    } catch (const sdbus::Error& e) {
        if (as_json) print_result(dbus_message(e), dbus_code(e));
        else std::fprintf(stderr, "cairnctl: %s\n", dbus_message(e).c_str());
        return 1;
    }
    const auto [error, code] = wait_for_end(p, watch, quiet || as_json, reboot);
    const json transfer = url && !(reboot && error.empty()) ? last_transfer(p) : json(nullptr);
    if (as_json) {
        print_result(error, code, transfer);
    } else if (error.empty()) {
        std::printf("installed; the other slot boots once on the next reboot%s\n", reboot ? " (rebooting now)" : "");
        if (!transfer.is_null()) std::printf("%s\n", transfer_line(transfer).c_str());
    } else if (!transfer.is_null()) {
        std::fprintf(stderr, "cairnctl: before it failed: %s\n", transfer_line(transfer).c_str());
    }
    if (!error.empty()) {
        if (!as_json) std::fprintf(stderr, "cairnctl: install failed%s: %s\n", code ? (" (" + *code + ")").c_str() : "", error.c_str());
        return 1;
    }
    return 0;
}

// "stable.json: installed 0.2.0 …": the channel's record from GetStatus, for people.
std::string channel_line(const json& c) {
    std::string line = c.value("url", "") + ": " + c.value("result", "");
    if (c.contains("code") && c["code"].is_string()) line += " (" + c["code"].get<std::string>() + ")";
    if (!c.value("message", "").empty()) line += ": " + c.value("message", "");
    auto when = [&](const char* key) {
        return utc_timestamp(std::chrono::system_clock::from_time_t(static_cast<time_t>(c.value(key, int64_t{0}))));
    };
    if (c.value("checked", int64_t{0}) > 0) line += "\n  checked " + when("checked");
    if (c.value("next_check", int64_t{0}) > 0) line += ", next check " + when("next_check");
    if (c.value("reboot_at", int64_t{0}) > 0) line += ", reboot " + when("reboot_at");
    return line;
}

int check(const std::vector<std::string>& args, bool as_json, bool quiet) {
    if (!args.empty()) {
        std::fprintf(stderr, "cairnctl update check: takes no arguments\n");
        return 2;
    }
    InstallWatch watch;
    Proxy p([&](sdbus::IProxy& proxy) { watch.subscribe(proxy); });
    try {
        p.proxy->callMethod("CheckChannel").onInterface(dbus::interface);
    } catch (const sdbus::Error& e) {
        if (as_json) std::printf("%s\n", json{{"result", "failed"}, {"error", dbus_message(e)}, {"code", dbus_code(e) ? json(*dbus_code(e)) : json(nullptr)}}.dump().c_str());
        else std::fprintf(stderr, "cairnctl: %s\n", dbus_message(e).c_str());
        return 1;
    }
    const auto [error, code] = wait_for_end(p, watch, quiet || as_json, true);
    json channel = nullptr;
    try {
        std::string text;
        p.proxy->callMethod("GetStatus").onInterface(dbus::interface).storeResultsTo(text);
        const json st = json::parse(text);
        if (st.contains("channel")) channel = st["channel"];
    } catch (const std::exception&) {  // the daemon rebooted into the update
    }
    if (as_json) {
        json out = channel.is_object() ? channel : json{{"result", error.empty() ? "rebooting" : "failed"}, {"message", error}};
        if (!channel.is_object() && code) out["code"] = *code;
        std::printf("%s\n", out.dump().c_str());
    } else if (channel.is_object()) {
        std::printf("channel %s\n", channel_line(channel).c_str());
    } else if (error.empty()) {
        std::printf("installed; rebooting into it\n");
    }
    if (!error.empty()) {
        if (!as_json && !channel.is_object()) std::fprintf(stderr, "cairnctl: check failed%s: %s\n", code ? (" (" + *code + ")").c_str() : "", error.c_str());
        return 1;
    }
    return 0;
}

int status(bool as_json) {
    Proxy p;
    std::string text;
    std::vector<sdbus::Struct<std::string, std::map<std::string, sdbus::Variant>>> slots;
    std::string booted, operation;
    try {
        p.proxy->callMethod("GetStatus").onInterface(dbus::interface).storeResultsTo(text);
        p.proxy->callMethod("GetSlotStatus").onInterface(dbus::interface).storeResultsTo(slots);
        booted = p.property<std::string>("BootSlot");
        operation = p.property<std::string>("Operation");
    } catch (const sdbus::Error& e) {
        std::fprintf(stderr, "cairnctl: %s\n", dbus_message(e).c_str());
        return 1;
    }
    json st = json::parse(text);
    json out = {{"booted", booted}, {"operation", operation}, {"pending", st["pending"]}, {"last", st["last"]},
                {"etc_conflicts", st["etc_conflicts"]}, {"save_error", st.value("save_error", json(nullptr))},
                {"channel", st.value("channel", json(nullptr))}};
    json slot_list = json::array();
    for (auto& s : slots) {
        auto& m = std::get<1>(s);
        slot_list.push_back({{"slot", std::get<0>(s)}, {"state", m["state"].get<std::string>()}, {"version", m["version"].get<std::string>()},
                             {"build_id", m["build_id"].get<std::string>()}, {"booted", m["booted"].get<bool>()},
                             {"bootable", m["bootable"].get<bool>()}, {"primary", m["primary"].get<bool>()}, {"next", m["next"].get<bool>()}});
    }
    out["slots"] = slot_list;
    if (as_json) {
        std::printf("%s\n", out.dump(2).c_str());
        return 0;
    }
    std::printf("booted: slot %s   operation: %s\n", booted.c_str(), operation.c_str());
    for (const json& s : slot_list) {
        std::string flags;
        if (s["booted"]) flags += " booted";
        if (s["primary"]) flags += " primary";
        if (s["next"]) flags += " next-boot";
        if (!s["bootable"]) flags += " not-in-boot-order";
        std::printf("slot %s: %-10s version %-12s%s\n", s["slot"].get<std::string>().c_str(), s["state"].get<std::string>().c_str(),
                    s["version"].get<std::string>().empty() ? "-" : s["version"].get<std::string>().c_str(), flags.c_str());
    }
    if (!st["pending"].is_null())
        std::printf("pending: slot %s version %s (%s)\n", st["pending"]["slot"].get<std::string>().c_str(),
                    st["pending"]["version"].get<std::string>().c_str(), st["pending"]["phase"].get<std::string>().c_str());
    if (!st["last"].is_null()) {
        const json& l = st["last"];
        const std::string code = l.contains("code") && l["code"].is_string() ? " (" + l["code"].get<std::string>() + ")" : "";
        std::printf("last: %s%s slot %s version %s%s%s\n", l["kind"].get<std::string>().c_str(), code.c_str(), l["slot"].get<std::string>().c_str(),
                    l["version"].get<std::string>().c_str(), l["reason"].get<std::string>().empty() ? "" : ": ",
                    l["reason"].get<std::string>().c_str());
    }
    for (const json& c : st["etc_conflicts"])
        std::printf("etc conflict: %s: %s\n", c["path"].get<std::string>().c_str(), c["resolution"].get<std::string>().c_str());
    if (out["channel"].is_object()) std::printf("channel %s\n", channel_line(out["channel"]).c_str());
    if (out["save_error"].is_string())
        std::printf("warning: %s (the daemon holds the state in memory)\n", out["save_error"].get<std::string>().c_str());
    return 0;
}

int mark(const std::string& state, const std::vector<std::string>& args, bool as_json) {
    if (args.size() > 1) {
        std::fprintf(stderr, "cairnctl update mark-%s: one slot at a time\n", state.c_str());
        return 2;
    }
    if (args.empty() && state != "good") {
        std::fprintf(stderr, "cairnctl update mark-%s: which slot? (a, b, booted or other)\n", state.c_str());
        return 2;
    }
    Proxy p;
    std::string slot, message;
    try {
        p.proxy->callMethod("Mark").onInterface(dbus::interface).withArguments(state, args.empty() ? std::string("booted") : args[0])
            .storeResultsTo(slot, message);
    } catch (const sdbus::Error& e) {
        std::fprintf(stderr, "cairnctl: %s\n", dbus_message(e).c_str());
        return 1;
    }
    if (as_json) std::printf("%s\n", json{{"slot", slot}, {"state", state}, {"message", message}}.dump().c_str());
    else std::printf("%s\n", message.c_str());
    return 0;
}

}  // namespace

namespace {

// `cairnctl update COMMAND --help`: the command's own usage.
const std::map<std::string, const char*> command_usage = {
    {"install", R"(Usage: cairnctl update install BUNDLE [--force] [--reboot] [--json] [--quiet]

Installs a signed bundle into the other slot; it boots once on the next reboot and is committed
when healthy. The running slot is never written. BUNDLE is a file, an https:// URL (http:// if
/etc/cairn/update.toml allows it), or - for standard input: the bundle is read once as it
arrives, nothing is stored on the device, so from the build host
  ssh DEVICE cairnctl update install - < v2.cairn
installs it. From a pipe, the slot is marked bad before the first byte is written and is armed
only once all of it has been read back and verified against the signed manifest.
From a URL the daemon fetches the bundle itself with Range requests, straight into the slot: the
signed head first, then the slot's hash tree, then only the root blocks the device does not
already have, each checked against the signed tree before it is written. A cut connection is
resumed where it stopped; after a power cut the same command fetches only what the slot still
lacks. It reports bytes downloaded and reused ("transfer" with --json).
  --force    allow an older version than the running one
  --reboot   reboot into it as soon as it is installed
  --json     the result as JSON: {"result": "installed" or "failed", "error": the reason,
             "code": why, as a stable name (bad-signature, incompatible, downgrade, io, ...;
             docs/bundle.md), null on success}
  --quiet    no progress bar
Progress lines name the install's step first: check, verify, mark-bad, write, arm.
)"},
    {"status", R"(Usage: cairnctl update status [--json]

Slots (state, version, boot order), the pending trial, the last install or rollback, /etc files
whose new default you had changed, and any state the daemon could not save.
)"},
    {"check", R"(Usage: cairnctl update check [--json] [--quiet]

Checks the update channel this device follows (/etc/cairn/update.toml [channel] url) now,
instead of at its next scheduled check: fetches the channel's signed index, and when it names a
newer version than the running one installs it from the server as `install URL` would, then
reboots as [channel] reboot says (now, never, or in a daily window). Prints what happened:
up-to-date, available (install = false), waiting (installed, boots on the next reboot),
skipped (that build failed here before), installed, or failed with the reason.
  --json     the channel's record as JSON: url, result, version, message, code, checked,
             published, next_check, reboot_at
)"},
    {"mark-good", R"(Usage: cairnctl update mark-good [SLOT] [--json]

Makes SLOT (default: booted) first in the boot order. SLOT is a, b, booted or other.
)"},
    {"mark-bad", R"(Usage: cairnctl update mark-bad SLOT [--json]

Takes SLOT out of the boot order (not the booted slot). SLOT is a, b, booted or other.
)"},
    {"mark-active", R"(Usage: cairnctl update mark-active SLOT [--json]

Boots SLOT once on the next reboot (BootNext). SLOT is a, b, booted or other.
)"},
};

}  // namespace

int update_command(const std::vector<std::string>& all) {
    bool as_json = false, quiet = false;
    std::vector<std::string> args;
    Args a(all);
    while (a.next()) {
        if (a.is("--json")) as_json = true;
        else if (a.is("-q", "--quiet")) quiet = true;
        else args.push_back(a.arg());
    }
    if (a.help()) {
        auto it = args.empty() ? command_usage.end() : command_usage.find(args.front());
        std::fputs(it == command_usage.end() ? update_usage : it->second, stdout);
        return 0;
    }
    if (a.version()) return print_version("cairnctl");
    if (args.empty()) {
        std::fprintf(stderr, "cairnctl update: which command? (install, status, check, mark-good, mark-bad, mark-active; see --help)\n");
        return 2;
    }
    const std::string command = args.front();
    args.erase(args.begin());
    try {
        if (command == "install") return install(args, as_json, quiet);
        if (command == "status") {
            if (!args.empty()) {
                std::fprintf(stderr, "cairnctl update status: takes no arguments\n");
                return 2;
            }
            return status(as_json);
        }
        if (command == "check") return check(args, as_json, quiet);
        if (command == "mark-good") return mark("good", args, as_json);
        if (command == "mark-bad") return mark("bad", args, as_json);
        if (command == "mark-active") return mark("active", args, as_json);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cairnctl: %s\n", e.what());
        return 1;
    }
    std::fprintf(stderr, "cairnctl update: unknown command '%s' (see --help)\n", command.c_str());
    return 2;
}

}  // namespace cairn::updater
