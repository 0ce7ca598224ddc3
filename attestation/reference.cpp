#include "attestation/reference.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <initializer_list>
#include <set>

#include "common/error.hpp"

namespace cairn::attestation {

using nlohmann::json;

namespace {

// The document's own format number: a reader refuses a document of another format rather than
// judging devices by values it does not understand.
constexpr int reference_format = 1;

std::string hex(const Sha256& digest) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(64);
    for (uint8_t b : digest) {
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

// Field access that names the key on any problem ("<what>: slots[1].pcr9: ...").
struct Object {
    const json& j;
    std::string where;  // "<what>" or "<what>: slots[0]"
    std::string prefix; // "" or "slots[0]."

    std::string key_name(const char* key) const { return where + ": \"" + prefix + key + "\""; }
    const json& get(const char* key) const {
        auto it = j.find(key);
        if (it == j.end()) fail(key_name(key) + " is missing");
        return *it;
    }
    std::string str(const char* key) const {
        const json& v = get(key);
        if (!v.is_string()) fail(key_name(key) + " must be a string");
        std::string s = v.get<std::string>();
        if (s.empty()) fail(key_name(key) + " is empty");
        return s;
    }
    static Sha256 digest_of(const json& v, const std::string& name) {
        if (!v.is_string()) fail(name + " must be a string of 64 lower-case hex digits");
        const std::string& s = v.get_ref<const std::string&>();
        if (s.size() != 64) fail(name + " must be 64 lower-case hex digits (a SHA-256), not " + std::to_string(s.size()) + " characters");
        Sha256 d{};
        for (size_t i = 0; i < 64; ++i) {
            const char c = s[i];
            int nibble = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (nibble < 0) fail(name + " must be 64 lower-case hex digits (a SHA-256)");
            d[i / 2] = static_cast<uint8_t>(d[i / 2] << 4 | nibble);
        }
        return d;
    }
    Sha256 digest(const char* key) const { return digest_of(get(key), key_name(key)); }
    void only(std::initializer_list<const char*> keys) const {
        for (auto it = j.begin(); it != j.end(); ++it)
            if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; }))
                fail(where + ": unknown key \"" + prefix + it.key() + "\"");
    }
};

}  // namespace

std::string to_json(const ReferenceDocument& doc) {
    // nlohmann's objects keep their keys sorted: the same document always gives the same text.
    json slots = json::array();
    for (const SlotReference& s : doc.slots) {
        json pcr11 = json::array();
        for (const Sha256& d : s.pcr11) pcr11.push_back(hex(d));
        slots.push_back({{"slot", s.slot},
                         {"kernel_release", s.kernel_release},
                         {"uki_authenticode", hex(s.uki_authenticode)},
                         {"pcr11", pcr11},
                         {"pcr9", hex(s.pcr9)},
                         {"cmdline_event", hex(s.cmdline_event)},
                         {"initrd_event", hex(s.initrd_event)}});
    }
    json j = {{"format", reference_format},
              {"image", doc.image},
              {"version", doc.version},
              {"uki_signer_certificate", hex(doc.uki_signer_certificate)},
              {"slots", slots}};
    return j.dump(2) + "\n";
}

ReferenceDocument parse_reference(std::string_view text, const std::string& what) {
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded()) fail(what + ": the reference document is not JSON");
    if (!j.is_object()) fail(what + ": the reference document is not a JSON object");
    Object top{j, what, ""};
    top.only({"format", "image", "version", "uki_signer_certificate", "slots"});
    const json& format = top.get("format");
    if (!format.is_number_integer() || format.get<int64_t>() != reference_format)
        fail(top.key_name("format") + ": " + format.dump() + " is not a reference document format this reader knows (" +
             std::to_string(reference_format) + ")");
    ReferenceDocument doc;
    doc.image = top.str("image");
    doc.version = top.str("version");
    doc.uki_signer_certificate = top.digest("uki_signer_certificate");
    const json& slots = top.get("slots");
    if (!slots.is_array() || slots.empty()) fail(top.key_name("slots") + " must be a non-empty array");
    if (slots.size() > 2) fail(top.key_name("slots") + " has " + std::to_string(slots.size()) + " entries (an image has slots a and b)");
    std::set<std::string> seen;
    for (size_t i = 0; i < slots.size(); ++i) {
        const std::string name = "slots[" + std::to_string(i) + "]";
        if (!slots[i].is_object()) fail(what + ": \"" + name + "\" must be an object");
        Object o{slots[i], what, name + "."};
        o.only({"slot", "kernel_release", "uki_authenticode", "pcr11", "pcr9", "cmdline_event", "initrd_event"});
        SlotReference s;
        s.slot = o.str("slot");
        if (s.slot != "a" && s.slot != "b") fail(o.key_name("slot") + ": \"" + s.slot + "\" is not a slot (a or b)");
        if (!seen.insert(s.slot).second) fail(o.key_name("slot") + ": slot " + s.slot + " a second time");
        s.kernel_release = o.str("kernel_release");
        s.uki_authenticode = o.digest("uki_authenticode");
        const json& pcr11 = o.get("pcr11");
        if (!pcr11.is_array() || pcr11.empty()) fail(o.key_name("pcr11") + " must be a non-empty array (the stub's value first)");
        if (pcr11.size() > 16) fail(o.key_name("pcr11") + " has " + std::to_string(pcr11.size()) + " values (16 at most)");
        for (size_t k = 0; k < pcr11.size(); ++k)
            s.pcr11.push_back(Object::digest_of(pcr11[k], what + ": \"" + name + ".pcr11[" + std::to_string(k) + "]\""));
        s.pcr9 = o.digest("pcr9");
        s.cmdline_event = o.digest("cmdline_event");
        s.initrd_event = o.digest("initrd_event");
        doc.slots.push_back(std::move(s));
    }
    return doc;
}

}  // namespace cairn::attestation
