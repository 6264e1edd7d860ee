// Parity of the decode + crop path with what torchvision's ImageFolder pipeline computes (Debian's PIL and
// torchvision through tests/parity/crop_parity.py) on real photographs: PIL's decode (libjpeg-turbo on both
// sides: expected bit-exact, tolerance 0 levels), F.resized_crop with BICUBIC for fixed boxes and sizes, and
// Resize(256) + CenterCrop(224) (tolerance: max |diff| <= 1 level, mean <= 0.1; measured: exact). The
// DCT-scaled, region-decoded path is reported as PSNR against PIL and must stay above 30 dB.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "data/crop.h"
#include "data/decode.h"
#include "tests/data/test_images.h"

using namespace sslight;
using namespace sslight::data;

namespace {

struct Reference {
    std::string dir;
    std::vector<std::string> lines;
};

// Runs crop_parity.py once; empty when the photos or torchvision are missing (the reason is printed).
const Reference& reference() {
    static const Reference ref = [] {
        Reference r;
        const test::TestImages& images = test::test_images();
        if (!images.photos) {
            MESSAGE("SKIP (parity on real photographs): ", images.photo_status);
            return r;
        }
        if (std::system(SSLIGHT_PARITY_PYTHON " -c 'import torchvision, PIL' >/dev/null 2>&1") != 0) {
            MESSAGE("SKIP: crop parity needs python3-torchvision and python3-pil (scripts/install_deps.sh --test)");
            return r;
        }
        r.dir = images.dir + "/parity_ref";
        const std::string cmd = std::string(SSLIGHT_PARITY_PYTHON) +
                                " " SSLIGHT_SOURCE_DIR "/tests/parity/crop_parity.py '" + images.dir + "' '" + r.dir +
                                "'";
        REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: ", cmd);
        std::ifstream cases(r.dir + "/cases.txt");
        for (std::string line; std::getline(cases, line);)
            if (!line.empty()) r.lines.push_back(line);
        REQUIRE(!r.lines.empty());
        return r;
    }();
    return ref;
}

std::vector<uint8_t> read_raw(const std::string& path, size_t n) {
    std::vector<uint8_t> v(n);
    std::ifstream f(path, std::ios::binary);
    f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n));
    REQUIRE_MESSAGE(f.gcount() == static_cast<std::streamsize>(n), "short reference file ", path);
    return v;
}

double mean_abs_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += std::abs(int(a[i]) - int(b[i]));
    return s / double(a.size());
}

// The photo decoded as torchvision's loader sees it: full scale, EXIF orientation not applied.
Image decode_like_pil(const std::string& rel) {
    Decoder dec(DecodeOptions{DecodeLimits{}, false, 0, true});
    const std::vector<uint8_t> b = read_file_bytes(test::test_images().dir + "/" + rel);
    return dec.decode(b.data(), b.size());
}

}  // namespace

TEST_SUITE("parity") {
    TEST_CASE("parity: decoding equals PIL's Image.open(...).convert('RGB')") {
        int cases = 0;
        for (const std::string& line : reference().lines) {
            std::istringstream in(line);
            std::string kind, rel, file;
            int w = 0, h = 0;
            in >> kind >> rel >> w >> h >> file;
            if (kind != "decode") continue;
            CAPTURE(rel);
            const Image img = decode_like_pil(rel);
            REQUIRE(img.width == w);
            REQUIRE(img.height == h);
            const std::vector<uint8_t> ref = read_raw(reference().dir + "/" + file, img.rgb.size());
            CHECK(test::max_abs_diff(img.rgb.data(), ref.data(), ref.size()) == 0);
            ++cases;
        }
        if (!reference().lines.empty()) CHECK(cases >= 15);
    }

    TEST_CASE("parity: RandomResizedCrop resampling equals torchvision's F.resized_crop (BICUBIC)") {
        int cases = 0;
        for (const std::string& line : reference().lines) {
            std::istringstream in(line);
            std::string kind, rel, file;
            int top = 0, left = 0, h = 0, w = 0, size = 0;
            in >> kind >> rel >> top >> left >> h >> w >> size >> file;
            if (kind != "crop") continue;
            CAPTURE(line);
            const Image img = decode_like_pil(rel);
            std::vector<uint8_t> ours(size_t(size) * size * 3);
            resize_bicubic_aa(img.rgb.data(), img.width, img.height, img.stride(), CropBox{left, top, w, h},
                              ours.data(), size, size);
            const std::vector<uint8_t> ref = read_raw(reference().dir + "/" + file, ours.size());
            const int full_max = test::max_abs_diff(ours.data(), ref.data(), ref.size());
            CHECK(full_max <= 1);
            CHECK(mean_abs_diff(ours, ref) <= 0.1);
            // The loader's path: DCT-scaled (and, for small boxes, region) decode, then the same resampling.
            Decoder fast(DecodeOptions{DecodeLimits{}, false, 0.5, true});
            const std::vector<uint8_t> b = read_file_bytes(test::test_images().dir + "/" + rel);
            const CropSource src = fast.decode_for_crop(b.data(), b.size(), CropBox{left, top, w, h}, size);
            resize_bicubic_aa(src.image.rgb.data(), src.image.width, src.image.height, src.image.stride(), src.boxes[0],
                              ours.data(), size, size);
            const double db = test::psnr(ours.data(), ref.data(), ref.size());
            MESSAGE(rel, " box ", w, "x", h, " -> ", size, ": full decode max |diff| ", full_max, "; DCT scale ",
                    src.image.scale_num, "/", src.image.scale_den, std::string(src.region ? " (region)" : ""),
                    ", PSNR vs PIL ", db, " dB");
            CHECK(db > 30);
            ++cases;
        }
        if (!reference().lines.empty()) CHECK(cases >= 10);
    }

    TEST_CASE("parity: evaluation transform equals Resize(256, BICUBIC) + CenterCrop(224)") {
        int cases = 0;
        for (const std::string& line : reference().lines) {
            std::istringstream in(line);
            std::string kind, rel, file;
            in >> kind >> rel >> file;
            if (kind != "eval") continue;
            CAPTURE(rel);
            const Image img = decode_like_pil(rel);
            std::vector<uint8_t> ours(224 * 224 * 3);
            resize_center_crop(img.rgb.data(), img.width, img.height, img.stride(), 256, 224, ours.data());
            const std::vector<uint8_t> ref = read_raw(reference().dir + "/" + file, ours.size());
            const int max_diff = test::max_abs_diff(ours.data(), ref.data(), ref.size());
            MESSAGE(rel, ": eval transform max |diff| ", max_diff);
            CHECK(max_diff <= 1);
            CHECK(mean_abs_diff(ours, ref) <= 0.1);
            ++cases;
        }
        if (!reference().lines.empty()) CHECK(cases >= 5);
    }

}  // TEST_SUITE
