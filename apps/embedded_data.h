// The embedded default data set of `sslight pretrain`: OpenCV's handwritten digits (Debian opencv-doc,
// examples/data/digits.png: 5000 digits of 20x20 px, 500 per class) fetched once into a cache folder with
// `apt-get download opencv-doc`, upscaled (bicubic) to size x size RGB; train = the first 400 of each class,
// val = the last 100. Offline it falls back to a generated 10-class set (oriented strokes) and says so.
// Plain uint8 pixels, no gradients.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sslight::apps {

struct ImageSet {
    int size = 0;                   // every image is size x size x 3
    std::vector<uint8_t> pixels;    // [N, size, size, 3]
    std::vector<int64_t> labels;    // [N]
    int64_t count() const { return static_cast<int64_t>(labels.size()); }
    const uint8_t* image(int64_t i) const { return pixels.data() + i * size * size * 3; }
};

struct EmbeddedData {
    ImageSet train, val;
    int num_classes = 10;
    std::string description;  // where the images came from (printed by pretrain)
    bool real = false;        // false: the generated fallback
};

// $SSLIGHT_CACHE/embedded, else $HOME/.cache/sslight/embedded.
std::string embedded_cache_dir();
// Loads (fetching on first use) or generates the set. `size` >= 20.
EmbeddedData load_embedded_data(int size = 32, bool allow_fetch = true);
// The generated fallback on its own (tests): `per_class` train and per_class / 4 val images per class.
EmbeddedData generated_digits(int size, int per_class, uint64_t seed);

}  // namespace sslight::apps
