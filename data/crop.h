// Crop geometry and resampling of the multi-crop views (SPEC.md §1-2): torchvision's RandomResizedCrop box
// sampling (10 attempts, then the centre-crop fallback) drawn from a counter-based Philox stream, PIL's
// antialiased bicubic resize (Image.resize(..., BICUBIC): separable a = -0.5 kernel with support scaled by
// the downscale factor, 22-bit fixed-point taps, an 8-bit intermediate between the horizontal and the
// vertical pass), horizontal flip and the evaluation transform (resize short side, centre crop).
// Images are HWC RGB uint8 with a row stride in bytes. Nothing here is differentiable.
#pragma once
#include <cstdint>

#include "engine/random.h"

namespace sslight::data {

// An integer pixel rectangle: columns [x, x + w), rows [y, y + h).
struct CropBox {
    int x = 0, y = 0, w = 0, h = 0;
    bool operator==(const CropBox& o) const { return x == o.x && y == o.y && w == o.w && h == o.h; }
};

// A fractional rectangle [x0, x1) x [y0, y1) in pixel units (a CropBox mapped into a DCT-scaled image).
struct BoxF {
    double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Deterministic random numbers for one view: the Philox4x32-10 stream of an RngKey, consumed word by word
// (block b gives words 4b .. 4b+3). The same key always yields the same sequence, on any thread; for_view()
// keys the stream by (seed, epoch, sample, view) so that a sample's crops do not depend on which worker
// decodes it or in which order.
class Rng {
public:
    explicit Rng(RngKey key) : key_(key) {}
    static Rng for_view(uint64_t seed, int64_t epoch, int64_t sample, int64_t view);

    uint32_t next_u32();
    uint64_t next_u64();
    double uniform();                         // [0, 1) with 53 random bits
    double uniform(double lo, double hi);     // lo + (hi - lo) * uniform()
    int64_t randint(int64_t lo, int64_t hi);  // [lo, hi) like torch.randint(lo, hi), unbiased; needs lo < hi
    bool bernoulli(double p) { return uniform() < p; }

private:
    RngKey key_;
    uint64_t block_ = 0;
    uint32_t words_[4] = {0, 0, 0, 0};
    int lane_ = 4;
};

// torchvision.transforms.RandomResizedCrop.get_params line by line for a width x height image: up to 10
// attempts of target_area = H*W*U(scale_lo, scale_hi), aspect = exp(U(log ratio_lo, log ratio_hi)),
// w = round(sqrt(target*aspect)), h = round(sqrt(target/aspect)) (round half to even, as Python), accepted
// when 0 < w <= W and 0 < h <= H, then top = randint(0, H-h+1), left = randint(0, W-w+1); otherwise the
// centre crop clamped to the ratio range. *fallback (optional) tells whether the fallback was taken.
CropBox random_resized_crop_box(int width, int height, double scale_lo, double scale_hi, double ratio_lo,
                                double ratio_hi, Rng& rng, bool* fallback = nullptr);

// torchvision's F.resized_crop on a PIL image (crop, then Image.resize(BICUBIC)): the box of src (sw x sh,
// `stride` bytes per row) resampled to dw x dh into dst (dw * 3 bytes per row). Filter taps never leave the
// box, exactly as when PIL resizes the cropped image. Bit-exact with Pillow's 8-bit path.
void resize_bicubic_aa(const uint8_t* src, int sw, int sh, int stride, CropBox box, uint8_t* dst, int dw, int dh);

// The same for a fractional box (a crop of a DCT-scaled decode): the sample window is [x0, x1) x [y0, y1)
// (Pillow's `box=` argument, relative to the enclosing pixels) and the taps stay inside
// [floor(x0), ceil(x1)) x [floor(y0), ceil(y1)) clipped to the image. For an integer box it equals the above.
void resize_bicubic_aa(const uint8_t* src, int sw, int sh, int stride, BoxF box, uint8_t* dst, int dw, int dh);

// torchvision's Resize(resize_short) (long side int(resize_short * long / short), bicubic, antialiased) then
// CenterCrop(crop) (offset int(round((size - crop) / 2.0)), half to even) into dst (crop x crop x 3). Only the
// output window is computed; the values equal resizing the whole image and cropping. Needs crop <= resize_short.
void resize_center_crop(const uint8_t* src, int sw, int sh, int stride, int resize_short, int crop, uint8_t* dst);

// The (width, height) torchvision's Resize(resize_short) gives a sw x sh image.
void resized_short_side_size(int sw, int sh, int resize_short, int* out_w, int* out_h);

// Mirrors each row in place (torchvision's hflip): w x h RGB pixels, `stride` bytes per row.
void hflip(uint8_t* img, int w, int h, int stride);

}  // namespace sslight::data
