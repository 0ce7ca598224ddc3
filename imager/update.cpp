#include "imager/update.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/hash.hpp"
#include "common/subprocess.hpp"
#include "common/text.hpp"
#include "imager/initrd.hpp"
#include "updater/bundle.hpp"
#include "updater/signature.hpp"

namespace cairn::imager {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* bus_config = R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- The system bus of a Cairn image (written by cairn build). -->
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
)";

// Only root may install or mark; anyone may read the status.
constexpr const char* updater_policy = R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.cairn.Updater1"/>
    <allow send_destination="org.cairn.Updater1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.cairn.Updater1" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.cairn.Updater1" send_interface="org.freedesktop.DBus.Properties" send_member="Get"/>
    <allow send_destination="org.cairn.Updater1" send_interface="org.freedesktop.DBus.Properties" send_member="GetAll"/>
    <allow send_destination="org.cairn.Updater1" send_interface="org.cairn.Updater1" send_member="GetSlotStatus"/>
    <allow send_destination="org.cairn.Updater1" send_interface="org.cairn.Updater1" send_member="GetStatus"/>
  </policy>
</busconfig>
)";

}  // namespace

std::string dbus_system_config() { return bus_config; }
std::string updater_dbus_policy() { return updater_policy; }

namespace {

std::string sha256_hex_of(const fs::path& file) { return sha256_file_hex(file); }

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

}  // namespace

json add_update_files(Tree& tree, const Recipe& recipe, const std::string& build_id, int64_t created) {
    const std::string& what = recipe.update.where;
    const Meta file{0, 0, 0644}, exec{0, 0, 0755}, dir{0, 0, 0755};
    for (const char* d : {"/usr", "/usr/lib", "/usr/lib/cairn", "/usr/share", "/usr/share/cairn", "/usr/share/dbus-1",
                          "/usr/share/dbus-1/system.d", "/usr/sbin", "/usr/bin"})
        if (!tree.meta(tree.resolve(d, what))) tree.add_directory(d, dir, what);
    add_cairn_program(tree, find_cairn_program("cairn-updated", "updater"), update_paths::updated, exec, what + ": cairn-updated");
    add_cairn_program(tree, find_cairn_program("cairnctl", "cairnctl"), update_paths::cairnctl, exec, what + ": cairnctl");
    if (!tree.meta(tree.resolve(update_paths::dbus_daemon, what))) {  // else Debian's dbus package brought it, and its own system bus
        auto dbus = find_program("dbus-daemon");
        if (!dbus) fail(what + ": dbus-daemon not found on the build host (it goes into the image; see scripts/install-deps)");
        add_host_executable(tree, *dbus, update_paths::dbus_daemon, exec, what + ": dbus-daemon");
        tree.add_file(update_paths::dbus_config, bus_config, file, what);
    }
    tree.add_file(update_paths::dbus_policy, updater_policy, file, what);
    tree.add_file_copy(update_paths::trust_anchor, recipe.update.trust_anchor, file, what);
    if (!recipe.update.config.empty()) {  // how the device reaches bundle servers, and its channel
        for (const char* d : {"/etc", "/etc/cairn"})
            if (!tree.meta(tree.resolve(d, what))) tree.add_directory(d, dir, what);
        tree.add_file_copy("/etc/cairn/update.toml", recipe.update.config, file, what + ": config");
    }

    // The /etc defaults of this root, so that an update can tell which files the user changed
    // that the new version changes too.
    json etc = json::object();
    for (const auto& [path, meta] : tree.entries())
        if (path.rfind("/etc/", 0) == 0 && S_ISREG(meta.mode)) etc[path] = sha256_hex_of(tree.host(path));
    json release = {{"compatible", recipe.compatible}, {"version", recipe.version}, {"build_id", build_id},
                    {"created", created}, {"name", recipe.name}, {"etc", etc}};
    if (!recipe.update.health_check.empty()) release["health_check"] = recipe.update.health_check;
    tree.add_file(update_paths::release, release.dump(1) + "\n", file, what);
    return release;
}

void add_firewall_files(Tree& tree, const Recipe& recipe) {
    const std::string& what = recipe.firewall.where;
    const Meta file{0, 0, 0644}, exec{0, 0, 0755}, dir{0, 0, 0755};
    for (const char* d : {"/usr", "/usr/sbin", "/etc", "/etc/cairn"})
        if (!tree.meta(tree.resolve(d, what))) tree.add_directory(d, dir, what);
    const fs::path program = find_cairn_program("cairn-firewall", "firewall");
    add_cairn_program(tree, program, update_paths::firewall, exec, what + ": cairn-firewall");
    if (recipe.firewall.policy.empty()) {
        tree.add_file("/etc/cairn/firewall.toml",
                      "# The firewall policy (cairn-firewall apply). These are the defaults: inbound SSH only;\n"
                      "# more than 3 new SSH connections from one source within 60 s block it for 10 minutes.\n"
                      "[ssh]\nport = 22\n[ssh.brute_force]\nmax_new = 3\nwindow = \"60s\"\nblock = \"10m\"\n",
                      file, what);
        return;
    }
    RunResult check = run({program.string(), "check", "--policy", recipe.firewall.policy.string()});
    if (check.exit_code != 0) {
        fail(what + ": " + trim_end(check.err));
    }
    tree.add_file_copy("/etc/cairn/firewall.toml", recipe.firewall.policy, file, what);
}

bool is_debug_build(const json& build) {
    if (build.contains("debug") && build["debug"].is_boolean()) return build["debug"].get<bool>();
    if (build.contains("uki") && build["uki"].is_object())
        for (const auto& [slot, uki] : build["uki"].items())
            if (uki.is_object() && uki.value("cmdline", "").find("cairn.debug=shell") != std::string::npos) return true;
    return false;
}

namespace {

// The device's check (updater::cms_verify, at the device's earliest time: no earlier than the build)
// of a signature by o.key and o.cert, against the trust anchor the build put into the image.
void check_signer_against_build(const BundleOptions& o, const json& build) {
    const json& u = build["update"];
    if (!u.contains("trust_anchor") || !u["trust_anchor"].is_string()) {
        std::fprintf(stderr, "cairn: warning: %s: the build does not record its trust anchor (made by an older cairn); the signer "
                             "is not checked against it\n",
                     (o.build_dir / "manifest.json").c_str());
        return;
    }
    const std::string probe = "cairn bundle: signer check";
    const std::string signature = updater::cms_sign(probe, o.key, o.cert, o.key_passphrase);
    const int64_t created = build.value("source_date_epoch", int64_t{0});
    try {
        updater::cms_verify_pem(probe, signature, u["trust_anchor"].get<std::string>(), update_paths::trust_anchor, o.cert.string(),
                                updater::certificate_time(static_cast<int64_t>(std::time(nullptr)), created));
    } catch (const Error& e) {
        fail(std::string(e.what()) + "; devices running the build in " + o.build_dir.string() + " would refuse the bundle");
    }
}

}  // namespace

json make_bundle(const BundleOptions& o) {
    const fs::path dir = o.build_dir;
    const fs::path manifest_file = dir / "manifest.json";
    std::error_code ec;
    if (!fs::is_regular_file(manifest_file, ec)) fail(dir.string() + ": no manifest.json (not a finished cairn build)");
    json build = json::parse(read_file(manifest_file), nullptr, false);
    if (build.is_discarded()) fail(manifest_file.string() + ": not JSON");
    if (!build.contains("update") || build["update"].is_null())
        fail(manifest_file.string() + ": the image was built without [update] in its recipe; it cannot take bundles");
    const json& u = build["update"];
    if (is_debug_build(build) && !o.allow_debug)
        fail(dir.string() + ": a debug build (--debug: a root shell on the console, a shell instead of a reboot when the boot "
             "fails); devices must not get it (--allow-debug bundles it all the same)");
    // Before hashing the payloads: what every device running this build would refuse.
    updater::check_bundle_signer(o.cert);
    check_signer_against_build(o, build);

    updater::BundleManifest m;
    m.compatible = u.at("compatible");
    m.version = u.at("version");
    m.build_id = u.at("build_id");
    m.created = build.at("source_date_epoch");
    if (build.contains("disk") && build["disk"].contains("guid")) m.disk_guid = build["disk"]["guid"];
    for (auto& [path, digest] : u.at("etc").items()) m.etc[path] = digest;
    // What a good boot of the new slot measures: a verifier learns it from the bundle's signature.
    // Builds from before the manifest recorded it give bundles without one.
    if (build.contains("reference") && !build["reference"].is_null())
        m.reference = attestation::parse_reference(build["reference"].dump(), manifest_file.string() + ": reference");

    struct Input {
        updater::Payload payload;
        fs::path file;
    };
    std::vector<Input> inputs;
    auto add = [&](const std::string& name, const std::string& role, const std::string& slot, const fs::path& file) {
        if (!fs::is_regular_file(file, ec)) fail(dir.string() + ": " + file.filename().string() + " is missing");
        updater::Payload p;
        p.name = name;
        p.role = role;
        p.slot = slot;
        p.size = fs::file_size(file);
        inputs.push_back({p, file});
        return &inputs.back().payload;
    };
    add("root", "root", "", dir / build.at("rootfs").at("image").get<std::string>());
    for (const char* slot : {"a", "b"}) {
        const json& v = build.at("slots").at(slot).at("verity");
        updater::Payload* p = add(std::string("root-verity-") + slot, "root-verity", slot, dir / v.at("artifact").get<std::string>());
        p->root_hash = v.at("root_hash");
        p->salt = v.at("salt");
        p->data_block_size = v.at("data_block_size");
        p->hash_block_size = v.at("hash_block_size");
        p->data_blocks = v.at("data_blocks");
    }
    for (const char* slot : {"a", "b"}) {
        const fs::path file = dir / u.at("esp").at(slot).at("file").get<std::string>();
        updater::Payload* p = add(std::string("esp-") + slot, "esp", slot, file);
        // A device fetching from a server takes only the chunks it lacks. Updaters before the index
        // refuse a manifest that has it: a fleet's first step onto this one goes without.
        if (!o.no_chunk_index) updater::index_chunks(*p, read_file(file));
    }

    // Offsets: the signature's size is known only after signing, and the offsets are inside the
    // signed manifest; so leave room for the largest signature we accept.
    uint64_t manifest_guess = 0;
    for (int round = 0; round < 3; ++round) {
        uint64_t offset = round_up(updater::bundle_header_size + manifest_guess + updater::max_signature_size, updater::payload_alignment);
        m.payloads.clear();
        for (Input& in : inputs) {
            in.payload.offset = offset;
            if (in.payload.sha256.empty()) in.payload.sha256 = sha256_file_hex(in.file);
            m.payloads.push_back(in.payload);
            offset = round_up(offset + in.payload.size, updater::payload_alignment);
        }
        uint64_t size = m.to_json().size();
        if (size <= manifest_guess) break;
        manifest_guess = round_up(size, 4096);
    }
    const std::string manifest = m.to_json();
    const std::string signature = updater::cms_sign(manifest, o.key, o.cert, o.key_passphrase);
    updater::BundleHeader h{manifest.size(), signature.size(), m.payloads.front().offset};
    if (signature.size() > updater::max_signature_size) fail(o.cert.string() + ": the signature is too large (more than 64 KiB)");

    const fs::path tmp = o.out.parent_path() / ("." + o.out.filename().string() + ".tmp");
    try {
        UniqueFd out = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        std::string head = updater::encode_header(h) + manifest + signature;
        pwrite_exact(out.get(), head.data(), head.size(), 0, tmp.string());
        for (const Input& in : inputs) {
            UniqueFd src = open_file(in.file, O_RDONLY | O_CLOEXEC);
            copy_sparse(src.get(), 0, out.get(), in.payload.offset, in.payload.size, in.file.string());
        }
        const updater::Payload& last = m.payloads.back();
        if (::ftruncate(out.get(), static_cast<off_t>(round_up(last.offset + last.size, updater::payload_alignment))) != 0)
            fail_errno("sizing " + tmp.string());
        if (::fsync(out.get()) != 0) fail_errno("writing " + tmp.string());
        fs::rename(tmp, o.out);
    } catch (...) {
        fs::remove(tmp, ec);
        throw;
    }
    return json::parse(manifest);
}

}  // namespace cairn::imager
