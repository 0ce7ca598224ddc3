// VM disk formats beside disk.raw: `cairn build --format raw,qcow2,vhdx,vmdk` converts the finished
// raw disk with Debian's qemu-img (package qemu-utils) for the hypervisors that want another format:
//
//   qcow2  QEMU/KVM, Proxmox, libvirt: uncompressed (the VM writes to it; QEMU never recompresses)
//   vhdx   Hyper-V, Azure Local: dynamic (grows as written; unwritten blocks read as zeros)
//   vmdk   VMware: streamOptimized, the compressed VMDK that OVF/OVA import (vSphere "Deploy OVF
//          Template", Workstation/Fusion "Import", ovftool) takes; vSphere cannot attach a
//          monolithicSparse file either without converting it (vmkfstools -i)
//
// Reproducible: qemu-img writes random identities into VHDX (the two headers' FileWriteGuid and
// DataWriteGuid, their sequence numbers, the virtual disk id in the Page 83 metadata item, and a
// stale log entry with its log GUID) and VMDK (the descriptor's CID). Cairn normalises them: the
// log (empty: LogGuid is zero) is zeroed, the sequence numbers start at 1, and each identity is
// derived from the sha256 of the file with those fields zeroed. The same disk.raw and the same
// qemu-img version give the same bytes. qcow2 output has no such fields.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::imager {

enum class DiskFormat { Raw, Qcow2, Vhdx, Vmdk };

inline constexpr DiskFormat all_disk_formats[] = {DiskFormat::Raw, DiskFormat::Qcow2, DiskFormat::Vhdx, DiskFormat::Vmdk};

// "raw", "qcow2", "vhdx", "vmdk": the name on the command line, the file extension and qemu-img's -O.
std::string_view disk_format_name(DiskFormat format);

// A list as `--format` takes it: names separated by commas ("qcow2,vhdx"), case-insensitive.
// The result always holds Raw (every other format is made from disk.raw), each format once
// (duplicates are allowed and count once), in the order of all_disk_formats. Throws Error naming
// `where`, the bad value and the valid names on an unknown or empty name.
std::vector<DiskFormat> parse_disk_formats(std::string_view list, const std::string& where);

// True when `formats` holds a format that needs qemu-img.
bool needs_qemu_img(const std::vector<DiskFormat>& formats);

// Throws Error when qemu-img is not installed and `formats` needs it (before a long build).
void require_disk_format_tools(const std::vector<DiskFormat>& formats);

// Converts `disk_raw` into each non-raw format of `formats`, as work_dir/<stem>.<format> (disk.qcow2,
// ...): converted, normalised (see above), checked with `qemu-img check`, its virtual size
// checked against the raw file's. `note` (optional) hears one line per file. Returns the
// manifest entries, one per converted file in the order of all_disk_formats:
//   {"file": "disk.qcow2", "format": "qcow2", "size": <bytes>, "virtual_size": <bytes>, "sha256": ...}
// (vhdx and vmdk also "subformat"). On an error every file this call wrote is removed and Error
// thrown, naming the file and qemu-img's message.
nlohmann::json write_disk_formats(const std::filesystem::path& disk_raw, const std::vector<DiskFormat>& formats,
                                  const std::filesystem::path& work_dir,
                                  const std::function<void(const std::string&)>& note = {});

}  // namespace cairn::imager
