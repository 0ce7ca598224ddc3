#include "updater/boot_control.hpp"

#include <algorithm>

namespace cairn::updater {

char slot_letter(Slot s) { return s == Slot::a ? 'a' : 'b'; }
Slot other(Slot s) { return s == Slot::a ? Slot::b : Slot::a; }
std::optional<Slot> parse_slot(std::string_view s) {
    if (s == "a" || s == "A") return Slot::a;
    if (s == "b" || s == "B") return Slot::b;
    return std::nullopt;
}

std::string_view fallback_text(Fallback f) {
    switch (f) {
        case Fallback::to_other: return "the other slot boots next";
        case Fallback::already_other: return "the firmware falls back to the other slot";
        case Fallback::not_again: return "the other slot failed too since the last good boot; not switching again";
        case Fallback::no_other: return "the other slot is not bootable (out of BootOrder); no fallback";
    }
    return "?";
}

Fallback fall_back(BootControl& boot, Slot failed, bool fell_back_before) {
    const Slot good = other(failed);
    std::vector<Slot> order = boot.order();
    const bool fresh = order.empty();
    if (!fresh && order.front() != failed) return Fallback::already_other;
    if (!fresh && std::find(order.begin(), order.end(), good) == order.end()) return Fallback::no_other;
    if (fell_back_before) return Fallback::not_again;
    if (fresh) boot.ensure_entries();
    boot.set_primary(good);
    return Fallback::to_other;
}

}  // namespace cairn::updater
