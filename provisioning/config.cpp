#include "provisioning/config.hpp"

#include <toml++/toml.h>

#include <initializer_list>

#include "common/error.hpp"
#include "common/toml_reader.hpp"
#include "common/file.hpp"
#include "common/text.hpp"
#include "common/encoding.hpp"

namespace cairn::provisioning {

namespace {

// The provisioning config's own value kinds on top of the shared TOML reading.
class Reader : public TomlReader {
public:
    using TomlReader::TomlReader;

    // A file:// URI whose file must exist.
    std::filesystem::path existing_file(const toml::table& t, const std::string& prefix, const char* name) const {
        const std::string k = key(prefix, name);
        const std::string uri = required_string(t, prefix, name);
        std::filesystem::path path;
        try {
            path = file_uri_path(uri, k);
        } catch (const Error& e) {
            error(*t.get(name), k, e.what());
        }
        std::error_code ec;  // ENAMETOOLONG, EACCES, ...: no such file either
        if (!std::filesystem::is_regular_file(path, ec)) error(*t.get(name), k, "no such file: " + path.string());
        return path;
    }
};

}  // namespace

std::string mode_name(ReprovisioningMode mode) {
    switch (mode) {
        case ReprovisioningMode::Dynamic: return "Dynamic";
        case ReprovisioningMode::AlwaysOnStartup: return "AlwaysOnStartup";
        case ReprovisioningMode::OnErrorOnly: return "OnErrorOnly";
    }
    return "?";
}

std::string method_name(AttestationMethod method) {
    switch (method) {
        case AttestationMethod::Tpm: return "tpm";
        case AttestationMethod::X509: return "x509";
        case AttestationMethod::SymmetricKey: return "symmetric_key";
    }
    return "?";
}

std::filesystem::path file_uri_path(const std::string& uri, const std::string& key) {
    if (uri.rfind("pkcs11:", 0) == 0) fail(key + ": PKCS#11 URIs are not supported yet; give a file:// URI");
    if (uri.rfind("file://", 0) != 0) fail(key + ": '" + uri + "' is not a file:// URI");
    std::string path = url_decode(uri.substr(7), key);
    if (path.empty() || path[0] != '/') fail(key + ": '" + uri + "' must name an absolute path (file:///...)");
    return path;
}

ProvisioningConfig parse_config(const std::string& text, const std::filesystem::path& file) {
    toml::table root = TomlReader::parse(text, file);
    Reader r(file);
    ProvisioningConfig c;
    c.file = file;
    // Other programs' sections of the shared config.toml are theirs to check.
    if (auto v = r.string(root, "", "trust_bundle_cert")) {
        c.trust_bundle = file_uri_path(*v, "trust_bundle_cert");
        std::error_code ec;
        if (!std::filesystem::is_regular_file(c.trust_bundle, ec)) r.error(*root.get("trust_bundle_cert"), "trust_bundle_cert", "no such file: " + c.trust_bundle.string());
    }
    auto parse_mode = [&](const toml::table& t, const std::string& prefix) {
        if (auto v = r.string(t, prefix, "auto_reprovisioning_mode")) {
            if (*v == "Dynamic") c.mode = ReprovisioningMode::Dynamic;
            else if (*v == "AlwaysOnStartup") c.mode = ReprovisioningMode::AlwaysOnStartup;
            else if (*v == "OnErrorOnly") c.mode = ReprovisioningMode::OnErrorOnly;
            else r.error(*t.get("auto_reprovisioning_mode"), Reader::key(prefix, "auto_reprovisioning_mode"),
                         "'" + *v + "' is not Dynamic, AlwaysOnStartup or OnErrorOnly");
        }
    };
    parse_mode(root, "");
    if (const toml::node* n = root.get("cloud_timeout_sec")) {
        if (!n->is_integer() || *n->value<int64_t>() < 70) r.error(*n, "cloud_timeout_sec", "must be an integer of at least 70");
        c.cloud_timeout_sec = static_cast<int>(*n->value<int64_t>());
    }
    const toml::table* p = r.table(root, "", "provisioning");
    if (!p) fail(file.string() + ": provisioning: missing (a [provisioning] table is required)");
    r.only(*p, "provisioning", {"source", "global_endpoint", "id_scope", "payload", "attestation", "auto_reprovisioning_mode"});
    c.source = r.required_string(*p, "provisioning", "source");
    parse_mode(*p, "provisioning");
    // With source = "none" the DPS keys may be left out, but whatever the file holds is checked
    // ([tpm] matters to `cairnctl provision tpm-info` on a factory station, for one).
    if (c.source == "manual") r.error(*p->get("source"), "provisioning.source", "'manual' provisioning is not supported by cairn-provisiond; use 'dps'");
    if (c.source != "dps" && c.source != "none") r.error(*p->get("source"), "provisioning.source", "'" + c.source + "' is not dps or none");
    const bool dps = c.source == "dps";
    if (auto v = r.string(*p, "provisioning", "global_endpoint")) {
        if (v->rfind("https://", 0) != 0) r.error(*p->get("global_endpoint"), "provisioning.global_endpoint", "'" + *v + "' is not an https:// URL");
        c.global_endpoint = *v;
    }
    c.id_scope = dps ? r.required_string(*p, "provisioning", "id_scope") : r.string(*p, "provisioning", "id_scope").value_or("");
    if (const toml::table* payload = r.table(*p, "provisioning", "payload")) {
        r.only(*payload, "provisioning.payload", {"uri"});
        std::filesystem::path path = r.existing_file(*payload, "provisioning.payload", "uri");
        try {
            c.payload = nlohmann::json::parse(read_file(path));
        } catch (const nlohmann::json::exception& e) {
            r.error(*payload->get("uri"), "provisioning.payload.uri", path.string() + " is not valid JSON: " + e.what());
        }
    }
    const toml::table* a = r.table(*p, "provisioning", "attestation");
    if (!a && dps) r.error(*p, "provisioning.attestation", "missing (a table with method = \"tpm\" | \"x509\" | \"symmetric_key\")");
    if (a) {
        const std::string ap = "provisioning.attestation";
        r.only(*a, ap, {"method", "registration_id", "symmetric_key", "identity_cert", "identity_pk"});
        const std::string method = r.required_string(*a, ap, "method");
        c.registration_id = r.string(*a, ap, "registration_id").value_or("");
        if (method == "tpm") {
            c.method = AttestationMethod::Tpm;
        } else if (method == "symmetric_key") {
            c.method = AttestationMethod::SymmetricKey;
            if (c.registration_id.empty()) r.error(*a, ap + ".registration_id", "missing (required for symmetric_key)");
            const toml::table* k = r.table(*a, ap, "symmetric_key");
            if (!k) r.error(*a, ap + ".symmetric_key", "missing ({ value = \"<base64>\" } or { uri = \"file:///...\" })");
            r.only(*k, ap + ".symmetric_key", {"value", "uri"});
            if (auto v = r.string(*k, ap + ".symmetric_key", "value")) c.symmetric_key = *v;
            else if (k->get("uri")) {
                c.symmetric_key = trim_end(read_file(r.existing_file(*k, ap + ".symmetric_key", "uri")));
            } else {
                r.error(*k, ap + ".symmetric_key", "needs value or uri");
            }
            try {
                if (base64_decode(c.symmetric_key, "key").empty()) fail("empty");
            } catch (const Error&) {
                r.error(*k, ap + ".symmetric_key", "is not a base64 key");
            }
        } else if (method == "x509") {
            c.method = AttestationMethod::X509;
            c.identity_cert = r.existing_file(*a, ap, "identity_cert");
            c.identity_pk = r.existing_file(*a, ap, "identity_pk");
        } else {
            r.error(*a->get("method"), ap + ".method", "'" + method + "' is not tpm, x509 or symmetric_key");
        }
    }
    if (const toml::table* cairn = r.table(root, "", "cairn")) {
        r.only(*cairn, "cairn", {"hub"});
        if (const toml::table* h = r.table(*cairn, "cairn", "hub")) {
            r.only(*h, "cairn.hub", {"check", "endpoint"});
            if (auto b = r.boolean(*h, "cairn.hub", "check")) c.hub_check = *b;
            if (auto v = r.string(*h, "cairn.hub", "endpoint")) {
                if (v->rfind("https://", 0) != 0) r.error(*h->get("endpoint"), "cairn.hub.endpoint", "'" + *v + "' is not an https:// URL");
                c.hub_endpoint = *v;
            }
        }
    }
    if (const toml::table* t = r.table(root, "", "tpm")) {
        r.only(*t, "tpm", {"tcti", "auth_key_index", "hierarchy_authorization"});
        if (auto v = r.string(*t, "tpm", "tcti")) c.tpm.tcti = *v == "device" ? "device:/dev/tpmrm0" : *v;
        if (auto v = r.string(*t, "tpm", "auth_key_index")) {
            std::string digits;
            for (char ch : *v)
                if (ch != '_') digits.push_back(ch);
            try {
                size_t used = 0;
                unsigned long index = std::stoul(digits, &used, 0);
                if (used != digits.size() || index > 0x7fffff) throw std::out_of_range(digits);
                c.tpm.auth_key_handle = 0x81000000u + static_cast<uint32_t>(index);
            } catch (const std::exception&) {
                r.error(*t->get("auth_key_index"), "tpm.auth_key_index", "'" + *v + "' is not an index such as \"0x00_01_00\"");
            }
        }
        if (const toml::table* h = r.table(*t, "tpm", "hierarchy_authorization")) {
            r.only(*h, "tpm.hierarchy_authorization", {"endorsement", "owner"});
            c.tpm.endorsement_auth = r.string(*h, "tpm.hierarchy_authorization", "endorsement").value_or("");
            c.tpm.owner_auth = r.string(*h, "tpm.hierarchy_authorization", "owner").value_or("");
        }
    }
    return c;
}

ProvisioningConfig load_config(const std::filesystem::path& file) { return parse_config(read_file(file), file); }

DpsClientConfig client_config(const ProvisioningConfig& config) {
    DpsClientConfig c;
    c.global_endpoint = config.global_endpoint;
    c.id_scope = config.id_scope;
    c.registration_id = config.registration_id;
    c.trust_bundle = config.trust_bundle;
    c.method = config.method;
    c.symmetric_key = config.symmetric_key;
    c.identity_cert = config.identity_cert;
    c.identity_pk = config.identity_pk;
    c.payload = config.payload;
    c.timeout_ms = config.cloud_timeout_sec * 1000;
    c.retry = config.retry;
    return c;
}

}  // namespace cairn::provisioning
