// A boot control with the firmware's semantics, in memory, for unit tests: reboot() boots BootNext
// once, else the first slot in the order that boots; a slot can be made to fail to boot; the Nth
// write can be made to throw (a power cut between two variable writes).
#pragma once

#include <set>
#include <stdexcept>

#include "updater/boot_control.hpp"

namespace cairn::updater {

struct PowerCut : std::runtime_error {
    PowerCut() : std::runtime_error("power cut") {}
};

class FakeBootControl : public BootControl {
public:
    explicit FakeBootControl(Slot booted = Slot::a) : booted_(booted) {}
    Slot booted() const override { return booted_; }
    void ensure_entries() override { write(); entries_ = true; }
    void mark_unbootable(Slot s) override;
    void set_next(Slot s) override;
    std::optional<Slot> next() const override { return next_; }
    void set_primary(Slot s) override;
    std::vector<Slot> order() const override { return order_; }

    // Firmware: boots BootNext once (consuming it), else the order; a slot in `broken` fails to
    // boot and the firmware goes on down the order. A fresh NVRAM boots slot a (the first ESP).
    // Returns the slot that came up.
    Slot reboot();
    std::set<Slot> broken;
    int writes = 0;
    int cut_at_write = 0;     // >0: that write throws PowerCut instead of happening
    int refuse_at_write = 0;  // >0: that write fails with an Error (a firmware refusing a variable)

private:
    void write();
    Slot booted_;
    bool entries_ = false;
    std::vector<Slot> order_;
    std::optional<Slot> next_;
};

}  // namespace cairn::updater
