// Boot control: which slot boots next, behind one interface (the UEFI one, and a fake for tests).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::updater {

enum class Slot { a, b };
char slot_letter(Slot);
Slot other(Slot);
std::optional<Slot> parse_slot(std::string_view);

class BootControl;

// What fall_back() did after the booted slot failed before its root could be used.
enum class Fallback {
    to_other,        // the other slot is now first in BootOrder: the next boot tries it
    already_other,   // the failed slot was a trial (BootNext) or not first: the firmware goes to the other slot anyway
    not_again,       // a fallback already happened since the last good boot: both slots failed, nothing is switched
    no_other,        // the other slot is not bootable (out of BootOrder: being written, or marked bad)
};
std::string_view fallback_text(Fallback f);

// cairn-init calls this when slot `failed` cannot boot (its root does not verify, a partition is
// missing or damaged): on a blank NVRAM (a fresh image, both slots verified copies) it creates
// the entries and puts the other slot first; when `failed` is first in BootOrder and the other
// slot is in BootOrder too (committed, then damaged), it puts the other slot first. It never
// switches twice without a good boot in between (`fell_back_before`), so two bad slots cannot
// alternate for ever, and never to a slot outside BootOrder (one being written is out of it).
Fallback fall_back(BootControl& boot, Slot failed, bool fell_back_before);

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
