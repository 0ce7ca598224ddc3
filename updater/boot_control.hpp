// Boot control: which slot boots next, behind one interface (the UEFI one, and a fake for tests).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace cairn::updater {

enum class Slot { a, b };
char slot_letter(Slot);
Slot other(Slot);
std::optional<Slot> parse_slot(std::string_view);

class BootControl {
public:
    virtual ~BootControl() = default;
    virtual Slot booted() const = 0;
    virtual void ensure_entries() = 0;
    virtual void mark_unbootable(Slot) = 0;
    virtual void set_next(Slot) = 0;
    virtual std::optional<Slot> next() const = 0;
    virtual void set_primary(Slot) = 0;
    virtual std::vector<Slot> order() const = 0;
};

}  // namespace cairn::updater
