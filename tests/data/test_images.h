// The real test images of the data loader (tests/data/fetch_test_images.sh: opencv-doc photographs and
// generated JPEG/PNG variants) for the tests and bench/bench_decode.cpp: where they live, fetching them once
// per process, and small helpers (binary PPM reading, PSNR). Header-only; no gradients involved.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace sslight::test {

struct TestImages {
    std::string dir;  // holds photos/, variants/, STATUS
    bool photos = false, variants = false;
    std::string photo_status, variant_status;  // the script's lines ("photos: ok" / "photos: SKIP why")
    std::string photo(const std::string& name) const { return dir + "/photos/" + name; }
    std::string variant(const std::string& name) const { return dir + "/variants/" + name; }
};

// $SSLIGHT_TEST_IMAGES, else $HOME/.cache/sslight/test_images (kept across builds and fresh checkouts, so
// the ~96 MB opencv-doc download happens once per machine), else test_images/ beside the executable.
inline std::string test_images_dir() {
    if (const char* env = std::getenv("SSLIGHT_TEST_IMAGES")) return env;
    if (const char* home = std::getenv("HOME")) {
        const std::string dir = std::string(home) + "/.cache/sslight/test_images";
        if (std::system(("mkdir -p '" + dir + "'").c_str()) == 0) return dir;
    }
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    std::string exe = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("./x");
    return exe.substr(0, exe.rfind('/')) + "/test_images";
}

// Runs the fetch script once per process (it skips what exists) and reads its STATUS.
inline const TestImages& test_images() {
    static const TestImages images = [] {
        TestImages t;
        t.dir = test_images_dir();
        const std::string cmd = std::string("bash '") + SSLIGHT_SOURCE_DIR + "/tests/data/fetch_test_images.sh' '" +
                                t.dir + "' >'" + t.dir + ".log' 2>&1";
        if (std::system(cmd.c_str()) != 0) std::printf("fetch_test_images.sh failed: see %s.log\n", t.dir.c_str());
        std::ifstream status(t.dir + "/STATUS");
        std::getline(status, t.photo_status);
        std::getline(status, t.variant_status);
        t.photos = t.photo_status == "photos: ok";
        t.variants = t.variant_status.rfind("variants: ok", 0) == 0;
        return t;
    }();
    return images;
}

struct Rgb8 {
    int width = 0, height = 0;
    std::vector<uint8_t> px;  // HWC RGB
};

// A binary PPM (P6, maxval 255) or PGM (P5, expanded to RGB); width 0 when unreadable.
inline Rgb8 read_pnm(const std::string& path) {
    Rgb8 img;
    std::ifstream f(path, std::ios::binary);
    std::string magic;
    int maxval = 0;
    f >> magic >> img.width >> img.height >> maxval;
    f.get();
    if (!f || (magic != "P6" && magic != "P5") || maxval != 255) return Rgb8{};
    const size_t n = static_cast<size_t>(img.width) * img.height;
    std::vector<uint8_t> raw(magic == "P6" ? 3 * n : n);
    f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
    if (magic == "P6") {
        img.px = std::move(raw);
    } else {
        img.px.resize(3 * n);
        for (size_t i = 0; i < n; ++i) img.px[3 * i] = img.px[3 * i + 1] = img.px[3 * i + 2] = raw[i];
    }
    return img;
}

// PSNR in dB of two equally sized 8-bit buffers (infinity when identical).
inline double psnr(const uint8_t* a, const uint8_t* b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; ++i) se += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    return se == 0 ? INFINITY : 10.0 * std::log10(255.0 * 255.0 * n / se);
}

inline int max_abs_diff(const uint8_t* a, const uint8_t* b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(int(a[i]) - int(b[i])));
    return m;
}

}  // namespace sslight::test
