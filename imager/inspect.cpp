#include "imager/inspect.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/units.hpp"
#include "imager/build.hpp"
#include "imager/update.hpp"
#include "imager/verity.hpp"
#include "partitions/gpt.hpp"
#include "partitions/layout.hpp"
#include "updater/bundle.hpp"
#include "updater/signature.hpp"

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

uint64_t le64(const char* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
    return v;
}

std::string size_text(uint64_t bytes) { return format_size(bytes) + " (" + std::to_string(bytes) + " bytes)"; }

// A path that is not a regular file, or an empty one: what it is instead.
void require_file(const fs::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) fail(path.string() + ": no such file");
        fail_errno(path.string());
    }
    if (S_ISDIR(st.st_mode)) {
        std::error_code ec;
        const fs::path disk = path / outputs::disk;
        fail(path.string() + ": is a directory, not an image file" +
             (fs::is_regular_file(disk, ec) ? " (the build's image is in it: cairn inspect " + disk.string() + ")" : ""));
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) fail(path.string() + ": not a regular file");
    if (S_ISREG(st.st_mode) && st.st_size == 0) fail(path.string() + ": an empty file (0 bytes), not a disk image");
}

// An image shorter than its GPT says the disk is (the primary header's backup LBA is the disk's last
// sector), or than its build made it: cut short, and said so before libfdisk finds a damaged backup.
void require_whole(const fs::path& image, const json& manifest, const std::string& manifest_name) {
    const uint64_t size = fs::file_size(image);
    if (size < 2 * partitions::gpt_sector_size)
        fail(image.string() + ": only " + std::to_string(size) + " bytes, too small for a GPT disk image");
    UniqueFd fd = open_file(image, O_RDONLY);
    char header[92];
    pread_exact(fd.get(), header, sizeof header, partitions::gpt_sector_size, image.string());
    if (std::memcmp(header, "EFI PART", 8) == 0 && le64(header + 24) == 1) {
        const uint64_t expected = (le64(header + 32) + 1) * partitions::gpt_sector_size;
        if (size < expected)
            fail(image.string() + ": truncated: the file has " + size_text(size) + ", its GPT says the disk is " + size_text(expected) +
                 " (cut short while copying or downloading?)");
    }
    if (manifest.is_object() && manifest.contains("disk") && manifest["disk"].contains("size") && manifest["disk"]["size"].is_number_unsigned()) {
        const uint64_t expected = manifest["disk"]["size"].get<uint64_t>();
        if (size < expected)
            fail(image.string() + ": truncated: the file has " + size_text(size) + ", the build made " + size_text(expected) + " (" +
                 manifest_name + ")");
    }
}

// The os-release that systemd-stub finds in the first slot's UKI (\EFI\BOOT\BOOTX64.EFI in the
// first ESP), for an image without its build's manifest; "" when there is none (no ESP, no UKI, no
// .osrel, or mtools and objcopy cannot read them).
std::string uki_os_release(const fs::path& image, const partitions::GptTable& table) {
    const partitions::GptEntry* esp = nullptr;
    for (const auto& e : table.entries)
        if (!esp && role_of(e) == "esp") esp = &e;
    if (!esp) return "";
    std::error_code ec;
    TempDir tmp(fs::temp_directory_path(ec));
    const fs::path uki = tmp.path() / "uki.efi", osrel = tmp.path() / "osrel";
    if (run({"mcopy", "-n", "-i", image.string() + "@@" + std::to_string(esp->offset), "::/EFI/BOOT/BOOTX64.EFI", uki.string()}).exit_code != 0)
        return "";
    if (run({"objcopy", "-O", "binary", "--only-section=.osrel", uki.string(), osrel.string()}).exit_code != 0) return "";
    return fs::exists(osrel, ec) ? read_file(osrel) : "";
}

// KEY's value in os-release text (quotes taken off), or "".
std::string os_release_value(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(key + "=", 0) != 0) continue;
        std::string v = line.substr(key.size() + 1);
        if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
        return v;
    }
    return "";
}

bool is_bundle(const fs::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < updater::bundle_header_size) return false;
    UniqueFd fd = open_file(path, O_RDONLY);
    char magic[sizeof updater::bundle_magic];
    pread_exact(fd.get(), magic, sizeof magic, 0, path.string());
    return std::memcmp(magic, updater::bundle_magic, sizeof magic) == 0;
}

}  // namespace

InspectResult inspect(const fs::path& path, const InspectOptions& options) {
    require_file(path);
    if (is_bundle(path)) return inspect_bundle(path, options.trust_anchor);
    return inspect_image(path, options.manifest);
}

InspectResult inspect_image(const fs::path& image, const std::optional<fs::path>& manifest_path) {
    std::error_code ec;
    require_file(image);

    json manifest = nullptr;
    fs::path mpath = manifest_path ? *manifest_path : image.parent_path() / outputs::manifest;
    if (manifest_path || fs::exists(mpath, ec)) {
        try {
            manifest = json::parse(read_file(mpath));
        } catch (const json::exception& e) {
            fail(mpath.string() + ": not a Cairn build manifest: " + e.what());
        }
    }
    require_whole(image, manifest, mpath.string());
    partitions::GptTable table = partitions::read_gpt(image);

    InspectResult result;
    json& report = result.report;
    report["kind"] = "image";
    report["image"] = image.string();
    if (manifest.is_object() && manifest.contains("recipe") && manifest["recipe"].is_object()) {
        const json& r = manifest["recipe"];
        for (const char* key : {"name", "version", "compatible"})
            if (r.contains(key) && r[key].is_string()) report[key] = r[key];
        if (manifest.contains("debug") && manifest["debug"].is_boolean()) report["debug"] = manifest["debug"];
        else report["debug"] = is_debug_build(manifest);
    }
    if (!report.contains("name")) {
        const std::string osrel = uki_os_release(image, table);
        const std::string name = os_release_value(osrel, "NAME"), version = os_release_value(osrel, "VERSION_ID");
        if (!name.empty()) report["name"] = name;
        if (!version.empty()) report["version"] = version;
    }
    // The reference values its build predicted (what a good boot of each slot measures).
    if (manifest.is_object() && manifest.contains("reference") && manifest["reference"].is_object()) {
        try {
            report["reference"] = json::parse(attestation::to_json(attestation::parse_reference(manifest["reference"].dump(), mpath.string() + ": reference")));
        } catch (const Error& e) {
            report["reference"] = nullptr;
            report["reference_problem"] = e.what();
            result.ok = false;
        }
    }
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

namespace {

// The reference values, one block per slot.
void format_reference(std::ostream& out, const json& r) {
    if (!r.contains("reference") || !r["reference"].is_object()) return;
    const json& ref = r["reference"];
    out << "reference values (" << ref["image"].get<std::string>() << " " << ref["version"].get<std::string>()
        << "), UKI signer certificate sha256 " << ref["uki_signer_certificate"].get<std::string>() << "\n";
    for (const auto& s : ref["slots"]) {
        out << "  slot " << s["slot"].get<std::string>() << ": kernel " << s["kernel_release"].get<std::string>() << "\n"
            << "    PCR 4  UKI        " << s["uki_authenticode"].get<std::string>() << "\n";
        const json& pcr11 = s["pcr11"];
        for (size_t i = 0; i < pcr11.size(); ++i)
            out << (i == 0 ? "    PCR 11 stub       " : "           then       ") << pcr11[i].get<std::string>() << "\n";
        out << "    PCR 9             " << s["pcr9"].get<std::string>() << "\n"
            << "      cmdline event   " << s["cmdline_event"].get<std::string>() << "\n"
            << "      initrd event    " << s["initrd_event"].get<std::string>() << "\n";
    }
}

std::string format_bundle(const json& r) {
    std::ostringstream out;
    out << r["bundle"].get<std::string>() << ": bundle: " << r["compatible"].get<std::string>() << " " << r["version"].get<std::string>()
        << " (build " << r["build_id"].get<std::string>() << "), " << format_size(r["size"].get<uint64_t>()) << "\n";
    if (r["created"].get<int64_t>() > 0) out << "  built       " << r["created_text"].get<std::string>() << "\n";
    if (r.contains("disk_guid") && r["disk_guid"].is_string() && !r["disk_guid"].get<std::string>().empty())
        out << "  for disk    " << r["disk_guid"].get<std::string>() << "\n";
    const json& sig = r["signature"];
    for (const auto& signer : sig["signers"]) {
        out << "  signed by   " << signer["subject"].get<std::string>() << ", issued by " << signer["issuer"].get<std::string>() << "\n"
            << "              valid " << signer["not_before"].get<std::string>() << " to " << signer["not_after"].get<std::string>() << "\n";
        if (!signer["usage_problem"].get<std::string>().empty())
            out << "  PROBLEM     the signer " << signer["usage_problem"].get<std::string>() << "\n";
    }
    if (sig["ok"].get<bool>()) out << "  signature   matches the manifest\n";
    if (sig["trust_anchor"].is_string()) {
        if (sig["trusted"].get<bool>()) out << "  trusted     by " << sig["trust_anchor"].get<std::string>() << "\n";
    } else {
        out << "  trust       not checked (--trust-anchor PEM or a build folder checks it as a device would)\n";
    }
    if (sig.contains("problem")) out << "  PROBLEM     " << sig["problem"].get<std::string>() << "\n";
    out << "\n";
    char line[256];
    std::snprintf(line, sizeof line, "  %-16s %-12s %-4s %12s  %s\n", "payload", "role", "slot", "size", "sha256");
    out << line;
    for (const auto& p : r["payloads"]) {
        std::snprintf(line, sizeof line, "  %-16s %-12s %-4s %12s  %s\n", p["name"].get<std::string>().c_str(), p["role"].get<std::string>().c_str(),
                      p["slot"].get<std::string>().empty() ? "-" : p["slot"].get<std::string>().c_str(),
                      format_size(p["size"].get<uint64_t>()).c_str(), p["ok"].get<bool>() ? "verified" : "MISMATCH");
        out << line;
        if (p.contains("problem")) out << "  PROBLEM     " << p["problem"].get<std::string>() << "\n";
    }
    if (r["reference"].is_object()) {
        out << "\n";
        format_reference(out, r);
    } else {
        out << "\n  reference   none (a bundle from an older cairn, or of a build without UKIs)\n";
    }
    out << (r["ok"].get<bool>() ? "bundle verified\n" : "verification FAILED\n");
    return out.str();
}

}  // namespace

InspectResult inspect_bundle(const fs::path& path, const std::optional<fs::path>& trust_anchor) {
    require_file(path);
    const std::string what = path.string();
    UniqueFd fd = open_file(path, O_RDONLY);
    const updater::BundleHead head = updater::read_bundle_head(fd.get(), what);
    const uint64_t size = head.size;
    const std::string& manifest_bytes = head.manifest_bytes;
    const std::string& signature = head.signature;
    const updater::BundleManifest& m = head.manifest;

    InspectResult result;
    json& report = result.report;
    report["kind"] = "bundle";
    report["bundle"] = what;
    report["size"] = size;
    report["format"] = m.format;
    report["compatible"] = m.compatible;
    report["version"] = m.version;
    report["build_id"] = m.build_id;
    report["created"] = m.created;
    {
        char text[64] = "";
        const time_t t = static_cast<time_t>(m.created);
        struct tm tm {};
        if (gmtime_r(&t, &tm)) std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
        report["created_text"] = text;
    }
    report["disk_guid"] = m.disk_guid;
    report["reference"] = m.reference ? json::parse(attestation::to_json(*m.reference)) : json(nullptr);

    // The signature over the manifest and who made it; then, with an anchor, the device's check.
    json sig = {{"ok", false}, {"signers", json::array()}, {"trust_anchor", nullptr}, {"trusted", nullptr}};
    try {
        for (const updater::SignerInfo& i : updater::cms_signers(manifest_bytes, signature, what)) {
            sig["signers"].push_back({{"subject", i.subject}, {"issuer", i.issuer}, {"not_before", i.not_before}, {"not_after", i.not_after},
                                      {"usage_problem", i.usage_problem}});
            if (!i.usage_problem.empty()) result.ok = false;
        }
        sig["ok"] = true;
    } catch (const Error& e) {
        sig["problem"] = e.what();
        result.ok = false;
    }
    if (trust_anchor && sig["ok"].get<bool>()) {
        std::error_code ec;
        const int64_t at = updater::certificate_time(static_cast<int64_t>(std::time(nullptr)), m.created);
        try {
            if (fs::is_directory(*trust_anchor, ec)) {
                const fs::path build_manifest = *trust_anchor / outputs::manifest;
                json b = json::parse(read_file(build_manifest), nullptr, false);
                if (b.is_discarded() || !b.contains("update") || !b["update"].is_object() || !b["update"].contains("trust_anchor") ||
                    !b["update"]["trust_anchor"].is_string())
                    fail(build_manifest.string() + ": no update.trust_anchor (not a build with [update], or made by an older cairn)");
                sig["trust_anchor"] = build_manifest.string() + " (update.trust_anchor)";
                updater::cms_verify_pem(manifest_bytes, signature, b["update"]["trust_anchor"].get<std::string>(),
                                        std::string(update_paths::trust_anchor) + " of the build in " + trust_anchor->string(), what, at);
            } else {
                sig["trust_anchor"] = trust_anchor->string();
                updater::cms_verify(manifest_bytes, signature, *trust_anchor, what, at);
            }
            sig["trusted"] = true;
        } catch (const Error& e) {
            sig["trusted"] = false;
            sig["problem"] = e.what();
            result.ok = false;
        }
    }
    report["signature"] = sig;

    // Every payload against its sha256 in the manifest.
    json payloads = json::array();
    for (const updater::Payload& p : m.payloads) {
        json j = {{"name", p.name}, {"role", p.role}, {"slot", p.slot}, {"offset", p.offset}, {"size", p.size}, {"sha256", p.sha256}};
        if (p.offset + p.size > size) {
            j["ok"] = false;
            j["problem"] = p.name + ": the bundle ends inside it (truncated: " + size_text(size) + ")";
        } else {
            Sha256 hash;
            std::vector<char> buffer(1 << 20);
            for (uint64_t done = 0; done < p.size;) {
                const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), p.size - done));
                pread_exact(fd.get(), buffer.data(), n, p.offset + done, what);
                hash.update(buffer.data(), n);
                done += n;
            }
            const std::string got = to_hex(hash.final());
            j["ok"] = got == p.sha256;
            if (got != p.sha256) j["problem"] = p.name + ": sha256 " + got + ", the manifest says " + p.sha256;
        }
        if (!j["ok"].get<bool>()) result.ok = false;
        payloads.push_back(j);
    }
    report["payloads"] = payloads;
    report["ok"] = result.ok;
    return result;
}

std::string format_report(const json& r) {
    if (r.value("kind", "image") == "bundle") return format_bundle(r);
    std::ostringstream out;
    out << r["image"].get<std::string>() << ": " << format_size(r["disk_size"].get<uint64_t>()) << ", GPT disk "
        << r["disk_guid"].get<std::string>() << "\n";
    if (r.contains("name")) {
        out << "  " << r["name"].get<std::string>();
        if (r.contains("version")) out << " " << r["version"].get<std::string>();
        if (r.contains("compatible")) out << " (" << r["compatible"].get<std::string>() << ")";
        if (r.value("debug", false)) out << ", debug build (a root shell on the console: never ship it)";
        out << "\n";
    }
    out << "\n";
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
    format_reference(out, r);
    if (r.contains("reference_problem")) out << "PROBLEM reference values: " << r["reference_problem"].get<std::string>() << "\n";
    out << (r["ok"].get<bool>() ? "all slots verified\n" : "verification FAILED\n");
    return out.str();
}

}  // namespace cairn::imager
