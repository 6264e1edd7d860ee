// File helpers shared by the app-level tests: temp_dir makes a fresh folder under the system's temporary directory
// (removed when the test program exits), contains tests for a substring (messages, file contents), write_jpeg_folder
// makes a small ImageFolder of real JPEGs.
#pragma once
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include <doctest/doctest.h>
#include <turbojpeg.h>

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

// root/c<i % 3>/<i>.jpg for i < images: textured JPEGs of odd sizes (37 + 5i x 29 + 3(i % 4)) over 3 classes.
inline std::string write_jpeg_folder(const std::string& root, int images) {
    for (int i = 0; i < images; ++i) {
        const std::string cls = root + "/c" + std::to_string(i % 3);
        std::filesystem::create_directories(cls);
        const int w = 37 + 5 * i, h = 29 + 3 * (i % 4);
        std::vector<uint8_t> px(size_t(w) * h * 3);
        for (size_t j = 0; j < px.size(); ++j) px[j] = uint8_t(40 + (j * (7 + i)) % 190);
        tjhandle tj = tjInitCompress();
        unsigned char* buf = nullptr;
        unsigned long size = 0;
        REQUIRE(tjCompress2(tj, px.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 90, 0) == 0);
        std::ofstream(cls + "/" + std::to_string(i) + ".jpg", std::ios::binary)
            .write(reinterpret_cast<char*>(buf), long(size));
        tjFree(buf);
        tjDestroy(tj);
    }
    return root;
}

}  // namespace sslight::test
