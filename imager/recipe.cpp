#include "imager/recipe.hpp"

#include "updater/update_config.hpp"

#include "initrd/boot.hpp"

#include <toml++/toml.h>

#include <set>

#include "common/error.hpp"
#include "common/file.hpp"
#include "common/toml_reader.hpp"
#include "common/units.hpp"
#include "imager/verity.hpp"
#include "updater/bundle.hpp"

namespace cairn::imager {

std::string_view step_kind_name(Step::Kind kind) {
    switch (kind) {
        case Step::Kind::Tree: return "tree";
        case Step::Kind::Tar: return "tar";
        case Step::Kind::Deb: return "deb";
        case Step::Kind::HostFile: return "host-file";
        case Step::Kind::HostExec: return "host-exec";
        case Step::Kind::File: return "file";
        case Step::Kind::Directory: return "directory";
        case Step::Kind::Symlink: return "symlink";
    }
    return "?";
}

namespace {

using partitions::PartitionSpec;
using partitions::Role;

// The recipe's own value kinds on top of the shared TOML reading.
class Reader : public TomlReader {
public:
    explicit Reader(fs::path file) : TomlReader(file), dir_(fs::absolute(file).parent_path()) {}

    uint64_t size(const toml::node& n, const std::string& k) const {
        if (n.is_integer()) {
            int64_t v = *n.value<int64_t>();
            if (v < 0) error(n, k, "must not be negative");
            return static_cast<uint64_t>(v);
        }
        if (!n.is_string()) error(n, k, "must be a size such as \"64MiB\"");
        const std::string text = *n.value<std::string>();
        const uint64_t bytes = parse_size(text, where(n, k));
        // "64MB" is 64 × 10^6 bytes, never a whole number of MiB as disks and partitions must be.
        static const std::pair<const char*, const char*> decimal[] = {{"kB", "10^3"}, {"KB", "10^3"}, {"MB", "10^6"}, {"GB", "10^9"}, {"TB", "10^12"}};
        for (const auto& [unit, power] : decimal) {
            const std::string u = unit;
            if (bytes % MiB == 0 || text.size() <= u.size() || text.compare(text.size() - u.size(), u.size(), u) != 0) continue;
            std::string number = text.substr(0, text.size() - u.size());
            while (!number.empty() && number.back() == ' ') number.pop_back();
            error(n, k, "\"" + text + "\" is " + format_size(bytes) + " (" + u + " means " + power + " bytes): sizes are whole MiB; did you mean \"" +
                            number + std::string(1, static_cast<char>(std::toupper(static_cast<unsigned char>(u[0])))) + "iB\"?");
        }
        return bytes;
    }

    uint32_t mode(const toml::node& n, const std::string& k) const {
        int64_t v = -1;
        if (n.is_integer()) v = *n.value<int64_t>();
        else if (n.is_string()) {
            std::string s = *n.value<std::string>();
            size_t used = 0;
            try {
                v = std::stol(s, &used, 8);
            } catch (...) {
                used = 0;
            }
            if (used != s.size() || s.empty()) v = -1;
        }
        if (v < 0 || v > 07777) error(n, k, "must be permission bits in octal, such as \"0755\" or 0o755");
        return static_cast<uint32_t>(v);
    }

    Id id(const toml::node& n, const std::string& k) const {
        Id out;
        if (n.is_integer()) {
            int64_t v = *n.value<int64_t>();
            if (v < 0 || v > 0xfffffffe) error(n, k, "must be a user or group number or name");
            out.number = static_cast<uint32_t>(v);
        } else if (n.is_string() && !n.value<std::string>()->empty()) {
            out.name = *n.value<std::string>();
            if (out.name == "root") out.number = 0;
        } else {
            error(n, k, "must be a user or group number or name");
        }
        return out;
    }

    fs::path host_path(const toml::node& n, const std::string& k, bool must_exist) const {
        if (!n.is_string() || n.value<std::string>()->empty()) error(n, k, "must be a path");
        fs::path p = *n.value<std::string>();
        if (p.is_relative()) p = dir_ / p;
        std::error_code ec;
        if (must_exist && !fs::exists(p, ec)) missing_.push_back(where(n, k) + ": " + p.string() + ": no such file or directory");
        return p;
    }

    // Every input file that was not there, at once: a copied recipe shows all its dangling paths in one build.
    void fail_on_missing_files() const {
        if (missing_.empty()) return;
        if (missing_.size() == 1) fail(missing_[0]);
        std::string message = file().string() + ": " + std::to_string(missing_.size()) + " input files are missing:";
        for (const auto& m : missing_) message += "\n  " + m;
        fail(message);
    }

    std::string image_path(const toml::node& n, const std::string& k) const {
        if (!n.is_string()) error(n, k, "must be an absolute path in the image, such as \"/etc/hostname\"");
        std::string p = *n.value<std::string>();
        if (p.empty() || p[0] != '/') error(n, k, "'" + p + "' must be an absolute path in the image, such as \"/etc/hostname\"");
        for (const auto& part : fs::path(p))
            if (part == "..") error(n, k, "'" + p + "' must not contain '..'");
        return p;
    }

private:
    fs::path dir_;
    mutable std::vector<std::string> missing_;
};

bool is_os_release_id(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) return false;
    return true;
}

// The recipe's name as an os-release ID: lower case, characters outside [a-z0-9._-] as '-'.
std::string os_release_id(std::string_view name) {
    std::string id;
    for (char c : name) {
        char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        id += is_os_release_id(std::string_view(&l, 1)) ? l : '-';
    }
    return id;
}

// A value in double quotes, with the characters a shell would read specially escaped.
std::string shell_quoted(std::string_view v) {
    std::string out = "\"";
    for (char c : v) {
        if (c == '"' || c == '\\' || c == '$' || c == '`') out += '\\';
        out += c;
    }
    return out + "\"";
}

// Fields the build makes from name and version: a recipe giving them would go stale at the next version.
constexpr std::string_view generated_os_release_fields[] = {"VERSION_ID", "VERSION", "PRETTY_NAME", "IMAGE_ID", "IMAGE_VERSION"};

void read_partitions(const Reader& r, const toml::table& disk, Recipe& recipe) {
    const toml::array* parts = r.table_array(disk, "disk", "partitions");
    if (!parts || parts->empty()) r.error(disk, "disk.partitions", "missing: the disk needs partitions");
    size_t index = 0;
    for (auto& item : *parts) {
        const toml::table& t = *item.as_table();
        std::string prefix = "disk.partitions[" + std::to_string(index++) + "]";
        r.only(t, prefix, {"role", "label", "size", "offset", "type", "slotted"});
        PartitionSpec p;
        p.where = r.where(t, prefix);
        std::string role = r.required_string(t, prefix, "role");
        auto parsed = partitions::parse_role(role);
        if (!parsed)
            r.error(*t.get("role"), prefix + ".role", "unknown role '" + role + "' (known: esp, root, root-verity, log, data, extra)");
        p.role = *parsed;
        p.slotted = p.role == Role::Esp || p.role == Role::Root || p.role == Role::RootVerity;
        if (auto label = r.string(t, prefix, "label")) {
            if (p.role != Role::Extra) r.error(*t.get("label"), prefix + ".label", "only extra partitions take a label; '" + role + "' partitions are named for their role");
            p.label = *label;
        }
        if (auto slotted = r.boolean(t, prefix, "slotted")) {
            if (p.role != Role::Extra) r.error(*t.get("slotted"), prefix + ".slotted", "only extra partitions choose; '" + role + "' is always " + (p.slotted ? "slotted" : "outside the slots"));
            p.slotted = *slotted;
        }
        if (auto type = r.string(t, prefix, "type")) {
            if (p.role != Role::Extra) r.error(*t.get("type"), prefix + ".type", "only extra partitions take a type; '" + role + "' has its own");
            p.type = partitions::parse_type(*type, r.where(*t.get("type"), prefix + ".type"));
        }
        if (const toml::node* n = t.get("offset")) p.offset = r.size(*n, prefix + ".offset");
        const toml::node* size = t.get("size");
        if (size && size->is_string() && *size->value<std::string>() == "rest") p.rest = true;
        else if (size && size->is_string() && *size->value<std::string>() == "auto") {
            if (p.role != Role::RootVerity) r.error(*size, prefix + ".size", "\"auto\" is only for root-verity partitions");
        } else if (size) {
            p.size = r.size(*size, prefix + ".size");
            if (p.role == Role::RootVerity) recipe.verity_size_auto = false;
        } else if (p.role != Role::RootVerity) {
            r.error(t, prefix + ".size", "missing (a size such as \"64MiB\", or \"rest\" for the last partition)");
        }
        recipe.layout.partitions.push_back(std::move(p));
    }
}

Step read_step(const Reader& r, const toml::table& t, const std::string& prefix) {
    Step s;
    s.where = r.where(t, prefix);
    std::string kind = r.required_string(t, prefix, "type");
    static const std::pair<const char*, Step::Kind> kinds[] = {
        {"tree", Step::Kind::Tree},           {"tar", Step::Kind::Tar},       {"deb", Step::Kind::Deb},
        {"host-file", Step::Kind::HostFile},  {"host-exec", Step::Kind::HostExec}, {"file", Step::Kind::File},
        {"directory", Step::Kind::Directory}, {"symlink", Step::Kind::Symlink},
    };
    bool found = false;
    for (auto& [name, k] : kinds)
        if (kind == name) { s.kind = k; found = true; }
    if (!found)
        r.error(*t.get("type"), prefix + ".type",
                "unknown type '" + kind + "' (known: tree, tar, deb, host-file, host-exec, file, directory, symlink)");

    using K = Step::Kind;
    switch (s.kind) {
        case K::Tree: case K::Tar: r.only(t, prefix, {"type", "source", "path"}); break;
        case K::Deb: r.only(t, prefix, {"type", "source", "package", "path"}); break;
        case K::HostFile: case K::HostExec: r.only(t, prefix, {"type", "source", "path", "mode", "owner", "group"}); break;
        case K::File: r.only(t, prefix, {"type", "source", "content", "path", "mode", "owner", "group"}); break;
        case K::Directory: r.only(t, prefix, {"type", "path", "mode", "owner", "group"}); break;
        case K::Symlink: r.only(t, prefix, {"type", "path", "target", "owner", "group"}); break;
    }

    if (const toml::node* n = t.get("source")) s.source = r.host_path(*n, prefix + ".source", true);
    if (const toml::node* n = t.get("path")) {
        s.path = r.image_path(*n, prefix + ".path");
        if (s.path == "/etc/os-release" || s.path == "/usr/lib/os-release")
            r.error(*n, prefix + ".path", s.path + " is made from the recipe's name and version; give extra fields in [os_release] (see README, \"Recipe reference\")");
    }
    if (const toml::node* n = t.get("mode")) s.mode = r.mode(*n, prefix + ".mode");
    if (const toml::node* n = t.get("owner")) s.owner = r.id(*n, prefix + ".owner");
    if (const toml::node* n = t.get("group")) s.group = r.id(*n, prefix + ".group");
    s.content = r.string(t, prefix, "content");
    if (auto p = r.string(t, prefix, "package")) s.package = *p;
    if (auto target = r.string(t, prefix, "target")) s.target = *target;

    switch (s.kind) {
        case K::Tree: case K::Tar:
            if (s.source.empty()) r.error(t, prefix + ".source", "missing: the " + kind + " to add");
            if (s.path.empty()) s.path = "/";
            break;
        case K::Deb:
            if (s.source.empty() == s.package.empty()) r.error(t, prefix, "give either `package` (a Debian package name) or `source` (a .deb file)");
            if (s.path.empty()) s.path = "/";
            break;
        case K::HostFile: case K::HostExec:
            if (s.source.empty()) r.error(t, prefix + ".source", "missing: the host file to copy");
            if (s.path.empty()) {
                if (!fs::path(*t.get("source")->value<std::string>()).is_absolute())
                    r.error(t, prefix + ".path", "missing: where in the image to put the file (needed when `source` is relative)");
                s.path = s.source.string();
            }
            break;
        case K::File:
            if (s.path.empty()) r.error(t, prefix + ".path", "missing: where in the image the file goes");
            if (s.source.empty() == !s.content.has_value()) r.error(t, prefix, "give either `content` (the text) or `source` (a host file)");
            break;
        case K::Directory:
            if (s.path.empty()) r.error(t, prefix + ".path", "missing: the directory to create");
            break;
        case K::Symlink:
            if (s.path.empty()) r.error(t, prefix + ".path", "missing: where the link goes");
            if (s.target.empty()) r.error(t, prefix + ".target", "missing: what the link points to");
            break;
    }
    return s;
}

}  // namespace

std::string os_release_text(const Recipe& recipe) {
    auto given = [&](const char* field) -> const std::string* {
        auto it = recipe.os_release.find(field);
        return it == recipe.os_release.end() ? nullptr : &it->second;
    };
    const std::string name = given("NAME") ? *given("NAME") : recipe.name;
    std::string out = "NAME=" + shell_quoted(name) + "\n";
    out += "ID=" + (given("ID") ? *given("ID") : os_release_id(recipe.name)) + "\n";
    out += "VERSION_ID=" + recipe.version + "\n";
    out += "PRETTY_NAME=" + shell_quoted(name + " " + recipe.version) + "\n";
    out += "IMAGE_ID=" + os_release_id(recipe.name) + "\n";
    out += "IMAGE_VERSION=" + recipe.version + "\n";
    for (const auto& [field, value] : recipe.os_release)
        if (field != "NAME" && field != "ID") out += field + "=" + shell_quoted(value) + "\n";
    return out;
}

bool is_package_spec(std::string_view name) {
    auto is = [](char c, std::string_view extra) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || extra.find(c) != std::string_view::npos; };
    size_t end = name.find_first_of("=:");
    std::string_view package = name.substr(0, end);
    if (package.size() < 2 || !is(package[0], "")) return false;
    for (char c : package)
        if (!is(c, "+.-")) return false;
    if (end == std::string_view::npos) return true;
    std::string_view rest = name.substr(end + 1);
    if (rest.empty() || !is(rest[0], "")) return false;
    if (name[end] == ':') {  // an architecture
        for (char c : rest)
            if (!is(c, "-")) return false;
        return true;
    }
    for (char c : rest)  // a version: [epoch:]upstream[-revision]
        if (!is(c, "+.-~:") && !(c >= 'A' && c <= 'Z')) return false;
    return true;
}

Recipe load_recipe(const fs::path& file) {
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) fail(file.string() + ": recipe not found (no such file)");
    return parse_recipe(read_file(file), file);
}

Recipe parse_recipe(std::string_view text, const fs::path& file) {
    toml::table root = TomlReader::parse(text, file);

    Reader r(file);
    Recipe recipe;
    recipe.file = file;
    r.only(root, "", {"name", "version", "compatible", "seed", "os_release", "disk", "kernel", "boot", "update", "attestation", "firewall", "ssh", "provisioning", "rootfs"});
    recipe.name = r.required_string(root, "", "name");
    recipe.version = r.required_string(root, "", "version");
    if (auto problem = version_problem(recipe.version))
        r.error(*root.get("version"), "version", "'" + recipe.version + "' is not a version (" + *problem + ")");
    // A device takes bundles whose compatible string equals its own. A recipe copied from another
    // product and renamed, that kept the other's string, would make devices of both accept each
    // other's bundles: made from the name when left out, and a warning when it does not start with it.
    if (const toml::node* n = root.get("compatible")) {
        recipe.compatible = r.required_string(root, "", "compatible");
        if (!recipe.compatible.starts_with(recipe.name))
            recipe.warnings.push_back(r.where(*n, "compatible") + ": compatible '" + recipe.compatible + "' does not start with the recipe's name '" +
                                      recipe.name + "': devices of this image accept the update bundles of every recipe with that string, " +
                                      "e.g. the one this recipe was copied from (make it \"" + recipe.name + "-" + image_arch + "\", or leave it out to get that)");
    } else {
        recipe.compatible = recipe.name + "-" + image_arch;
    }
    if (const toml::table* os = r.table(root, "", "os_release")) {
        for (auto&& [key, value] : *os) {
            const std::string field(key.str());
            const std::string k = "os_release." + field;
            bool name_ok = !field.empty() && field[0] >= 'A' && field[0] <= 'Z';
            for (char c : field) name_ok = name_ok && ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
            if (!name_ok) r.error(value, k, "not an os-release field name (upper-case letters, digits and _, such as HOME_URL)");
            for (auto g : generated_os_release_fields)
                if (field == g) r.error(value, k, "made from the recipe's name and version (give NAME for the pretty name's start)");
            if (!value.is_string()) r.error(value, k, "must be a string");
            const std::string v = *value.value<std::string>();
            if (v.find_first_of("\n\r") != std::string::npos) r.error(value, k, "must be one line");
            if (field == "ID" && !is_os_release_id(v)) r.error(value, k, "'" + v + "' must be lower-case letters, digits, '.', '_' or '-'");
            recipe.os_release[field] = v;
        }
    }
    recipe.seed = r.string(root, "", "seed").value_or(recipe.compatible);

    const toml::table* disk = r.table(root, "", "disk");
    if (!disk) r.error(root, "disk", "missing: the recipe needs a [disk] table with a size and partitions");
    r.only(*disk, "disk", {"size", "partitions"});
    const toml::node* size = disk->get("size");
    if (!size) r.error(*disk, "disk.size", "missing (e.g. size = \"1GiB\", or \"auto\" for just enough)");
    if (size->is_string() && *size->value<std::string>() == "auto") recipe.layout.disk_size = 0;
    else if ((recipe.layout.disk_size = r.size(*size, "disk.size")) == 0) r.error(*size, "disk.size", "must not be zero (or \"auto\")");
    recipe.layout.seed = recipe.seed;
    recipe.layout.where = r.where(*disk, "disk");
    read_partitions(r, *disk, recipe);

    if (const toml::table* kernel = r.table(root, "", "kernel")) {
        r.only(*kernel, "kernel", {"package", "source", "enabled"});
        recipe.kernel.where = r.where(*kernel, "kernel");
        if (auto enabled = r.boolean(*kernel, "kernel", "enabled")) recipe.kernel.enabled = *enabled;
        if (auto package = r.string(*kernel, "kernel", "package")) recipe.kernel.package = *package;
        if (const toml::node* n = kernel->get("source")) {
            recipe.kernel.deb = r.host_path(*n, "kernel.source", true);
            if (kernel->get("package")) r.error(*n, "kernel.source", "give either `package` or `source`, not both");
        }
        if (recipe.kernel.package.empty() && recipe.kernel.deb.empty())
            r.error(*kernel, "kernel.package", "must name a Debian kernel package");
    } else {
        recipe.kernel.where = file.string() + ": kernel";
    }

    if (const toml::table* firewall = r.table(root, "", "firewall")) {
        recipe.firewall.enabled = true;
        recipe.firewall.where = r.where(*firewall, "firewall");
        r.only(*firewall, "firewall", {"policy"});
        if (const toml::node* n = firewall->get("policy")) recipe.firewall.policy = r.host_path(*n, "firewall.policy", true);
    }
    if (const toml::table* prov = r.table(root, "", "provisioning")) {
        recipe.provisioning.enabled = true;
        recipe.provisioning.where = r.where(*prov, "provisioning");
        r.only(*prov, "provisioning", {"config"});
        if (const toml::node* n = prov->get("config")) recipe.provisioning.config = r.host_path(*n, "provisioning.config", true);
    }
    if (const toml::table* ssh = r.table(root, "", "ssh")) {
        auto& h = recipe.ssh;
        h.enabled = true;
        h.where = r.where(*ssh, "ssh");
        r.only(*ssh, "ssh", {"authorized_keys", "trusted_user_ca_keys", "vsock"});
        if (auto vsock = r.boolean(*ssh, "ssh", "vsock")) h.vsock = *vsock;
        if (const toml::node* n = ssh->get("trusted_user_ca_keys"))
            h.trusted_user_ca_keys = r.host_path(*n, "ssh.trusted_user_ca_keys", true);
        if (const toml::node* n = ssh->get("authorized_keys")) {
            const toml::table* users = n->as_table();
            if (!users) r.error(*n, "ssh.authorized_keys", "must be a table of user = [public key files], such as { root = [\"keys/admin.pub\"] }");
            for (auto&& [user, files] : *users) {
                const std::string k = "ssh.authorized_keys." + std::string(user.str());
                const toml::array* list = files.as_array();
                if (!list || list->empty()) r.error(files, k, "must be a non-empty list of public key files");
                auto& paths = h.authorized_keys[std::string(user.str())];
                for (size_t i = 0; i < list->size(); ++i) paths.push_back(r.host_path(*list->get(i), k + "[" + std::to_string(i) + "]", true));
            }
        }
        if (h.authorized_keys.empty() && h.trusted_user_ca_keys.empty())
            r.error(*ssh, "ssh", "nobody could log in: give `authorized_keys` or `trusted_user_ca_keys` (passwords are never accepted)");
    }
    if (const toml::table* update = r.table(root, "", "update")) {
        auto& u = recipe.update;
        u.enabled = true;
        u.where = r.where(*update, "update");
        r.only(*update, "update", {"trust_anchor", "health_check", "config"});
        if (const toml::node* n = update->get("config")) {
            u.config = r.host_path(*n, "update.config", true);
            try {  // what the device would refuse at its first install from a server, refused now
                (void)updater::parse_update_config(read_file(u.config), u.config);
            } catch (const Error& e) {
                r.error(*n, "update.config", e.what());
            }
        }
        if (const toml::node* n = update->get("trust_anchor")) u.trust_anchor = r.host_path(*n, "update.trust_anchor", true);
        else r.error(*update, "update.trust_anchor", "missing: the CA certificate (PEM) update bundles must be signed under");
        if (const toml::node* n = update->get("health_check")) {
            const toml::array* a = n->as_array();
            if (!a || a->empty()) r.error(*n, "update.health_check", "must be a non-empty list: the program and its arguments");
            for (const toml::node& word : *a) {
                if (!word.is_string()) r.error(word, "update.health_check", "must be a list of strings");
                u.health_check.push_back(*word.value<std::string>());
            }
        }
    }
    if (const toml::table* att = r.table(root, "", "attestation")) {
        auto& a = recipe.attestation;
        a.enabled = true;
        a.where = r.where(*att, "attestation");
        r.only(*att, "attestation", {"key", "cert", "key_passphrase", "agent", "config"});
        if (auto agent = r.boolean(*att, "attestation", "agent")) a.agent = *agent;
        if (const toml::node* n = att->get("config")) {
            a.config = r.host_path(*n, "attestation.config", true);
            if (!a.agent) r.error(*n, "attestation.config", "is the agent's configuration, but agent = false leaves the agent out");
        }
        if (const toml::node* n = att->get("key")) a.key = r.host_path(*n, "attestation.key", true);
        else r.error(*att, "attestation.key", "missing: the key (PEM) that signs the reference document");
        if (const toml::node* n = att->get("cert")) a.cert = r.host_path(*n, "attestation.cert", true);
        else r.error(*att, "attestation.cert", "missing: the certificate (PEM) that goes with attestation.key");
        if (auto v = r.string(*att, "attestation", "key_passphrase")) a.key_passphrase = *v;
        if (!root.get("boot")) r.error(*att, "attestation", "needs a [boot] table (without unified kernel images there is nothing to predict)");
        if (!root.get("update"))
            r.error(*att, "attestation", "needs an [update] table: the reference document is signed under its trust_anchor, as bundles are");
    }
    if (const toml::table* boot = r.table(root, "", "boot")) {
        auto& b = recipe.boot;
        b.enabled = true;
        b.where = r.where(*boot, "boot");
        r.only(*boot, "boot", {"cmdline", "key", "cert", "key_passphrase", "debug", "initrd_modules", "init", "log_mount"});
        if (auto v = r.string(*boot, "boot", "cmdline")) b.cmdline = *v;
        if (const toml::node* n = boot->get("key")) b.key = r.host_path(*n, "boot.key", true);
        else r.error(*boot, "boot.key", "missing: the Secure Boot signing key (PEM) for the unified kernel images");
        if (const toml::node* n = boot->get("cert")) b.cert = r.host_path(*n, "boot.cert", true);
        else r.error(*boot, "boot.cert", "missing: the certificate (PEM) that goes with boot.key");
        if (auto v = r.string(*boot, "boot", "key_passphrase")) b.key_passphrase = *v;
        if (auto v = r.boolean(*boot, "boot", "debug")) b.debug = *v;
        if (auto v = r.string(*boot, "boot", "init")) b.init = r.image_path(*boot->get("init"), "boot.init");
        if (auto v = r.string(*boot, "boot", "log_mount")) {
            b.log_mount = r.image_path(*boot->get("log_mount"), "boot.log_mount");
            if (auto problem = initrd::log_mount_problem(*v)) r.error(*boot->get("log_mount"), "boot.log_mount", *problem);
        }
        if (const toml::node* n = boot->get("initrd_modules")) {
            if (!n->is_array()) r.error(*n, "boot.initrd_modules", "must be a list of kernel module names");
            for (auto& m : *n->as_array()) {
                if (!m.is_string()) r.error(m, "boot.initrd_modules", "must be a list of kernel module names");
                b.initrd_modules.push_back(*m.value<std::string>());
            }
        }
        if (!recipe.kernel.enabled) r.error(*boot, "boot", "needs a kernel ([kernel] enabled = false leaves nothing to boot)");
    }

    if (const toml::table* rootfs = r.table(root, "", "rootfs")) {
        r.only(*rootfs, "rootfs", {"filesystem", "compression", "verity", "base", "packages", "debs", "sources", "add"});
        Recipe::Packages& packages = recipe.rootfs.packages;
        packages.where = r.where(*rootfs, "rootfs");
        if (auto base = r.string(*rootfs, "rootfs", "base")) {
            if (*base != "essential" && *base != "minbase" && *base != "important")
                r.error(*rootfs->get("base"), "rootfs.base", "unknown base '" + *base + "' (essential, minbase or important: Debian's priority sets)");
            packages.base = *base;
        }
        if (const toml::node* n = rootfs->get("packages")) {
            if (!n->is_array()) r.error(*n, "rootfs.packages", "must be a list of Debian package names");
            for (auto& item : *n->as_array()) {
                if (!item.is_string() || !is_package_spec(*item.value<std::string>()))
                    r.error(item, "rootfs.packages", (item.is_string() ? "'" + *item.value<std::string>() + "' is not" : std::string("must be a list of strings, each")) +
                                                         " a Debian package name (such as \"openssh-server\" or \"curl=7.88.1-10+deb12u8\")");
                packages.names.push_back(*item.value<std::string>());
            }
        }
        if (const toml::node* n = rootfs->get("debs")) {
            if (!n->is_array()) r.error(*n, "rootfs.debs", "must be a list of .deb files");
            size_t i = 0;
            for (auto& item : *n->as_array()) packages.debs.push_back(r.host_path(item, "rootfs.debs[" + std::to_string(i++) + "]", true));
        }
        if (const toml::node* n = rootfs->get("sources")) {
            packages.sources = r.host_path(*n, "rootfs.sources", true);
            if (!packages.enabled()) r.error(*n, "rootfs.sources", "names apt sources but the recipe installs no packages (rootfs.base, packages or debs)");
        }
        packages.lock = fs::absolute(file).parent_path() / (file.stem().string() + ".lock");
        if (auto fs_name = r.string(*rootfs, "rootfs", "filesystem")) {
            if (*fs_name != "erofs" && *fs_name != "ext4")
                r.error(*rootfs->get("filesystem"), "rootfs.filesystem", "unknown filesystem '" + *fs_name + "' (erofs or ext4)");
            recipe.rootfs.filesystem = *fs_name;
        }
        if (auto c = r.string(*rootfs, "rootfs", "compression")) {
            if (*c != "none" && *c != "lz4" && *c != "lz4hc")
                r.error(*rootfs->get("compression"), "rootfs.compression", "unknown compression '" + *c + "' (none, lz4 or lz4hc)");
            if (recipe.rootfs.filesystem != "erofs" && *c != "none")
                r.error(*rootfs->get("compression"), "rootfs.compression", "compression is for erofs only");
            recipe.rootfs.compression = *c;
        }
        if (auto v = r.boolean(*rootfs, "rootfs", "verity")) recipe.rootfs.verity = *v;
        if (const toml::array* add = r.table_array(*rootfs, "rootfs", "add")) {
            size_t index = 0;
            for (auto& item : *add)
                recipe.rootfs.steps.push_back(read_step(r, *item.as_table(), "rootfs.add[" + std::to_string(index++) + "]"));
        }
    }

    r.fail_on_missing_files();

    // Cross-checks between the layout and the root filesystem.
    bool has_root = false, has_verity = false;
    for (const auto& p : recipe.layout.partitions) {
        has_root = has_root || p.role == Role::Root;
        has_verity = has_verity || p.role == Role::RootVerity;
    }
    if (!has_root) r.error(*disk, "disk.partitions", "the layout needs a partition with role \"root\"");
    if (recipe.rootfs.verity && !has_verity)
        r.error(*disk, "disk.partitions", "rootfs.verity is on but the layout has no \"root-verity\" partition (add one, or set rootfs.verity = false)");
    if (!recipe.rootfs.verity && has_verity)
        r.error(*disk, "disk.partitions", "the layout has a \"root-verity\" partition but rootfs.verity is false");
    // root-verity without a size: room for the tree of a full root partition.
    for (auto& p : recipe.layout.partitions) {
        if (p.role != Role::RootVerity || p.size) continue;
        for (const auto& q : recipe.layout.partitions) {
            if (q.role != Role::Root || !q.size) continue;
            verity::Params params;
            params.data_blocks = *q.size / 4096;
            p.size = align_up(verity::hash_device_size(params), partitions::alignment);
        }
    }
    std::set<Role> seen;
    for (const auto& p : recipe.layout.partitions) {
        if (p.role != Role::Extra && !seen.insert(p.role).second)
            fail(p.where + ": role: a second \"" + std::string(partitions::role_name(p.role)) + "\" partition (each role appears once; slotted roles get _a and _b by themselves)");
    }
    return recipe;
}

}  // namespace cairn::imager
