#include "updater/boot_control.hpp"

namespace cairn::updater {

char slot_letter(Slot s) { return s == Slot::a ? 'a' : 'b'; }
Slot other(Slot s) { return s == Slot::a ? Slot::b : Slot::a; }
std::optional<Slot> parse_slot(std::string_view s) {
    if (s == "a" || s == "A") return Slot::a;
    if (s == "b" || s == "B") return Slot::b;
    return std::nullopt;
}

}  // namespace cairn::updater
