#include "partitions/layout.hpp"

#include <algorithm>
#include <set>

#include "common/error.hpp"

namespace cairn::partitions {

std::string_view role_name(Role role) {
    switch (role) {
        case Role::Esp: return "esp";
        case Role::Root: return "root";
        case Role::RootVerity: return "root-verity";
        case Role::Log: return "log";
        case Role::Data: return "data";
        case Role::Extra: return "extra";
    }
    return "?";
}

std::optional<Role> parse_role(std::string_view name) {
    for (Role r : {Role::Esp, Role::Root, Role::RootVerity, Role::Log, Role::Data, Role::Extra})
        if (role_name(r) == name) return r;
    return std::nullopt;
}

std::string label_for(Role role, char slot) {
    const std::string suffix = slot ? std::string("_") + slot : std::string();
    switch (role) {
        case Role::Esp: return "esp" + suffix;
        case Role::Root: return "root" + suffix;
        case Role::RootVerity: return "root" + suffix + "_verity";
        case Role::Log: return "log" + suffix;
        case Role::Data: return "data" + suffix;
        case Role::Extra: break;
    }
    fail("partitions of role 'extra' have no built-in label");
}

Uuid type_for(Role role) {
    switch (role) {
        case Role::Esp: return Uuid::parse(types::esp, "esp type");
        case Role::Root: return Uuid::parse(types::root_x86_64, "root type");
        case Role::RootVerity: return Uuid::parse(types::root_x86_64_verity, "root-verity type");
        case Role::Data: return Uuid::parse(types::var, "var type");
        case Role::Log:
        case Role::Extra: return Uuid::parse(types::linux_generic, "linux type");
    }
    return {};
}

std::string blank_marker(const Uuid& partition) {
    return "CAIRN BLANK PARTITION v1 " + partition.str() + "\n";
}

Uuid parse_type(std::string_view text, const std::string& what) {
    if (text == "esp") return Uuid::parse(types::esp, what);
    if (text == "root") return Uuid::parse(types::root_x86_64, what);
    if (text == "root-verity") return Uuid::parse(types::root_x86_64_verity, what);
    if (text == "var") return Uuid::parse(types::var, what);
    if (text == "linux") return Uuid::parse(types::linux_generic, what);
    if (text == "swap") return Uuid::parse(types::swap, what);
    if (text.size() != 36)
        fail(what + ": unknown partition type '" + std::string(text) +
             "' (use esp, root, root-verity, var, linux, swap or a type GUID)");
    return Uuid::parse(text, what);
}

const Partition* Layout::find(std::string_view label) const {
    for (const auto& p : partitions)
        if (p.label == label) return &p;
    return nullptr;
}

const Partition& Layout::get(std::string_view label) const {
    if (const Partition* p = find(label)) return *p;
    fail("layout has no partition labelled '" + std::string(label) + "'");
}

Partition& Layout::get(std::string_view label) {
    return const_cast<Partition&>(static_cast<const Layout*>(this)->get(label));
}

std::vector<char> Layout::slots() const {
    std::set<char> s;
    for (const auto& p : partitions)
        if (p.slot) s.insert(p.slot);
    return {s.begin(), s.end()};
}

namespace {

struct Expanded {
    const PartitionSpec* spec;
    std::string label;
    char slot;
};

std::string base_label(const PartitionSpec& spec) {
    return spec.role == Role::Extra ? spec.label : label_for(spec.role);
}

std::string slot_label(const PartitionSpec& spec, char slot) {
    return spec.role == Role::Extra ? spec.label + "_" + slot : label_for(spec.role, slot);
}

Uuid default_type(const PartitionSpec& spec) {
    if (spec.role == Role::Extra && spec.type) return *spec.type;
    return type_for(spec.role);
}

uint64_t attributes_for(Role role) {
    switch (role) {
        case Role::Root:
        case Role::RootVerity: return attr_read_only;
        case Role::Data: return attr_grow_file_system;
        default: return 0;
    }
}

}  // namespace

Layout plan(const LayoutSpec& spec) {
    const bool auto_size = spec.disk_size == 0;
    if (spec.disk_size % alignment) fail(spec.where + ": size: " + format_size(spec.disk_size) + " is not a multiple of 1 MiB");
    if (spec.partitions.empty()) fail(spec.where + ": partitions: the layout has no partitions");

    for (size_t i = 0; i < spec.partitions.size(); ++i) {
        const auto& p = spec.partitions[i];
        if (p.role == Role::Extra && p.label.empty()) fail(p.where + ": label: an extra partition needs a label");
        if (p.role != Role::Extra && p.type) fail(p.where + ": type: only extra partitions take a type; '" + std::string(role_name(p.role)) + "' has its own");
        if (p.rest && p.size) fail(p.where + ": size: give a size or take the rest of the disk, not both");
        if (!p.rest && !p.size) fail(p.where + ": size: missing (a size such as 64MiB, or \"rest\" for the last partition)");
        if (p.size && *p.size == 0) fail(p.where + ": size: a partition cannot be empty");
        if (p.size && *p.size % alignment) fail(p.where + ": size: " + format_size(*p.size) + " is not a multiple of 1 MiB");
        if (p.offset && *p.offset % alignment) fail(p.where + ": offset: " + std::to_string(*p.offset) + " is not aligned to 1 MiB");
        if (p.rest && i + 1 != spec.partitions.size()) fail(p.where + ": size: only the last partition can take the rest of the disk");
        if (p.rest && auto_size) fail(p.where + ": size: \"rest\" needs a disk size; with size = \"auto\" every partition needs its own size");
        if (p.rest && p.slotted) fail(p.where + ": size: a slotted partition cannot take the rest of the disk");
    }

    // Expand slots: the A set then the B set, where the first slotted partition stands.
    std::vector<Expanded> order;
    bool slots_placed = false;
    for (const auto& p : spec.partitions) {
        if (!p.slotted) {
            order.push_back({&p, base_label(p), 0});
            continue;
        }
        if (slots_placed) continue;
        slots_placed = true;
        for (char slot : {'a', 'b'})
            for (const auto& q : spec.partitions)
                if (q.slotted) order.push_back({&q, slot_label(q, slot), slot});
    }

    // Room for every partition where it goes (slotted ones twice; one that takes the rest at
    // least 1 MiB), plus 1 MiB at each end for the GPTs: an "auto" disk's size, and the hint when
    // a given size is too small.
    const auto needed_size = [&] {
        uint64_t end = alignment;
        for (const auto& e : order) end = (e.spec->offset ? std::max(end, *e.spec->offset) : end) + (e.spec->rest ? alignment : *e.spec->size);
        return end + alignment;
    };
    uint64_t disk_size = spec.disk_size;
    if (auto_size) disk_size = needed_size();
    Layout layout;
    layout.disk_size = disk_size;
    layout.disk_guid = Uuid::derive(spec.seed, "cairn:disk");
    const uint64_t first_usable = alignment;
    const uint64_t end_usable = disk_size > backup_gpt_bytes ? disk_size - backup_gpt_bytes : 0;
    const uint64_t end_aligned = end_usable / alignment * alignment;

    std::set<std::string> labels;
    uint64_t next = first_usable;
    for (const auto& e : order) {
        const PartitionSpec& p = *e.spec;
        if (e.label.size() > 36) fail(p.where + ": label: '" + e.label + "' is longer than the 36 characters GPT allows");
        if (!labels.insert(e.label).second) fail(p.where + ": label: duplicate partition label '" + e.label + "'");
        Partition out;
        out.label = e.label;
        out.role = p.role;
        out.slot = e.slot;
        out.type = default_type(p);
        out.uuid = Uuid::derive(spec.seed, "cairn:partition:" + e.label);
        out.attributes = attributes_for(p.role);
        if (p.role == Role::Data && &e != &order.back()) out.attributes &= ~attr_grow_file_system;  // only a last partition can grow
        out.offset = p.offset ? *p.offset : next;
        if (out.offset < first_usable) fail(p.where + ": offset: partition '" + e.label + "' starts inside the partition table (before 1 MiB)");
        if (p.rest) {
            if (out.offset >= end_aligned)
                fail(p.where + ": size: no room left for '" + e.label + "' on a " + format_size(disk_size) + " disk");
            out.size = end_aligned - out.offset;
        } else {
            out.size = *p.size;
        }
        if (out.offset + out.size > end_usable) {
            const uint64_t needed = needed_size();
            fail(p.where + ": partition '" + e.label + "' (" + format_size(out.size) + " at " + format_size(out.offset) +
                 ") does not fit on a " + format_size(disk_size) + " disk; the layout needs at least " + format_size(needed));
        }
        for (const auto& other : layout.partitions) {
            if (out.offset < other.offset + other.size && other.offset < out.offset + out.size)
                fail(p.where + ": partition '" + e.label + "' overlaps '" + other.label + "'");
        }
        next = out.offset + out.size;
        layout.partitions.push_back(std::move(out));
    }
    return layout;
}

GptTable to_gpt(const Layout& layout) {
    GptTable table;
    table.disk_guid = layout.disk_guid;
    table.disk_size = layout.disk_size;
    for (const auto& p : layout.partitions) table.entries.push_back({p.label, p.type, p.uuid, p.offset, p.size, p.attributes});
    return table;
}

}  // namespace cairn::partitions
