// Drawing the per-view photometric parameters (data/augment_params.h) from fixed words of a Philox stream:
// Bernoulli events as u < p, ColorJitter factors uniform in torchvision's ranges, the jitter order by a
// Fisher-Yates shuffle (a uniform permutation, as torch.randperm(4)). Nothing here is differentiable.
#include "data/augment_params.h"

#include <algorithm>

#include "kernels/philox.h"

namespace sslight::data {
namespace {

// Word positions in the key's stream (blocks 0..3, 4 words each).
enum Word : int {
    kFlip = 0, kJitter = 1, kPerm = 2 /* 2, 3, 4 */, kFactor = 5 /* 5..8 */, kGray = 9, kBlur = 10, kSigma = 11,
    kSolarize = 12, kWords = 16
};

double u01(uint32_t w) { return static_cast<double>(philox::uniform01(w)); }
bool event(uint32_t w, double p) { return u01(w) < p; }
float uniform(uint32_t w, double lo, double hi) { return static_cast<float>(lo + (hi - lo) * u01(w)); }

// ColorJitter's factor for strength s: uniform in [max(0, 1 - s), 1 + s]; strength 0 leaves the op off (1).
float factor(uint32_t w, double s) { return s > 0 ? uniform(w, std::max(0.0, 1.0 - s), 1.0 + s) : 1.0f; }

}  // namespace

RngKey augment_key(uint64_t seed, int64_t epoch, int64_t sample, int64_t view) {
    return derive(seed, {static_cast<uint64_t>(epoch), static_cast<uint64_t>(sample), static_cast<uint64_t>(view),
                         kAugmentStreamTag});
}

AugmentParams draw_augment(const ViewSpec& spec, RngKey key) {
    uint32_t w[kWords];
    for (int blk = 0; blk < kWords / 4; ++blk) {
        const philox::U4 b = philox::block(key.seed, key.stream, static_cast<uint64_t>(blk));
        std::copy(b.v, b.v + 4, w + 4 * blk);
    }
    AugmentParams a;
    a.flip = event(w[kFlip], spec.flip_p);
    a.jitter_apply = event(w[kJitter], spec.jitter_p);
    if (a.jitter_apply) {
        uint8_t perm[4] = {0, 1, 2, 3};
        for (int i = 3; i >= 1; --i) {  // Fisher-Yates: j uniform in [0, i] (Lemire's multiply-shift)
            const int j = static_cast<int>((static_cast<uint64_t>(w[kPerm + 3 - i]) * (i + 1)) >> 32);
            std::swap(perm[i], perm[j]);
        }
        std::copy(perm, perm + 4, a.order);
        a.brightness = factor(w[kFactor + 0], spec.brightness);
        a.contrast = factor(w[kFactor + 1], spec.contrast);
        a.saturation = factor(w[kFactor + 2], spec.saturation);
        a.hue = spec.hue > 0 ? uniform(w[kFactor + 3], -spec.hue, spec.hue) : 0.0f;
    }
    a.gray = event(w[kGray], spec.gray_p);
    a.blur = event(w[kBlur], spec.blur_p);
    if (a.blur) a.blur_sigma = uniform(w[kSigma], spec.blur_sigma_lo, spec.blur_sigma_hi);
    a.solarize = event(w[kSolarize], spec.solarize_p);
    return a;
}

std::vector<AugmentParams> draw_views(const ViewRecipe& r, uint64_t seed, int64_t epoch, int64_t sample) {
    std::vector<AugmentParams> out;
    out.reserve(static_cast<size_t>(r.num_views()));
    for (int v = 0; v < r.num_views(); ++v) out.push_back(draw_augment(r.view(v), seed, epoch, sample, v));
    return out;
}

}  // namespace sslight::data
