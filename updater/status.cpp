#include "updater/status.hpp"

#include <nlohmann/json.hpp>

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
    return j.dump(1) + "\n";
}

UpdateStatus load_status(const fs::path& file) {
    UpdateStatus st;
    std::error_code ec;
    if (!fs::exists(file, ec)) return st;
    try {
        json j = json::parse(read_file(file));
        for (auto& [name, r] : j.at("slots").items())
            st.slots[name] = SlotRecord{r.at("state"), r.at("version"), r.at("build_id"), r.at("changed")};
        if (!j.at("pending").is_null()) {
            const json& p = j["pending"];
            st.pending = Pending{p.at("slot"), p.at("version"), p.at("phase"), p.at("boot_id")};
        }
        if (!j.at("last").is_null()) {
            const json& l = j["last"];
            st.last = Event{l.at("kind"), l.at("slot"), l.at("version"), l.at("reason"), l.at("time")};
        }
        for (const json& c : j.at("etc_conflicts")) st.etc_conflicts.push_back({c.at("path"), c.at("resolution")});
    } catch (const json::exception& e) {
        fail(file.string() + ": damaged update status: " + e.what());
    }
    return st;
}

void save_status(const fs::path& file, const UpdateStatus& status) {
    fs::create_directories(file.parent_path());
    write_file_atomic(file, status.to_json(), 0644);
}

}  // namespace cairn::updater
