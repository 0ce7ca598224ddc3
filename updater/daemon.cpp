// cairn-updated: the update daemon. At start it settles the boot (trial → health check → commit or
// fall back; a fallback is reported), then serves org.cairn.Updater1 on the system bus.
// All D-Bus traffic happens on the main thread; installs and health checks run on a worker that
// hands its progress over through an eventfd.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/reboot.h>
#include <unistd.h>

#include <sdbus-c++/sdbus-c++.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "common/args.hpp"
#include "common/efivars.hpp"
#include "common/encoding.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/file.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "common/version.hpp"
#include <nlohmann/json.hpp>
#include "initrd/boot.hpp"
#include "partitions/disk.hpp"
#include "updater/channel.hpp"
#include "updater/dbus_api.hpp"
#include "updater/engine.hpp"
#include "updater/health.hpp"
#include "updater/signature.hpp"
#include "updater/update_config.hpp"
#include "updater/uefi_boot_control.hpp"

namespace fs = std::filesystem;
using namespace cairn;
using namespace cairn::updater;

namespace {

const char* usage_text = R"(Usage: cairn-updated [OPTIONS]

The Cairn update daemon: serves org.cairn.Updater1 on the system bus (see cairnctl update).
At start it settles the boot: a trial boot of a freshly installed slot runs the health check and
commits it (first in BootOrder) or reboots to fall back; after a fallback it reports the rollback.

Options (the defaults are the device's paths; tests point them elsewhere):
  --disk DEV            the disk with the A/B partitions (default: the one holding root_<booted slot>)
  --efivars DIR         efivarfs (default /sys/firmware/efi/efivars)
  --cmdline FILE        kernel command line (default /proc/cmdline)
  --state FILE          update status (default /var/lib/cairn/update/status.json)
  --release FILE        this root's release.json (default /usr/lib/cairn/release.json)
  --trust-anchor FILE   CA certificates bundles must chain to (default /usr/share/cairn/update-ca.pem)
  --etc-upper DIR       the /etc overlay's upper dir (default /var/.cairn/overlays/etc/upper)
  --run-dir DIR         where init reports services (default /run/cairn)
  --config FILE         how bundles are fetched from servers: CAs, client certificate, timeouts
                        (default /etc/cairn/update.toml; optional; see docs/bundle.md)
                        ([channel] there: the update channel followed, see cairnctl update check)
  --no-reboot           never reboot (tests): print "would reboot" instead
  -h, --help            this text
  --version             the version
)";

// Cairn's own EFI variable where cairn-init leaves the reason a slot failed to boot.
constexpr const char* failure_variable = "CairnBootFailure";

// What the daemon is doing (the Operation property).
enum class Operation { idle, installing, checking, checking_channel };

std::string operation_name(Operation op) {
    switch (op) {
        case Operation::installing: return "installing";
        case Operation::checking_channel: return "checking-channel";
        case Operation::checking: return "checking";
        case Operation::idle: break;
    }
    return "idle";
}

// How an install or health check ended: Completed(i result, s code, s message).
struct Outcome {
    std::optional<ErrorCode> code;  // none: success
    std::string message;
};

struct Shared {
    std::mutex mutex;
    Operation operation = Operation::idle;
    int percent = 0;
    std::string message;
    std::string last_error;
    std::optional<ErrorCode> last_error_code;
    std::optional<Outcome> completed;  // set by the worker when an install ends; emitted by the main loop
    bool changed = false;
    // The channel (update.toml [channel]): its state, and when to check it next (monotonic).
    ChannelState channel;
    std::optional<std::chrono::steady_clock::time_point> next_check;
};

int64_t wall_clock() { return static_cast<int64_t>(std::time(nullptr)); }

std::string code_name(const std::optional<ErrorCode>& code) { return code ? std::string(error_code_name(*code)) : std::string(); }

// sdbus-c++ 1.x turns only an sdbus::Error thrown by a method or property handler into an error
// reply; any other exception unwinds through sd-bus and out of the event loop, ending the daemon.
// Every handler that can throw runs through guard(): the caller gets org.cairn.Updater1.Error.Failed
// with the reason, the log gets a line, and the daemon keeps serving.
template <typename F>
auto guard(const char* handler, F&& body) -> decltype(body()) {
    try {
        return body();
    } catch (const sdbus::Error&) {
        throw;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cairn-updated: %s: %s\n", handler, e.what());
        throw sdbus::Error("org.cairn.Updater1.Error.Failed", e.what());
    } catch (...) {
        std::fprintf(stderr, "cairn-updated: %s: unknown exception\n", handler);
        throw sdbus::Error("org.cairn.Updater1.Error.Failed", std::string(handler) + ": internal error");
    }
}

class Daemon {
public:
    Daemon(Engine& engine, BootControl& boot, const Release& release, bool may_reboot, fs::path config_file, fs::path trust_anchor,
           fs::path channel_file, std::string boot_id)
        : engine_(engine), boot_(boot), release_(release), may_reboot_(may_reboot), config_file_(std::move(config_file)),
          trust_anchor_(std::move(trust_anchor)), channel_file_(std::move(channel_file)), boot_id_(std::move(boot_id)),
          wake_(::eventfd(0, EFD_CLOEXEC)), random_(std::random_device{}()) {
        if (!wake_) fail_errno("eventfd");
    }

    // Follows the channel update.toml names, if any: the first check after a random delay of up to
    // the jitter (a fleet powered on together does not come at once), then one per interval.
    void start_channel() {
        try {
            channel_settings_ = load_update_config(config_file_).channel;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cairn-updated: %s: %s; following no channel until the daemon restarts\n", config_file_.c_str(), e.what());
            return;
        }
        try {
            shared_.channel = load_channel_state(channel_file_);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cairn-updated: %s; starting the channel's record afresh\n", e.what());
        }
        if (shared_.channel.reboot_at != 0 && shared_.channel.reboot_boot != boot_id_) {  // the device rebooted since
            shared_.channel.reboot_at = 0;
            shared_.channel.reboot_boot.clear();
            save_channel(shared_.channel);
        }
        if (channel_settings_.url.empty()) return;
        const int delay = random_delay(channel_settings_.jitter());
        std::lock_guard l(shared_.mutex);
        shared_.next_check = std::chrono::steady_clock::now() + std::chrono::seconds(delay);
        std::fprintf(stderr, "cairn-updated: following channel %s: first check in %d s, then every %d s (+ up to %d s)\n",
                     redact_url(channel_settings_.url).c_str(), delay, channel_settings_.interval_sec, channel_settings_.jitter());
    }

    void start_health_check(const HealthCheck& check) {
        set_operation(Operation::checking, 0, "health check of the trial boot");
        busy_ = true;
        worker_ = std::thread([this, check] {
            try {
                const std::string problem = run_health_check(check);
                if (problem.empty()) {
                    engine_.commit();
                    std::fprintf(stderr, "cairn-updated: trial boot of slot %c healthy: committed\n", slot_letter(boot_.booted()));
                    finish({});
                } else {
                    std::fprintf(stderr, "cairn-updated: trial boot of slot %c unhealthy: %s; rolling back\n", slot_letter(boot_.booted()), problem.c_str());
                    engine_.fail_trial(problem, ErrorCode::unhealthy);
                    finish(Outcome{ErrorCode::unhealthy, problem});
                    reboot_now();
                }
            } catch (const std::exception& e) {
                finish(Outcome{code_of(e, ErrorCode::internal), e.what()});
            }
        });
    }

    void run() {
        auto connection = connect();
        auto object = sdbus::createObject(*connection, dbus::object);
        object_ = object.get();
        const char* I = dbus::interface;
        object->registerMethod("InstallBundle").onInterface(I).withInputParamNames("source", "options")
            .implementedAs([this](const std::string& source, const std::map<std::string, sdbus::Variant>& options) {
                guard("InstallBundle", [&] { install(source, {}, options); });
            });
        // The bundle as an open descriptor: `cairnctl update install -` hands over its standard
        // input, so a bundle piped through ssh is installed without a copy on the device.
        object->registerMethod("InstallBundleFd").onInterface(I).withInputParamNames("bundle", "options")
            .implementedAs([this](const sdbus::UnixFd& bundle, const std::map<std::string, sdbus::Variant>& options) {
                guard("InstallBundleFd", [&] {
                    sdbus::UnixFd mine(bundle);  // a duplicate the worker owns
                    install("the bundle from standard input", std::make_shared<UniqueFd>(mine.release()), options);
                });
            });
        object->registerMethod("Mark").onInterface(I).withInputParamNames("state", "slot").withOutputParamNames("slot", "message")
            .implementedAs([this](const std::string& state, const std::string& slot) {
                return guard("Mark", [&] {
                    if (busy_) throw sdbus::Error("org.cairn.Updater1.Error.Busy", "an install, health check or channel check is running");
                    const std::optional<MarkState> wanted = parse_mark_state(state);
                    if (!wanted) throw sdbus::Error("org.cairn.Updater1.Error.Failed", "unknown state \"" + state + "\" (good, bad or active)");
                    Slot s = engine_.mark(*wanted, slot);
                    std::string name(1, slot_letter(s));
                    return std::make_tuple(name, "marked slot " + name + " " + std::string(mark_state_name(*wanted)));
                });
            });
        object->registerMethod("GetSlotStatus").onInterface(I).withOutputParamNames("slots").implementedAs([this] {
            return guard("GetSlotStatus", [&] { return slot_status(); });
        });
        object->registerMethod("GetStatus").onInterface(I).withOutputParamNames("json").implementedAs([this] {
            return guard("GetStatus", [&] { return status_json(); });
        });
        object->registerMethod("CheckChannel").onInterface(I).implementedAs([this] {
            guard("CheckChannel", [&] {
                if (channel_settings_.url.empty())
                    throw sdbus::Error("org.cairn.Updater1.Error.BadOption",
                                       "this device follows no channel (no [channel] url in " + config_file_.string() + " when the daemon started)");
                if (busy_) throw sdbus::Error("org.cairn.Updater1.Error.Busy", "an install, health check or channel check is running");
                start_channel_check();
            });
        });
        object->registerProperty("Operation").onInterface(I).withGetter([this] {
            std::lock_guard l(shared_.mutex);
            return operation_name(shared_.operation);
        });
        object->registerProperty("Progress").onInterface(I).withGetter([this] {
            std::lock_guard l(shared_.mutex);
            return sdbus::Struct<int32_t, std::string>(shared_.percent, shared_.message);
        });
        object->registerProperty("LastError").onInterface(I).withGetter([this] { std::lock_guard l(shared_.mutex); return shared_.last_error; });
        object->registerProperty("LastErrorCode").onInterface(I).withGetter([this] {
            std::lock_guard l(shared_.mutex);
            return code_name(shared_.last_error_code);
        });
        object->registerProperty("BootSlot").onInterface(I).withGetter([this] {
            return guard("BootSlot", [&] { return std::string(1, slot_letter(boot_.booted())); });
        });
        object->registerProperty("Compatible").onInterface(I).withGetter([this] { return release_.compatible; });
        // (i s s): result first, as it always was, so that a client reading only the result still works.
        object->registerSignal("Completed").onInterface(I).withParameters<int32_t, std::string, std::string>("result", "code", "message");
        object->finishRegistration();
        std::fprintf(stderr, "cairn-updated: serving %s (slot %c, %s %s)\n", dbus::service, slot_letter(boot_.booted()),
                     release_.compatible.c_str(), release_.version.c_str());

        for (;;) {
            while (connection->processPendingRequest()) {
            }
            auto pd = connection->getEventLoopPollData();
            pollfd fds[2] = {{pd.fd, pd.events, 0}, {wake_.get(), POLLIN, 0}};
            int timeout = run_timers();
            if (pd.timeout_usec != UINT64_MAX) {
                timespec ts{};
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t now_us = uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
                const int bus = pd.timeout_usec <= now_us ? 0 : static_cast<int>(std::min<uint64_t>((pd.timeout_usec - now_us + 999) / 1000, INT32_MAX));
                timeout = timeout < 0 ? bus : std::min(timeout, bus);
            }
            if (::poll(fds, 2, timeout) < 0 && errno != EINTR) fail_errno("poll");
            if (fds[1].revents & POLLIN) {
                uint64_t n;
                if (::read(wake_.get(), &n, sizeof n) < 0) {
                }
                try {
                    publish();
                } catch (const std::exception& e) {
                    std::fprintf(stderr, "cairn-updated: announcing a change: %s\n", e.what());
                }
            }
        }
    }

private:
    std::unique_ptr<sdbus::IConnection> connect() {
        // The bus may start after us (the image's services start together): try for a while.
        for (int attempt = 0;; ++attempt) {
            try {
                return sdbus::createSystemBusConnection(dbus::service);
            } catch (const sdbus::Error& e) {
                if (attempt >= 150) fail(std::string("cannot own ") + dbus::service + " on the system bus: " + e.getMessage());
                std::this_thread::sleep_for(std::chrono::milliseconds(200));
            }
        }
    }

    // `source` names the bundle; `fd`, when given, is the bundle itself (else source is its path).
    void install(const std::string& source, std::shared_ptr<UniqueFd> fd, const std::map<std::string, sdbus::Variant>& options) {
        if (busy_) throw sdbus::Error("org.cairn.Updater1.Error.Busy", "an install, health check or channel check is already running");
        InstallOptions o;
        bool reboot = false;
        for (const auto& [key, value] : options) {
            if (key == "force") o.force = value.get<bool>();
            else if (key == "reboot") reboot = value.get<bool>();
            else throw sdbus::Error("org.cairn.Updater1.Error.BadOption", "unknown option \"" + key + "\" (force, reboot)");
        }
        if (worker_.joinable()) worker_.join();
        busy_ = true;
        {
            std::lock_guard l(shared_.mutex);
            shared_.last_error.clear();
            shared_.last_error_code.reset();
        }
        set_operation(Operation::installing, 0, "starting");
        try {
            start_install(source, std::move(fd), o, reboot);
        } catch (const std::exception& e) {  // the thread could not start: not busy for ever
            finish(Outcome{ErrorCode::internal, std::string("cannot start the install: ") + e.what()});
            throw;
        }
    }

    void start_install(const std::string& source, std::shared_ptr<UniqueFd> fd, const InstallOptions& o, bool reboot) {
        worker_ = std::thread([this, source, fd, o, reboot] {
            const auto started = std::chrono::steady_clock::now();
            try {
                const ProgressFn progress = progress_reporter(started);
                if (!fd && is_bundle_url(source)) {
                    // Read for each install: a fixed config needs no restart; a bad one fails only this.
                    const HttpSettings http = with_code(ErrorCode::bad_option, [&] { return load_update_config(config_file_).http; });
                    engine_.install_url(source, http, o, progress);
                } else {
                    UniqueFd bundle = fd ? std::move(*fd) : with_code(ErrorCode::io, [&] { return open_file(source, O_RDONLY | O_CLOEXEC); });
                    engine_.install(std::move(bundle), source, o, progress);
                }
                std::fprintf(stderr, "cairn-updated: installed %s in %.2f s\n", redact_url(source).c_str(),
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
                finish({});
                if (reboot) reboot_now();
            } catch (const std::exception& e) {
                const ErrorCode code = code_of(e, ErrorCode::internal);
                std::fprintf(stderr, "cairn-updated: install of %s failed (%s): %s\n", redact_url(source).c_str(),
                             std::string(error_code_name(code)).c_str(), e.what());
                finish(Outcome{code, e.what()});
            }
        });
    }

    std::vector<sdbus::Struct<std::string, std::map<std::string, sdbus::Variant>>> slot_status() {
        UpdateStatus st = engine_.status();
        std::vector<Slot> order = boot_.order();
        std::optional<Slot> next = boot_.next();
        std::vector<sdbus::Struct<std::string, std::map<std::string, sdbus::Variant>>> out;
        for (Slot s : {Slot::a, Slot::b}) {
            std::string name(1, slot_letter(s));
            std::map<std::string, sdbus::Variant> m;
            const SlotRecord r = st.slots.count(name) ? st.slots[name] : SlotRecord{};
            m["state"] = sdbus::Variant(std::string(slot_state_name(r.state)));
            m["version"] = sdbus::Variant(r.version);
            m["build_id"] = sdbus::Variant(r.build_id);
            m["booted"] = sdbus::Variant(s == boot_.booted());
            m["bootable"] = sdbus::Variant(std::find(order.begin(), order.end(), s) != order.end());
            m["primary"] = sdbus::Variant(!order.empty() && order.front() == s);
            m["next"] = sdbus::Variant(next == s);
            out.emplace_back(name, m);
        }
        return out;
    }

    int random_delay(int up_to) { return up_to > 0 ? static_cast<int>(random_() % (static_cast<uint64_t>(up_to) + 1)) : 0; }

    // GetStatus: the engine's status, and the channel's record when the device follows one.
    std::string status_json() {
        nlohmann::json j = nlohmann::json::parse(engine_.status().to_json());
        std::lock_guard l(shared_.mutex);
        if (!channel_settings_.url.empty() || !shared_.channel.url.empty()) j["channel"] = nlohmann::json::parse(shared_.channel.to_json());
        return j.dump();
    }

    // Starts a due channel check, and reboots when an update's reboot window came. Returns the
    // milliseconds until the next timer (-1: none).
    int run_timers() {
        using namespace std::chrono;
        int timeout = -1;
        std::optional<steady_clock::time_point> due;
        int64_t reboot_at = 0;
        {
            std::lock_guard l(shared_.mutex);
            due = shared_.next_check;
            reboot_at = shared_.channel.reboot_at;
        }
        if (reboot_at > 0) {
            const int64_t now = wall_clock();
            if (now >= reboot_at && !busy_) {
                std::fprintf(stderr, "cairn-updated: the channel's reboot window: rebooting into the installed update\n");
                {
                    std::lock_guard l(shared_.mutex);
                    shared_.channel.reboot_at = 0;
                    save_channel(shared_.channel);
                }
                reboot_now();
            } else {  // the wall clock may be set meanwhile: look again at least once a minute
                timeout = static_cast<int>(std::clamp<int64_t>(reboot_at - now, 1, 60) * 1000);
            }
        }
        if (due) {
            const auto now = steady_clock::now();
            if (now >= *due) {
                if (busy_) {  // a health check or install runs: look again shortly
                    std::lock_guard l(shared_.mutex);
                    shared_.next_check = now + seconds(5);
                } else {
                    start_channel_check();
                }
                return 0;
            }
            const int ms = static_cast<int>(std::min<int64_t>(duration_cast<milliseconds>(*due - now).count() + 1, INT32_MAX));
            timeout = timeout < 0 ? ms : std::min(timeout, ms);
        }
        return timeout;
    }

    void save_channel(const ChannelState& st) {
        try {
            save_channel_state(channel_file_, st);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cairn-updated: %s: %s\n", channel_file_.c_str(), e.what());
        }
    }

    // One check of the channel on the worker: fetch and check the index, decide, install a newer
    // version when the channel says so (then reboot as it says), record what happened.
    void start_channel_check() {
        if (worker_.joinable()) worker_.join();
        busy_ = true;
        {
            std::lock_guard l(shared_.mutex);
            shared_.next_check.reset();
            shared_.last_error.clear();
            shared_.last_error_code.reset();
        }
        set_operation(Operation::checking_channel, 0, "checking the channel");
        worker_ = std::thread([this] {
            ChannelState st;
            {
                std::lock_guard l(shared_.mutex);
                st = shared_.channel;
            }
            ChannelSettings settings = channel_settings_;
            Outcome outcome;
            bool reboot = false;
            try {
                // Read for each check: a changed CA, timeout or install/reboot choice needs no restart.
                const UpdateConfig config = with_code(ErrorCode::bad_option, [&] { return load_update_config(config_file_); });
                if (config.channel.url.empty()) fail_update(ErrorCode::bad_option, config_file_.string() + ": no [channel] url any more");
                settings = config.channel;
                const std::string url = redact_url(settings.url);
                if (st.url != url) st = ChannelState{url};  // another channel: its own record, its own timeline
                const int64_t now = wall_clock();
                const ChannelIndex index = fetch_channel_index(settings.url, config.http, trust_anchor_, certificate_time(now, release_.created));
                const ChannelVerdict verdict = judge_channel_index(index, release_.compatible, release_.version, release_.build_id,
                                                                   engine_.status(), st.published, now);
                st.published = std::max(st.published, index.published);
                st.version = index.version;
                st.result = std::string(channel_verdict_name(verdict));
                st.code.reset();
                st.message = describe(verdict, index);
                if (verdict == ChannelVerdict::available && settings.install) {
                    const std::string bundle = resolve_bundle_url(settings.url, index.bundle);
                    std::fprintf(stderr, "cairn-updated: channel %s: %s available; installing from %s\n", url.c_str(), index.version.c_str(),
                                 redact_url(bundle).c_str());
                    set_operation(Operation::installing, 0, "starting");
                    InstallOptions o;
                    o.expect_build_id = index.build_id;
                    engine_.install_url(bundle, config.http, o, progress_reporter(std::chrono::steady_clock::now()));
                    st.result = "installed";
                    std::string installed = "installed " + index.version;
                    if (const UpdateStatus after = engine_.status(); after.last && after.last->transfer) {
                        const Transfer& t = *after.last->transfer;
                        installed += " (downloaded " + std::to_string(t.downloaded) + " of " + std::to_string(t.payload_bytes) +
                                     " bytes, reused " + std::to_string(t.reused) +
                                     (t.delta ? ", " + std::to_string(t.delta) + " of the downloaded a delta" : "") + ")";
                    }
                    switch (settings.reboot.kind) {
                        case RebootPolicy::Kind::now:
                            st.message = installed + "; rebooting into it";
                            reboot = true;
                            break;
                        case RebootPolicy::Kind::never:
                            st.message = installed + "; it boots on the next reboot";
                            break;
                        case RebootPolicy::Kind::window:
                            st.reboot_at = next_reboot_time(settings.reboot, wall_clock(), random_);
                            st.reboot_boot = boot_id_;
                            st.message = installed + "; rebooting in its window, at " +
                                         utc_timestamp(std::chrono::system_clock::from_time_t(static_cast<time_t>(st.reboot_at)));
                            break;
                    }
                }
            } catch (const std::exception& e) {
                outcome = Outcome{code_of(e, ErrorCode::internal), e.what()};
                st.result = "failed";
                st.code = outcome.code;
                st.message = e.what();
            }
            st.checked = wall_clock();
            // A failed check comes again sooner (at most 10 minutes), a fleet still spread by the jitter.
            const int wait = (outcome.code ? std::min(settings.interval_sec, 600) : settings.interval_sec) + random_delay(settings.jitter());
            st.next_check = st.checked + wait;
            std::fprintf(stderr, "cairn-updated: channel %s: %s%s%s; next check in %d s\n", st.url.c_str(), st.result.c_str(),
                         st.message.empty() ? "" : ": ", st.message.c_str(), wait);
            save_channel(st);
            {
                std::lock_guard l(shared_.mutex);
                shared_.channel = st;
                shared_.next_check = std::chrono::steady_clock::now() + std::chrono::seconds(wait);
            }
            finish(outcome);
            if (reboot) reboot_now();
        });
    }

    static std::string describe(ChannelVerdict verdict, const ChannelIndex& index) {
        switch (verdict) {
            case ChannelVerdict::up_to_date: return "the channel names " + index.version + "; this is up to date";
            case ChannelVerdict::waiting: return index.version + " is installed and boots on the next reboot";
            case ChannelVerdict::skipped: return index.version + " (build " + index.build_id + ") failed on this device before; not installing it again";
            case ChannelVerdict::available: return index.version + " is available (the channel installs nothing: install = false)";
        }
        return "";
    }

    ProgressFn progress_reporter(std::chrono::steady_clock::time_point started) {
        return [this, started](int percent, const std::string& message) {
            if (std::getenv("CAIRN_UPDATED_TRACE"))
                std::fprintf(stderr, "%8.3f s %3d%% %s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), percent, message.c_str());
            std::lock_guard l(shared_.mutex);
            if (percent == shared_.percent && message == shared_.message) return;
            shared_.percent = percent;
            shared_.message = message;
            shared_.changed = true;
            poke();
        };
    }

    void set_operation(Operation op, int percent, const std::string& message) {
        std::lock_guard l(shared_.mutex);
        shared_.operation = op;
        shared_.percent = percent;
        shared_.message = message;
        shared_.changed = true;
        poke();
    }

    void finish(const Outcome& outcome) {
        std::lock_guard l(shared_.mutex);
        shared_.operation = Operation::idle;
        if (!outcome.code) shared_.percent = 100;
        shared_.last_error = outcome.message;
        shared_.last_error_code = outcome.code;
        shared_.completed = outcome;
        shared_.changed = true;
        busy_ = false;
        poke();
    }

    void poke() {
        uint64_t one = 1;
        if (::write(wake_.get(), &one, sizeof one) < 0) {
        }
    }

    void publish() {
        std::optional<Outcome> completed;
        bool changed;
        {
            std::lock_guard l(shared_.mutex);
            changed = std::exchange(shared_.changed, false);
            completed = std::exchange(shared_.completed, std::nullopt);
        }
        if (!object_) return;
        if (changed) object_->emitPropertiesChangedSignal(dbus::interface, {"Operation", "Progress", "LastError", "LastErrorCode"});
        if (completed)
            object_->emitSignal("Completed").onInterface(dbus::interface)
                .withArguments(int32_t(completed->code ? 1 : 0), code_name(completed->code), completed->message);
    }

    void reboot_now() {
        ::sync();
        if (!may_reboot_) {
            std::fprintf(stderr, "cairn-updated: would reboot now (--no-reboot)\n");
            return;
        }
        std::fprintf(stderr, "cairn-updated: rebooting\n");
        std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the last D-Bus messages go
        // An orderly reboot through the system's init (busybox's `reboot` signals PID 1, systemd's
        // asks systemd): services stop and the data and log partitions are unmounted cleanly. Init
        // stops this daemon on the way; if the reboot has not come within the grace time, the
        // kernel reboots at once: a trial or a rollback must never wait on a stuck init.
        bool asked = false;
        try {
            RunResult r = cairn::run({"reboot"});
            if (r.exit_code != 0) std::fprintf(stderr, "cairn-updated: reboot exited %d: %s\n", r.exit_code, trim_end(r.err).c_str());
            asked = r.exit_code == 0;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cairn-updated: %s\n", e.what());
        }
        if (asked) {
            std::this_thread::sleep_for(std::chrono::seconds(60));
            std::fprintf(stderr, "cairn-updated: init did not reboot within 60 s; rebooting now\n");
        } else {  // no init to ask: waiting would only delay the trial or the rollback
            std::fprintf(stderr, "cairn-updated: rebooting now without init\n");
        }
        ::sync();
        ::reboot(RB_AUTOBOOT);
    }

    Engine& engine_;
    BootControl& boot_;
    const Release& release_;
    bool may_reboot_;
    fs::path config_file_;  // /etc/cairn/update.toml: how bundles are fetched from servers, the channel
    fs::path trust_anchor_;  // what bundles and channel indexes must be signed by
    fs::path channel_file_;  // the channel's record, beside the status file
    std::string boot_id_;    // this boot's id: a reboot scheduled in an earlier boot is void
    ChannelSettings channel_settings_;  // as the daemon started (url empty: none)
    UniqueFd wake_;
    Shared shared_;
    std::atomic<bool> busy_{false};
    std::thread worker_;
    sdbus::IObject* object_ = nullptr;
    std::mt19937_64 random_;  // jitter; the main thread and the worker never draw at once (busy_)
};

std::string take_failure_reason(EfiVars& vars) {
    try {
        auto v = vars.read(failure_variable, cairn_vendor_guid);
        if (!v) return "";
        vars.remove(failure_variable, cairn_vendor_guid);
        return trim_end(std::string_view(reinterpret_cast<const char*>(v->data.data()), v->data.size()),
                        std::string_view("\0\n", 2));
    } catch (const Error& e) {
        std::fprintf(stderr, "cairn-updated: %s\n", e.what());
        return "";
    }
}

}  // namespace

int main(int argc, char** argv) {
    fs::path disk, efivars = "/sys/firmware/efi/efivars", cmdline = "/proc/cmdline", state = "/var/lib/cairn/update/status.json",
                   release_file = "/usr/lib/cairn/release.json", anchor = "/usr/share/cairn/update-ca.pem",
                   etc_upper = "/var/.cairn/overlays/etc/upper", run_dir = "/run/cairn", config_file = "/etc/cairn/update.toml";
    bool may_reboot = true;
    try {
        Args a(argc, argv);
        while (a.next()) {
            if (a.is("--disk")) disk = a.value();
            else if (a.is("--efivars")) efivars = a.value();
            else if (a.is("--cmdline")) cmdline = a.value();
            else if (a.is("--state")) state = a.value();
            else if (a.is("--release")) release_file = a.value();
            else if (a.is("--trust-anchor")) anchor = a.value();
            else if (a.is("--etc-upper")) etc_upper = a.value();
            else if (a.is("--run-dir")) run_dir = a.value();
            else if (a.is("--config")) config_file = a.value();
            else if (a.is("--no-reboot")) may_reboot = false;
            else throw UsageError("unknown option '" + a.arg() + "'");
        }
        if (a.help()) {
            std::fputs(usage_text, stdout);
            return 0;
        }
        if (a.version()) return print_version("cairn-updated");
    } catch (const UsageError& e) {
        std::fprintf(stderr, "cairn-updated: %s (see --help)\n", e.what());
        return 2;
    }
    try {
        Release release = Release::load(release_file);
        EfiVars vars(efivars);
        if (disk.empty()) {
            // The disk the boot came from: the one the signed command line names (as cairn-init chose it).
            initrd::BootOptions boot = initrd::parse_cmdline(read_file(cmdline));
            auto found = partitions::find_boot_disk({}, *boot.disk, loader_device_part_uuid(vars));
            if (!found) fail("no disk with the GUID " + boot.disk->str() + " that the kernel command line names (give --disk)");
            disk = found->disk.device;
        }
        UefiBootControl boot(vars, disk, cmdline);
        EngineConfig config{disk, state, anchor, etc_upper, "/proc/sys/kernel/random/boot_id", release};
        Engine engine(boot, config);
        std::string boot_id;
        try {
            boot_id = trim_end(read_file(config.boot_id_file));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cairn-updated: %s\n", e.what());
        }
        Daemon daemon(engine, boot, release, may_reboot, config_file, anchor, state.parent_path() / "channel.json", boot_id);

        BootDecision d;
        try {
            d = engine.on_boot(take_failure_reason(vars));
        } catch (const std::exception& e) {  // serve anyway: a fixing bundle must be installable
            std::fprintf(stderr, "cairn-updated: settling the boot failed: %s; serving anyway\n", e.what());
        }
        switch (d.kind) {
            case BootDecision::Kind::trial: {
                HealthCheck check;
                check.mode = choose_health_mode(release.health_check);
                std::fprintf(stderr, "cairn-updated: trial boot of slot %s: running the health check (%s)\n", d.slot.c_str(),
                             std::string(health_mode_name(check.mode)).c_str());
                check.command = release.health_check;
                check.run_dir = run_dir;
                daemon.start_health_check(check);
                break;
            }
            case BootDecision::Kind::rolled_back:
                std::fprintf(stderr, "cairn-updated: ROLLBACK: back on slot %s: %s\n", d.slot.c_str(), d.reason.c_str());
                break;
            case BootDecision::Kind::fell_back:
                std::fprintf(stderr, "cairn-updated: FALLBACK: slot %s failed to boot, running slot %s: %s\n",
                             d.slot == "a" ? "b" : "a", d.slot.c_str(), d.reason.c_str());
                break;
            case BootDecision::Kind::interrupted:
                std::fprintf(stderr, "cairn-updated: %s\n", d.reason.c_str());
                break;
            case BootDecision::Kind::normal:
                break;
        }
        daemon.start_channel();
        daemon.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cairn-updated: %s\n", e.what());
        return 1;
    }
}
