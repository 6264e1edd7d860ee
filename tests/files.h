// File helpers shared by the app-level tests: temp_dir makes a fresh folder under the system's temporary directory
// (removed when the test program exits), contains tests for a substring (messages, file contents).
#pragma once
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <doctest/doctest.h>

namespace sslight::test {

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// <tmp>/sslight_test_<tag>_XXXXXX, unique per call.
inline std::string temp_dir(const std::string& tag) {
    struct TempDirs {
        std::vector<std::string> dirs;
        ~TempDirs() {
            std::error_code ec;
            for (const std::string& d : dirs) std::filesystem::remove_all(d, ec);
        }
    };
    static TempDirs made;
    std::string t = (std::filesystem::temp_directory_path() / ("sslight_test_" + tag + "_XXXXXX")).string();
    REQUIRE(mkdtemp(t.data()) != nullptr);
    made.dirs.push_back(t);
    return t;
}

}  // namespace sslight::test
