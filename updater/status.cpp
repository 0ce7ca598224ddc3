#include "updater/status.hpp"

#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "common/error.hpp"
#include "common/file.hpp"

namespace cairn::updater {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string UpdateStatus::to_json() const {
    json j = json::object();
    json s = json::object();
    for (const auto& [name, r] : slots)
        s[name] = {{"state", r.state}, {"version", r.version}, {"build_id", r.build_id}, {"changed", r.changed}};
    j["slots"] = s;
    j["pending"] = pending ? json{{"slot", pending->slot}, {"version", pending->version}, {"phase", pending->phase},
                                  {"boot_id", pending->boot_id}}
                           : json(nullptr);
    j["last"] = last ? json{{"kind", last->kind}, {"slot", last->slot}, {"version", last->version},
                            {"reason", last->reason}, {"time", last->time}}
                     : json(nullptr);
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
            SlotRecord rec{r.at("state"), r.at("version"), r.at("build_id"), r.at("changed")};
            check(rec.state == "good" || rec.state == "bad" || rec.state == "installing" || rec.state == "trial",
                  "slot " + name + ": unknown state \"" + rec.state + "\"");
            st.slots[name] = rec;
        }
        if (!j.at("pending").is_null()) {
            const json& p = j["pending"];
            st.pending = Pending{p.at("slot"), p.at("version"), p.at("phase"), p.at("boot_id")};
            check(is_slot(st.pending->slot), "pending: unknown slot \"" + st.pending->slot + "\"");
            check(st.pending->phase == "written" || st.pending->phase == "armed", "pending: unknown phase \"" + st.pending->phase + "\"");
        }
        if (!j.at("last").is_null()) {
            const json& l = j["last"];
            st.last = Event{l.at("kind"), l.at("slot"), l.at("version"), l.at("reason"), l.at("time")};
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
