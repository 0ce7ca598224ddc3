#include "updater/uefi_boot_control.hpp"

#include <algorithm>

#include "common/error.hpp"
#include "common/file.hpp"
#include "partitions/disk.hpp"

namespace cairn::updater {

namespace fs = std::filesystem;

namespace {
constexpr const char* loader = "\\EFI\\BOOT\\BOOTX64.EFI";

std::vector<uint8_t> u16_list(const std::vector<uint16_t>& v) {
    std::vector<uint8_t> out;
    for (uint16_t n : v) {
        out.push_back(uint8_t(n));
        out.push_back(uint8_t(n >> 8));
    }
    return out;
}
}  // namespace

UefiBootControl::UefiBootControl(EfiVars& vars, const fs::path& disk, fs::path cmdline) : vars_(vars), cmdline_(std::move(cmdline)) {
    const partitions::DiskTable table = partitions::read_primary_gpt(disk);
    for (Slot s : {Slot::a, Slot::b}) {
        const partitions::FoundPartition esp = partitions::get_role(table, partitions::Role::Esp, slot_letter(s), disk.string());
        LoadOption o;
        o.description = std::string("Cairn slot ") + static_cast<char>(slot_letter(s) - 'a' + 'A');
        o.partition = esp.entry.uuid;
        o.partition_number = esp.number;
        o.start_lba = esp.entry.offset / table.sector_size;
        o.size_lba = esp.entry.size / table.sector_size;
        o.file = loader;
        wanted_[s] = o;
    }
}

Slot UefiBootControl::booted() const {
    std::string line = read_file(cmdline_);
    size_t at = 0;
    while ((at = line.find("cairn.slot=", at)) != std::string::npos) {
        if (at == 0 || line[at - 1] == ' ') {
            size_t start = at + 11, end = line.find_first_of(" \n", start);
            if (auto s = parse_slot(line.substr(start, end == std::string::npos ? std::string::npos : end - start))) return *s;
            break;
        }
        ++at;
    }
    fail(cmdline_.string() + ": no cairn.slot=a|b on the kernel command line");
}

std::optional<uint16_t> UefiBootControl::entry(Slot slot) const {
    const Uuid& want = *wanted_.at(slot).partition;
    std::optional<uint16_t> found;
    for (const std::string& name : vars_.list(efi_global_guid)) {
        auto number = boot_variable_number(name);
        if (!number) continue;
        auto v = vars_.read(name, efi_global_guid);
        if (!v) continue;
        try {
            LoadOption o = decode_load_option(v->data, name);
            if (o.partition && *o.partition == want && (!found || *number < *found)) found = number;
        } catch (const Error&) {
            // Someone else's malformed entry: not ours, leave it alone.
        }
    }
    return found;
}

std::optional<Slot> UefiBootControl::slot_of(uint16_t number) const {
    for (Slot s : {Slot::a, Slot::b})
        if (entry(s) == number) return s;
    return std::nullopt;
}

uint16_t UefiBootControl::require_entry(Slot slot) const {
    auto n = entry(slot);
    if (!n) fail(std::string("no UEFI boot entry for slot ") + slot_letter(slot) + " (ensure_entries first)");
    return *n;
}

std::vector<uint16_t> UefiBootControl::boot_order() const {
    std::vector<uint16_t> out;
    auto v = vars_.read("BootOrder", efi_global_guid);
    if (!v) return out;
    for (size_t i = 0; i + 1 < v->data.size(); i += 2) out.push_back(static_cast<uint16_t>(v->data[i] | v->data[i + 1] << 8));
    return out;
}

void UefiBootControl::write_order(const std::vector<uint16_t>& order) {
    vars_.write("BootOrder", efi_global_guid, efi_attr_nv_bs_rt, u16_list(order));
}

void UefiBootControl::ensure_entries() {
    for (Slot s : {Slot::a, Slot::b}) {
        if (entry(s)) continue;
        std::vector<std::string> names = vars_.list(efi_global_guid);
        uint16_t n = 0;
        while (std::find(names.begin(), names.end(), boot_variable_name(n)) != names.end()) ++n;
        vars_.write(boot_variable_name(n), efi_global_guid, efi_attr_nv_bs_rt, encode_load_option(wanted_.at(s)));
    }
}

void UefiBootControl::mark_unbootable(Slot slot) {
    auto n = entry(slot);
    if (!n) return;
    auto v = vars_.read("BootNext", efi_global_guid);
    if (v && v->data.size() >= 2 && (v->data[0] | v->data[1] << 8) == *n) vars_.remove("BootNext", efi_global_guid);
    std::vector<uint16_t> order = boot_order();
    auto end = std::remove(order.begin(), order.end(), *n);
    if (end == order.end()) return;
    order.erase(end, order.end());
    write_order(order);
}

void UefiBootControl::set_next(Slot slot) {
    vars_.write("BootNext", efi_global_guid, efi_attr_nv_bs_rt, u16_list({require_entry(slot)}));
}

std::optional<Slot> UefiBootControl::next() const {
    auto v = vars_.read("BootNext", efi_global_guid);
    if (!v || v->data.size() < 2) return std::nullopt;
    return slot_of(static_cast<uint16_t>(v->data[0] | v->data[1] << 8));
}

void UefiBootControl::set_primary(Slot slot) {
    const uint16_t first = require_entry(slot);
    const auto second = entry(other(slot));
    std::vector<uint16_t> old = boot_order(), order = {first};
    if (second && std::find(old.begin(), old.end(), *second) != old.end()) order.push_back(*second);
    for (uint16_t n : old)
        if (n != first && (!second || n != *second)) order.push_back(n);
    if (order != old) write_order(order);
}

std::vector<Slot> UefiBootControl::order() const {
    std::vector<Slot> out;
    auto a = entry(Slot::a), b = entry(Slot::b);
    for (uint16_t n : boot_order()) {
        if (a && n == *a) out.push_back(Slot::a);
        else if (b && n == *b) out.push_back(Slot::b);
    }
    return out;
}

}  // namespace cairn::updater
