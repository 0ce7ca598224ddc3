#include "common/text.hpp"

namespace cairn {

std::string trim(std::string_view s, std::string_view chars) {
    size_t begin = s.find_first_not_of(chars);
    if (begin == std::string_view::npos) return "";
    return std::string(s.substr(begin, s.find_last_not_of(chars) - begin + 1));
}

std::string trim_end(std::string_view s, std::string_view chars) {
    size_t last = s.find_last_not_of(chars);
    return last == std::string_view::npos ? "" : std::string(s.substr(0, last + 1));
}

std::string last_lines(std::string_view text, size_t count) {
    if (count == 0) return "";
    std::string trimmed = trim_end(text, " \n");
    size_t begin = trimmed.size();  // where the lines taken so far start, at the line end before them
    for (size_t found = 0; found < count; ++found) {
        size_t line_end = begin == 0 ? std::string::npos : trimmed.rfind('\n', begin - 1);
        if (line_end == std::string::npos) return trimmed;  // fewer lines than asked for
        begin = line_end;
    }
    return trimmed.substr(begin + 1);
}

}  // namespace cairn
