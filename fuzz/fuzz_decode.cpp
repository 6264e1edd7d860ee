// libFuzzer target: data/decode.h + data/crop.h on arbitrary bytes, the loader's per-sample path: probe,
// one RandomResizedCrop box (torchvision's scale/ratio defaults, keyed by the input size), decode at the scale
// and region that crop needs, antialiased bicubic resize to the output size. Every input either gives the
// output pixels or throws IoError (DecodeError). Pixel cap lowered to 2^22 so one input stays fast.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/crop.h"
#include "data/decode.h"
#include "engine/check.h"

using namespace sslight::data;

static void one_crop(Decoder& dec, const uint8_t* data, size_t size) {
    const ImageInfo info = dec.probe(data, size);
    Rng rng = Rng::for_view(0x5eed, 0, static_cast<int64_t>(size), 0);
    const CropBox box = random_resized_crop_box(info.width, info.height, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0, rng);
    const int out = 8 + static_cast<int>(size % 7) * 16;  // 8 .. 104: up- and downscaling both happen
    const CropSource src = dec.decode_for_crop(data, size, box, out);
    if (src.boxes.size() != 1) __builtin_trap();
    std::vector<uint8_t> dst(static_cast<size_t>(out) * out * 3);
    resize_bicubic_aa(src.image.rgb.data(), src.image.width, src.image.height, src.image.stride(), src.boxes[0],
                      dst.data(), out, out);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Decoder full = [] {
        DecodeOptions o;
        o.limits.max_pixels = int64_t(1) << 22;
        return Decoder(o);
    }();
    static Decoder region = [] {
        DecodeOptions o;
        o.limits.max_pixels = int64_t(1) << 22;
        o.region_max_fraction = 1.0;
        o.fractional_scales = true;
        return Decoder(o);
    }();
    try {
        one_crop((size & 1) ? region : full, data, size);
    } catch (const sslight::IoError&) {
    }
    return 0;
}
