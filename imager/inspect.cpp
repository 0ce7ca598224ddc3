#include "imager/inspect.hpp"

#include <fcntl.h>

#include <cstdio>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/units.hpp"
#include "imager/build.hpp"
#include "imager/verity.hpp"
#include "partitions/gpt.hpp"
#include "partitions/layout.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string role_of(const partitions::GptEntry& e) {
    using namespace partitions;
    const std::string t = e.type.str();
    if (t == types::esp) return "esp";
    if (t == types::root_x86_64) return "root";
    if (t == types::root_x86_64_verity) return "root-verity";
    if (t == types::var) return "data";
    if (e.label == label_for(Role::Log)) return "log";
    return "extra";
}

}  // namespace

InspectResult inspect_image(const fs::path& image, const std::optional<fs::path>& manifest_path) {
    std::error_code ec;
    if (!fs::is_regular_file(image, ec)) fail(image.string() + ": no such image file");
    partitions::GptTable table = partitions::read_gpt(image);

    json manifest = nullptr;
    fs::path mpath = manifest_path ? *manifest_path : image.parent_path() / outputs::manifest;
    if (manifest_path || fs::exists(mpath, ec)) {
        try {
            manifest = json::parse(read_file(mpath));
        } catch (const json::exception& e) {
            fail(mpath.string() + ": not a Cairn build manifest: " + e.what());
        }
    }

    InspectResult result;
    json& report = result.report;
    report["image"] = image.string();
    report["disk_size"] = table.disk_size;
    report["disk_guid"] = table.disk_guid.str();
    if (!manifest.is_null()) report["manifest"] = mpath.string();
    json parts = json::array();
    for (size_t i = 0; i < table.entries.size(); ++i) {
        const auto& e = table.entries[i];
        parts.push_back({{"number", i + 1}, {"label", e.label}, {"role", role_of(e)}, {"type", e.type.str()}, {"uuid", e.uuid.str()},
                         {"offset", e.offset}, {"size", e.size}});
    }
    report["partitions"] = parts;

    UniqueFd fd = open_file(image, O_RDONLY);
    json slots = json::array();
    for (const auto& root : table.entries) {
        if (role_of(root) != "root") continue;
        json slot = {{"root", root.label}};
        std::string slot_name = root.label.size() == 6 && root.label.starts_with("root_") ? root.label.substr(5) : "";
        slot["slot"] = slot_name;
        const std::string verity_label =
            slot_name.empty() ? "root_verity" : partitions::label_for(partitions::Role::RootVerity, slot_name[0]);
        const partitions::GptEntry* hash = nullptr;
        for (const auto& e : table.entries)
            if (e.label == verity_label) hash = &e;
        std::vector<std::string> problems;
        if (!hash) {
            slot["verity"] = nullptr;
            problems.push_back("no partition " + verity_label);
        } else {
            slot["verity_partition"] = hash->label;
            std::string expected = to_hex(root.uuid.bytes) + to_hex(hash->uuid.bytes);
            slot["root_hash_from_partition_uuids"] = expected;
            try {
                verity::Superblock sb = verity::read_superblock(fd.get(), hash->offset, image.string() + ": " + hash->label);
                slot["data_blocks"] = sb.data_blocks;
                slot["salt"] = to_hex(sb.salt);
                if (sb.data_blocks * sb.data_block_size > root.size)
                    problems.push_back("the verity superblock covers " + format_size(sb.data_blocks * sb.data_block_size) + ", more than " + root.label + " holds");
                else {
                    verity::VerifyResult v = verity::verify(fd.get(), root.offset, fd.get(), hash->offset);
                    slot["root_hash"] = to_hex(v.root_hash);
                    if (!v.ok) problems.push_back(root.label + ": " + v.problem);
                    if (to_hex(v.root_hash) != expected)
                        problems.push_back("root hash " + to_hex(v.root_hash) + " does not match the partition UUIDs (" + expected + ")");
                    if (!manifest.is_null() && !slot_name.empty()) {
                        auto m = manifest["slots"][slot_name]["verity"]["root_hash"];
                        if (m.is_string() && m.get<std::string>() != to_hex(v.root_hash))
                            problems.push_back("root hash differs from the manifest's (" + m.get<std::string>() + ")");
                    }
                }
            } catch (const Error& e) {
                problems.push_back(e.what());
            }
        }
        slot["ok"] = problems.empty();
        slot["problems"] = problems;
        if (!problems.empty()) result.ok = false;
        slots.push_back(slot);
    }
    report["slots"] = slots;
    report["ok"] = result.ok;
    return result;
}

std::string format_report(const json& r) {
    std::ostringstream out;
    out << r["image"].get<std::string>() << ": " << format_size(r["disk_size"].get<uint64_t>()) << ", GPT disk "
        << r["disk_guid"].get<std::string>() << "\n\n";
    char line[256];
    std::snprintf(line, sizeof line, "  %-2s %-16s %-12s %12s %12s  %s\n", "#", "label", "role", "start", "size", "partition uuid");
    out << line;
    for (const auto& p : r["partitions"]) {
        std::snprintf(line, sizeof line, "  %-2d %-16s %-12s %12s %12s  %s\n", p["number"].get<int>(), p["label"].get<std::string>().c_str(),
                      p["role"].get<std::string>().c_str(), format_size(p["offset"].get<uint64_t>()).c_str(),
                      format_size(p["size"].get<uint64_t>()).c_str(), p["uuid"].get<std::string>().c_str());
        out << line;
    }
    out << "\n";
    for (const auto& s : r["slots"]) {
        std::string name = s["slot"].get<std::string>();
        out << "slot " << (name.empty() ? "-" : name) << ": " << s["root"].get<std::string>();
        if (s.contains("verity_partition")) out << " + " << s["verity_partition"].get<std::string>();
        out << "\n";
        if (s.contains("root_hash")) out << "  root hash  " << s["root_hash"].get<std::string>() << "\n";
        if (s.contains("data_blocks")) out << "  data       " << s["data_blocks"].get<uint64_t>() << " blocks of 4 KiB\n";
        if (s["ok"].get<bool>()) out << "  verity     verified\n";
        for (const auto& p : s["problems"]) out << "  PROBLEM    " << p.get<std::string>() << "\n";
    }
    out << (r["ok"].get<bool>() ? "all slots verified\n" : "verification FAILED\n");
    return out.str();
}

}  // namespace cairn::imager
