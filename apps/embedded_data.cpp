// The embedded digits (apps/embedded_data.h): fetch with apt-get + dpkg-deb into the cache, decode the PNG with
// the engine's decoder, cut the 20x20 cells, resample them with PIL's bicubic (data/crop.h).
#include "apps/embedded_data.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "data/crop.h"
#include "data/decode.h"
#include "engine/check.h"
#include "engine/random.h"

namespace sslight::apps {
namespace {

bool file_exists(const std::string& p) {
    struct stat st {};
    return stat(p.c_str(), &st) == 0 && st.st_size > 0;
}

// Runs the fetch in a temporary folder of the cache; true when digits.png is in place afterwards.
bool fetch_digits(const std::string& dir, const std::string& dst) {
    const std::string cmd =
        "mkdir -p '" + dir + "' && t=$(mktemp -d '" + dir +
        "/.fetch.XXXXXX') && (cd \"$t\" && "
        "apt-get download opencv-doc >log 2>&1 && dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x "
        "./usr/share/doc/opencv-doc/examples/data/digits.png && mv usr/share/doc/opencv-doc/examples/data/digits.png "
        "'" +
        dst + "'); rm -rf \"$t\"";
    return std::system(cmd.c_str()) == 0 && file_exists(dst);
}

void add_cell(ImageSet& set, const data::Image& img, int cx, int cy, int64_t label) {
    const size_t off = set.pixels.size();
    set.pixels.resize(off + static_cast<size_t>(set.size) * set.size * 3);
    data::resize_bicubic_aa(img.rgb.data(), img.width, img.height, img.stride(), data::CropBox{cx, cy, 20, 20},
                            set.pixels.data() + off, set.size, set.size);
    set.labels.push_back(label);
}

}  // namespace

std::string embedded_cache_dir() {
    if (const char* c = std::getenv("SSLIGHT_CACHE")) return std::string(c) + "/embedded";
    const char* home = std::getenv("HOME");
    return std::string(home ? home : "/tmp") + "/.cache/sslight/embedded";
}

EmbeddedData generated_digits(int size, int per_class, uint64_t seed) {
    SSL_CHECK(size >= 8 && per_class >= 4, "generated_digits: size >= 8 and per_class >= 4, got ", size, ", ",
              per_class);
    EmbeddedData d;
    d.train.size = d.val.size = size;
    for (int split = 0; split < 2; ++split) {
        ImageSet& set = split == 0 ? d.train : d.val;
        const int n = split == 0 ? per_class : per_class / 4;
        for (int k = 0; k < 10; ++k) {
            for (int i = 0; i < n; ++i) {
                // Class k: a stroke at angle 18°·k through a jittered centre, with noise, on a dark background.
                Tensor u = rand({8}, derive(seed, {static_cast<uint64_t>(split), static_cast<uint64_t>(k),
                                                   static_cast<uint64_t>(i)}));
                const std::vector<float> r = u.to_vector<float>();
                const double a = M_PI * (k / 10.0 + (r[0] - 0.5) * 0.05);
                const double cx = size * (0.4 + 0.2 * r[1]), cy = size * (0.4 + 0.2 * r[2]);
                const double len = size * (0.25 + 0.1 * r[3]), w = 1.0 + size / 16.0 * r[4];
                for (int y = 0; y < size; ++y)
                    for (int x = 0; x < size; ++x) {
                        const double dx = x - cx, dy = y - cy;
                        const double t = dx * std::cos(a) + dy * std::sin(a),
                                     nrm = -dx * std::sin(a) + dy * std::cos(a);
                        const bool on = std::fabs(nrm) < w && std::fabs(t) < len;
                        const uint8_t v = static_cast<uint8_t>(on ? 200 + 55 * r[5] : 30 * r[6] * ((x + y) % 2));
                        for (int ch = 0; ch < 3; ++ch) set.pixels.push_back(v);
                    }
                set.labels.push_back(k);
            }
        }
    }
    d.description = str("GENERATED stand-in set (10 classes of oriented strokes, ", d.train.count(), " train / ",
                        d.val.count(), " val, ", size, "x", size, " px): the real digits could not be fetched");
    return d;
}

EmbeddedData load_embedded_data(int size, bool allow_fetch) {
    SSL_CHECK(size >= 20, "load_embedded_data: size must be >= 20, got ", size);
    const std::string dir = embedded_cache_dir(), path = dir + "/digits.png";
    if (!file_exists(path) && !(allow_fetch && fetch_digits(dir, path))) return generated_digits(size, 400, 0);
    const std::vector<uint8_t> bytes = data::read_file_bytes(path);
    data::Decoder dec;
    data::Image img = dec.decode(bytes.data(), bytes.size());
    SSL_CHECK_T(IoError, img.width == 2000 && img.height == 1000, path, ": expected a 2000x1000 image, got ", img.width,
                "x", img.height);
    EmbeddedData d;
    d.real = true;
    d.train.size = d.val.size = size;
    for (int k = 0; k < 10; ++k)
        for (int j = 0; j < 500; ++j) {
            const int row = 5 * k + j / 100, col = j % 100;
            add_cell(j < 400 ? d.train : d.val, img, col * 20, row * 20, k);
        }
    d.description = str("OpenCV handwritten digits (", path, "): ", d.train.count(), " train / ", d.val.count(),
                        " val, 10 classes, upscaled 20 -> ", size, " px");
    return d;
}

}  // namespace sslight::apps
