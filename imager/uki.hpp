// Unified kernel images (systemd-stub + kernel + initrd + cmdline in one PE file) and Secure Boot signing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "imager/authenticode.hpp"  // sign_pe, which signs what assemble_uki makes

namespace cairn::imager {

struct UkiParts {
    std::filesystem::path stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    std::filesystem::path kernel, initrd;
    std::string cmdline, os_release, uname;  // uname may be empty (then no .uname section)
};

// Adds .osrel, .cmdline, (.uname), .initrd and .linux (in this file order, as ukify does: the kernel last) to a copy
// of the stub with objcopy, at page-aligned addresses after the stub's last section. systemd-stub finds the
// sections by name and measures them in its own fixed order, so their position does not matter to it.
// The cmdline must not be empty: objcopy drops empty sections, and without a .cmdline systemd-stub takes the
// command line from the firmware's load options, even under Secure Boot. An empty os_release gives no .osrel.
// Reproducible: the COFF TimeDateStamp is the stub's (objcopy -p), never the wall clock.
// Throws Error naming the file at fault; no partial output file.
void assemble_uki(const UkiParts& parts, const std::filesystem::path& out);

// The PE section names and sizes (VirtualSize), in section table order (for tests and `cairn inspect`).
std::vector<std::pair<std::string, uint64_t>> pe_sections(const std::filesystem::path& pe);

// The content of each section named in `names` that the PE image has, as the loaded image holds it
// (what systemd-stub measures and hands on): VirtualSize bytes from the section's raw data, zeros
// past SizeOfRawData. A name the image lacks is left out; one it has twice is an Error.
std::map<std::string, std::string> pe_section_contents(const std::filesystem::path& pe, const std::vector<std::string>& names);

}  // namespace cairn::imager
