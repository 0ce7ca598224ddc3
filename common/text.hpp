// Small string helpers shared by every part.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cairn {

inline constexpr std::string_view blank_chars = " \t\r\n";

// s without the leading and trailing characters found in `chars` (by default blanks and line ends).
std::string trim(std::string_view s, std::string_view chars = blank_chars);
// s without the trailing ones only: a line read from a file or a program, without its line end.
std::string trim_end(std::string_view s, std::string_view chars = blank_chars);

// The last `count` lines of text, trailing blank lines and spaces dropped; the line ends between them kept.
std::string last_lines(std::string_view text, size_t count);

}  // namespace cairn
