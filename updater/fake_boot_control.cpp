#include "updater/fake_boot_control.hpp"

#include <algorithm>
#include <string>

#include "common/error.hpp"

namespace cairn::updater {

void FakeBootControl::write() {
    ++writes;
    if (cut_at_write && writes == cut_at_write) throw PowerCut();
    if (refuse_at_write && writes == refuse_at_write) fail("boot variable write " + std::to_string(writes) + ": the firmware refused it");
}

void FakeBootControl::mark_unbootable(Slot s) {
    if (next_ == s) {
        write();
        next_.reset();
    }
    auto it = std::find(order_.begin(), order_.end(), s);
    if (it == order_.end()) return;
    write();
    order_.erase(it);
}

void FakeBootControl::set_next(Slot s) {
    write();
    next_ = s;
}

void FakeBootControl::set_primary(Slot s) {
    std::vector<Slot> order = {s};
    if (std::find(order_.begin(), order_.end(), other(s)) != order_.end()) order.push_back(other(s));
    if (order == order_) return;
    write();
    order_ = order;
}

Slot FakeBootControl::reboot() {
    std::vector<Slot> tries;
    if (next_) tries.push_back(*next_);
    next_.reset();
    for (Slot s : order_) tries.push_back(s);
    if (order_.empty()) tries.push_back(Slot::a);  // removable path of the first ESP
    for (Slot s : tries)
        if (!broken.count(s)) return booted_ = s;
    throw std::runtime_error("nothing boots");
}

}  // namespace cairn::updater
