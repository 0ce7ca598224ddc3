// Reading a TOML file (toml++) with Cairn's error style: every problem is one line
// "<file>:<line>: <key>: <what is wrong>", and tables reject keys they do not know.
// Recipes, the provisioning config and the firewall policy all read their files through it.
#pragma once

#include <toml++/toml.h>

#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace cairn {

class TomlReader {
public:
    explicit TomlReader(std::filesystem::path file) : file_(std::move(file)) {}

    const std::filesystem::path& file() const { return file_; }

    // Parses TOML text that came from `file`; a syntax error is "<file>:<line>: not valid TOML: <what>".
    static toml::table parse(std::string_view text, const std::filesystem::path& file) {
        try {
            return toml::parse(text, file.string());
        } catch (const toml::parse_error& e) {
            fail(file.string() + ":" + std::to_string(e.source().begin.line) + ": not valid TOML: " + std::string(e.description()));
        }
    }

    // "<file>:<line>: <key>"
    std::string where(const toml::node& node, const std::string& key) const {
        auto line = node.source().begin.line;
        return file_.string() + (line ? ":" + std::to_string(line) : "") + ": " + key;
    }

    [[noreturn]] void error(const toml::node& node, const std::string& key, const std::string& what) const {
        fail(where(node, key) + ": " + what);
    }

    // Rejects keys a table does not know.
    void only(const toml::table& table, const std::string& prefix, std::initializer_list<std::string_view> known) const {
        for (auto&& [k, v] : table) {
            bool ok = false;
            for (auto name : known) ok = ok || k.str() == name;
            if (!ok) {
                std::string list;
                for (auto name : known) list += (list.empty() ? "" : ", ") + std::string(name);
                error(v, key(prefix, std::string(k.str())), "unknown key (known here: " + list + ")");
            }
        }
    }

    // "prefix.name", or "name" at the top level.
    static std::string key(const std::string& prefix, const std::string& name) { return prefix.empty() ? name : prefix + "." + name; }

    std::optional<std::string> string(const toml::table& t, const std::string& prefix, const char* name) const {
        const toml::node* n = t.get(name);
        if (!n) return std::nullopt;
        if (!n->is_string()) error(*n, key(prefix, name), "must be a string");
        return n->value<std::string>();
    }

    std::string required_string(const toml::table& t, const std::string& prefix, const char* name) const {
        auto s = string(t, prefix, name);
        if (!s || s->empty()) error(t, key(prefix, name), "missing (a non-empty string is required)");
        return *s;
    }

    std::optional<bool> boolean(const toml::table& t, const std::string& prefix, const char* name) const {
        const toml::node* n = t.get(name);
        if (!n) return std::nullopt;
        if (!n->is_boolean()) error(*n, key(prefix, name), "must be true or false");
        return n->value<bool>();
    }

    // A whole number in [min, max]; nullopt when absent.
    std::optional<long long> integer(const toml::table& t, const std::string& prefix, const char* name, long long min, long long max) const {
        const toml::node* n = t.get(name);
        if (!n) return std::nullopt;
        if (!n->is_integer()) error(*n, key(prefix, name), "must be a whole number");
        const long long v = *n->value<long long>();
        if (v < min || v > max) error(*n, key(prefix, name), "must be between " + std::to_string(min) + " and " + std::to_string(max));
        return v;
    }

    const toml::table* table(const toml::table& t, const std::string& prefix, const char* name) const {
        const toml::node* n = t.get(name);
        if (!n) return nullptr;
        if (!n->is_table()) error(*n, key(prefix, name), "must be a table");
        return n->as_table();
    }

    // A list of tables, written either as [[name]] or as name = [ {...}, ... ].
    const toml::array* table_array(const toml::table& t, const std::string& prefix, const char* name) const {
        const toml::node* n = t.get(name);
        if (!n) return nullptr;
        if (!n->is_array()) error(*n, key(prefix, name), "must be a list of tables");
        for (auto& item : *n->as_array())
            if (!item.is_table()) error(item, key(prefix, name), "every entry must be a table");
        return n->as_array();
    }

private:
    std::filesystem::path file_;
};

}  // namespace cairn
