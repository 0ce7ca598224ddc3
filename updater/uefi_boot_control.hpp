// Boot control through UEFI variables: a Boot#### entry per slot (its ESP's \EFI\BOOT\BOOTX64.EFI),
// BootOrder for the committed order, BootNext for a one-time trial boot.
//
// Every change is one variable write, which the firmware makes atomically. The updater orders
// them so that a power cut between any two leaves a good slot first in BootOrder: entries are
// created before they are referenced; a slot leaves BootOrder before it is written; BootNext names
// it only after it was written and read back; BootOrder puts it first only after it booted healthy.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include "common/efivars.hpp"
#include "updater/boot_control.hpp"
#include "updater/load_option.hpp"

namespace cairn::updater {

class UefiBootControl : public BootControl {
public:
    // `disk`: the whole disk whose GPT holds esp_a and esp_b (a block device or an image file).
    UefiBootControl(EfiVars& vars, const std::filesystem::path& disk, std::filesystem::path cmdline = "/proc/cmdline");
    Slot booted() const override;
    void ensure_entries() override;
    void mark_unbootable(Slot) override;
    void set_next(Slot) override;
    std::optional<Slot> next() const override;
    void set_primary(Slot) override;
    std::vector<Slot> order() const override;

    // The Boot#### number of a slot's entry, if there is one.
    std::optional<uint16_t> entry(Slot slot) const;
    std::vector<uint16_t> boot_order() const;  // BootOrder as it is

private:
    std::optional<Slot> slot_of(uint16_t number) const;
    void write_order(const std::vector<uint16_t>& order);
    uint16_t require_entry(Slot slot) const;

    EfiVars& vars_;
    std::filesystem::path cmdline_;
    std::map<Slot, LoadOption> wanted_;  // the entry each slot should have (from the GPT)
};

}  // namespace cairn::updater
