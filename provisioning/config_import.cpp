#include "provisioning/config_import.hpp"

#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <vector>

#include "common/error.hpp"
#include "common/text.hpp"

namespace cairn::provisioning {

namespace {

// The part of YAML an IoT Edge config.yaml uses: nested block mappings of scalars. Sequences,
// flow collections and block scalars are kept as opaque values (the import never needs them).
struct YamlNode {
    std::string scalar;
    bool is_map = false;
    int line = 0;
    std::map<std::string, std::unique_ptr<YamlNode>> children;

    const YamlNode* get(const std::string& key) const {
        auto it = children.find(key);
        return it == children.end() ? nullptr : it->second.get();
    }
};

// The line without its comment (a # outside quotes, at the start or after a blank).
std::string strip_comment(const std::string& line) {
    char quote = 0;
    for (size_t i = 0; i < line.size(); ++i) {
        char c = line[i];
        if (quote) {
            if (c == quote) quote = 0;
            else if (c == '\\' && quote == '"') ++i;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
            return line.substr(0, i);
        }
    }
    return line;
}

std::string unquote(const std::string& v, const std::string& where) {
    if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') {
        std::string out;
        for (size_t i = 1; i + 1 < v.size(); ++i) {
            out += v[i];
            if (v[i] == '\'' && v[i + 1] == '\'') ++i;
        }
        return out;
    }
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
        std::string out;
        for (size_t i = 1; i + 1 < v.size(); ++i) {
            if (v[i] == '\\' && i + 2 < v.size()) {
                char n = v[++i];
                out += n == 'n' ? '\n' : n == 't' ? '\t' : n;
            } else {
                out += v[i];
            }
        }
        return out;
    }
    if (!v.empty() && (v.front() == '"' || v.front() == '\'')) fail(where + ": unterminated quoted string");
    return v;
}

YamlNode parse_yaml(const std::string& text, const std::string& file) {
    YamlNode root;
    root.is_map = true;
    struct Open {
        int indent;
        YamlNode* node;
    };
    std::vector<Open> stack = {{-1, &root}};
    int skip_deeper_than = -1;  // inside a sequence or block scalar: lines indented more are skipped
    std::istringstream in(text);
    int number = 0;
    for (std::string raw; std::getline(in, raw);) {
        ++number;
        const std::string where = file + ":" + std::to_string(number);
        std::string line = strip_comment(raw);
        if (trim(line).empty() || trim(line) == "---" || trim(line) == "...") continue;
        size_t indent = line.find_first_not_of(' ');
        if (line[indent] == '\t') fail(where + ": a tab in the indentation (YAML indents with spaces)");
        const int level = static_cast<int>(indent);
        if (skip_deeper_than >= 0) {
            if (level > skip_deeper_than) continue;
            skip_deeper_than = -1;
        }
        while (stack.size() > 1 && level <= stack.back().indent) stack.pop_back();
        YamlNode* parent = stack.back().node;
        std::string content = trim(line.substr(indent));
        if (content == "-" || content.rfind("- ", 0) == 0) {  // a sequence item: opaque
            skip_deeper_than = level;
            continue;
        }
        size_t colon = std::string::npos;
        char quote = 0;
        for (size_t i = 0; i < content.size(); ++i) {
            char c = content[i];
            if (quote) { if (c == quote) quote = 0; continue; }
            if (c == '"' || c == '\'') quote = c;
            else if (c == ':' && (i + 1 == content.size() || content[i + 1] == ' ')) { colon = i; break; }
        }
        if (colon == std::string::npos) fail(where + ": expected 'key: value', found '" + content + "'");
        std::string key = unquote(trim(content.substr(0, colon)), where);
        std::string value = trim(content.substr(colon + 1));
        if (!parent->is_map) fail(where + ": '" + key + "' is indented under a value");
        auto node = std::make_unique<YamlNode>();
        node->line = number;
        YamlNode* added = node.get();
        parent->children[key] = std::move(node);
        if (value.empty()) {
            added->is_map = true;
            stack.push_back({level, added});
        } else if (value == "|" || value == ">" || value.rfind("|", 0) == 0 || value.rfind(">", 0) == 0) {
            skip_deeper_than = level;  // a block scalar: opaque
        } else {
            added->scalar = (value.front() == '{' || value.front() == '[') ? value : unquote(value, where);
        }
    }
    return root;
}

std::string toml_string(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') { out += "\\n"; continue; }
        out += c;
    }
    return out + "\"";
}

}  // namespace

std::string import_iotedge_config(const std::string& yaml, const std::filesystem::path& path) {
    const std::string file = path.string();
    YamlNode root = parse_yaml(yaml, file);
    auto where = [&](const YamlNode* n, const std::string& key) { return file + (n ? ":" + std::to_string(n->line) : "") + ": " + key; };
    auto scalar = [&](const YamlNode* parent, const std::string& key, const std::string& prefix) -> std::optional<std::string> {
        const YamlNode* n = parent ? parent->get(key) : nullptr;
        if (!n) return std::nullopt;
        if (n->is_map) fail(where(n, prefix + key) + ": must be a value, not a section");
        return n->scalar;
    };
    auto boolean = [&](const YamlNode* parent, const std::string& key, const std::string& prefix) -> bool {
        auto v = scalar(parent, key, prefix);
        if (!v) return false;
        if (*v == "true" || *v == "True" || *v == "yes") return true;
        if (*v == "false" || *v == "False" || *v == "no") return false;
        fail(where(parent->get(key), prefix + key) + ": '" + *v + "' is not true or false");
    };

    const YamlNode* p = root.get("provisioning");
    if (!p) fail(file + ": provisioning: missing (is this an IoT Edge 1.1 config.yaml?)");
    if (!p->is_map) fail(where(p, "provisioning") + ": must be a section");
    std::string source = scalar(p, "source", "provisioning.").value_or("");
    if (source != "dps")
        fail(where(p->get("source"), "provisioning.source") + ": '" + source + "': Cairn provisions through DPS only (source: dps)");
    auto scope = scalar(p, "scope_id", "provisioning.");
    if (!scope || scope->empty()) fail(where(p, "provisioning.scope_id") + ": missing");

    std::string out = "# Imported from " + file + " (IoT Edge 1.1) by `cairnctl config import`.\n";
    if (const YamlNode* certs = root.get("certificates"); certs && certs->is_map)
        if (auto trusted = scalar(certs, "trusted_ca_certs", "certificates.")) out += "trust_bundle_cert = " + toml_string(*trusted) + "\n";
    out += "\n[provisioning]\nsource = \"dps\"\n";
    if (auto endpoint = scalar(p, "global_endpoint", "provisioning.")) out += "global_endpoint = " + toml_string(*endpoint) + "\n";
    out += "id_scope = " + toml_string(*scope) + "\n";
    const bool dynamic = boolean(p, "dynamic_reprovisioning", "provisioning.") || boolean(&root, "dynamic_reprovisioning", "");
    const bool always = boolean(p, "always_reprovision_on_startup", "provisioning.");
    out += std::string("auto_reprovisioning_mode = \"") + (dynamic ? "Dynamic" : always ? "AlwaysOnStartup" : "OnErrorOnly") + "\"\n";

    out += "\n[provisioning.attestation]\n";
    const YamlNode* a = p->get("attestation");
    if (!a) {  // the oldest form: a bare registration_id means TPM
        out += "method = \"tpm\"\n";
        if (auto id = scalar(p, "registration_id", "provisioning.")) out += "registration_id = " + toml_string(*id) + "\n";
        return out;
    }
    if (!a->is_map) fail(where(a, "provisioning.attestation") + ": must be a section");
    const std::string prefix = "provisioning.attestation.";
    std::string method = scalar(a, "method", prefix).value_or("");
    if (method != "tpm" && method != "x509" && method != "symmetric_key")
        fail(where(a->get("method") ? a->get("method") : a, prefix + "method") + ": '" + method + "' is not tpm, x509 or symmetric_key");
    out += "method = " + toml_string(method) + "\n";
    if (auto id = scalar(a, "registration_id", prefix)) out += "registration_id = " + toml_string(*id) + "\n";
    if (method == "x509") {
        for (const char* key : {"identity_cert", "identity_pk"}) {
            auto v = scalar(a, key, prefix);
            if (!v) fail(where(a, prefix + key) + ": missing (x509 needs the device certificate and key as file URIs)");
            out += std::string(key) + " = " + toml_string(*v) + "\n";
        }
    } else if (method == "symmetric_key") {
        auto v = scalar(a, "symmetric_key", prefix);
        if (!v) fail(where(a, prefix + "symmetric_key") + ": missing");
        out += "symmetric_key = { value = " + toml_string(*v) + " }\n";
    }
    return out;
}

}  // namespace cairn::provisioning
