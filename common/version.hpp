// The project's version: CMake's project(VERSION) in the top CMakeLists.txt is the one place it is
// set; version.cpp is generated from version.cpp.in at configure time. Every program's --version and
// the manifest's cairn_version come from here.
#pragma once

namespace cairn {

// "0.1.0"
const char* version();

// `PROGRAM --version`: prints "PROGRAM VERSION" on standard output; returns 0, the exit status.
int print_version(const char* program);

}  // namespace cairn
