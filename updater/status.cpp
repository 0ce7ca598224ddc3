#include "updater/status.hpp"

#include <cstdio>
#include <ctime>
#include <utility>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "common/error.hpp"
#include "common/file.hpp"

namespace cairn::updater {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

template <typename E, size_t N>
std::string_view name_of(const std::pair<E, std::string_view> (&table)[N], E value) {
    for (const auto& [v, name] : table)
        if (v == value) return name;
    return "unknown";
}

template <typename E, size_t N>
std::optional<E> parse_name(const std::pair<E, std::string_view> (&table)[N], std::string_view name) {
    for (const auto& [v, n] : table)
        if (n == name) return v;
    return std::nullopt;
}

constexpr std::pair<SlotState, std::string_view> slot_states[] = {
    {SlotState::unknown, "unknown"}, {SlotState::good, "good"},   {SlotState::bad, "bad"},
    {SlotState::installing, "installing"}, {SlotState::trial, "trial"},
};
constexpr std::pair<PendingPhase, std::string_view> phases[] = {{PendingPhase::written, "written"}, {PendingPhase::armed, "armed"}};
constexpr std::pair<EventKind, std::string_view> event_kinds[] = {
    {EventKind::installed, "installed"},     {EventKind::committed, "committed"}, {EventKind::rolled_back, "rolled-back"},
    {EventKind::failed, "failed"},           {EventKind::interrupted, "interrupted"}, {EventKind::fell_back, "fell-back"},
    {EventKind::state_rebuilt, "state-rebuilt"},
};

}  // namespace

std::string_view slot_state_name(SlotState state) { return name_of(slot_states, state); }
std::optional<SlotState> parse_slot_state(std::string_view name) { return parse_name(slot_states, name); }
std::string_view pending_phase_name(PendingPhase phase) { return name_of(phases, phase); }
std::optional<PendingPhase> parse_pending_phase(std::string_view name) { return parse_name(phases, name); }
std::string_view event_kind_name(EventKind kind) { return name_of(event_kinds, kind); }
std::optional<EventKind> parse_event_kind(std::string_view name) { return parse_name(event_kinds, name); }

std::string UpdateStatus::to_json() const {
    json j = json::object();
    json s = json::object();
    for (const auto& [name, r] : slots)
        s[name] = {{"state", slot_state_name(r.state)}, {"version", r.version}, {"build_id", r.build_id}, {"changed", r.changed}};
    j["slots"] = s;
    j["pending"] = pending ? json{{"slot", pending->slot}, {"version", pending->version}, {"phase", pending_phase_name(pending->phase)},
                                  {"boot_id", pending->boot_id}}
                           : json(nullptr);
    j["last"] = last ? json{{"kind", event_kind_name(last->kind)}, {"slot", last->slot}, {"version", last->version},
                            {"reason", last->reason}, {"time", last->time},
                            {"code", last->code ? json(error_code_name(*last->code)) : json(nullptr)}}
                     : json(nullptr);
    if (last && last->transfer) {
        const Transfer& t = *last->transfer;
        j["last"]["transfer"] = {{"payload_bytes", t.payload_bytes}, {"downloaded", t.downloaded}, {"reused", t.reused}, {"seconds", t.seconds}};
        if (t.delta) j["last"]["transfer"]["delta"] = t.delta;
    }
    json c = json::array();
    for (const EtcConflict& e : etc_conflicts) c.push_back({{"path", e.path}, {"resolution", e.resolution}});
    j["etc_conflicts"] = c;
    j["save_error"] = save_error.empty() ? json(nullptr) : json(save_error);
    return j.dump(1) + "\n";
}

namespace {

bool is_slot(const std::string& s) { return s == "a" || s == "b"; }

void check(bool ok, const std::string& what) {
    if (!ok) throw DamagedStatus(what);
}

}  // namespace

UpdateStatus load_status(const fs::path& file) {
    UpdateStatus st;
    std::error_code ec;
    if (!fs::exists(file, ec)) return st;
    const std::string text = read_file(file);  // an unreadable file is an I/O error, not damage
    try {
        json j = json::parse(text);
        check(j.is_object(), "not a JSON object");
        check(j.at("slots").is_object(), "\"slots\" is not an object");
        for (auto& [name, r] : j.at("slots").items()) {
            check(is_slot(name), "unknown slot \"" + name + "\"");
            const std::string state = r.at("state");
            // "" is what earlier versions wrote for a slot they knew nothing about.
            const std::optional<SlotState> parsed = state.empty() ? SlotState::unknown : parse_slot_state(state);
            check(parsed.has_value(), "slot " + name + ": unknown state \"" + state + "\"");
            st.slots[name] = SlotRecord{*parsed, r.at("version"), r.at("build_id"), r.at("changed")};
        }
        if (!j.at("pending").is_null()) {
            const json& p = j["pending"];
            const std::string slot = p.at("slot"), phase = p.at("phase");
            check(is_slot(slot), "pending: unknown slot \"" + slot + "\"");
            const std::optional<PendingPhase> parsed = parse_pending_phase(phase);
            check(parsed.has_value(), "pending: unknown phase \"" + phase + "\"");
            st.pending = Pending{slot, p.at("version"), *parsed, p.at("boot_id")};
        }
        if (!j.at("last").is_null()) {
            const json& l = j["last"];
            const std::string kind = l.at("kind");
            const std::optional<EventKind> parsed = parse_event_kind(kind);
            check(parsed.has_value(), "last: unknown kind \"" + kind + "\"");
            st.last = Event{*parsed, l.at("slot"), l.at("version"), l.at("reason"), l.at("time"), std::nullopt};
            // Absent in earlier versions' files; a newer version's code this one does not know is internal.
            if (l.contains("code") && !l["code"].is_null()) {
                const std::string code = l["code"];
                st.last->code = parse_error_code(code).value_or(ErrorCode::internal);
            }
            if (l.contains("transfer")) {
                const json& t = l["transfer"];
                st.last->transfer = Transfer{t.at("payload_bytes"), t.at("downloaded"), t.at("reused"), t.at("seconds"), t.value("delta", uint64_t{0})};
            }
        }
        check(j.at("etc_conflicts").is_array(), "\"etc_conflicts\" is not an array");
        for (const json& c : j.at("etc_conflicts")) st.etc_conflicts.push_back({c.at("path"), c.at("resolution")});
    } catch (const DamagedStatus& e) {
        throw DamagedStatus(file.string() + ": damaged update status: " + e.what());
    } catch (const json::exception& e) {
        throw DamagedStatus(file.string() + ": damaged update status: " + e.what());
    }
    return st;
}

void save_status(const fs::path& file, const UpdateStatus& status) {
    fs::create_directories(file.parent_path());
    write_file_atomic(file, status.to_json(), 0644);
}

fs::path set_aside_damaged(const fs::path& file, size_t keep) {
    const std::string prefix = file.filename().string() + ".damaged-";
    // UTC to the nanosecond, fixed width: the names sort by age.
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    std::tm tm{};
    ::gmtime_r(&now.tv_sec, &tm);
    char stamp[48];
    const size_t n = std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm);
    std::snprintf(stamp + n, sizeof stamp - n, ".%09ldZ", static_cast<long>(now.tv_nsec));
    fs::path aside = file.parent_path() / (prefix + stamp);
    for (int i = 1; fs::exists(aside); ++i) aside = file.parent_path() / (prefix + stamp + "." + std::to_string(i));
    if (::rename(file.c_str(), aside.c_str()) != 0) fail_errno("moving the damaged " + file.string() + " aside");
    fsync_directory(file.parent_path());
    // Drop the oldest beyond `keep`.
    std::vector<fs::path> copies;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(file.parent_path(), ec))
        if (e.path().filename().string().rfind(prefix, 0) == 0) copies.push_back(e.path());
    std::sort(copies.begin(), copies.end());
    for (size_t i = 0; i + keep < copies.size(); ++i) fs::remove_all(copies[i], ec);
    return aside;
}

}  // namespace cairn::updater
