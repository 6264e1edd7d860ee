// Photometric augmentation of multi-crop views (SPEC §2), in torchvision's tensor semantics on [0, 1] floats:
// out = normalize(solarize(blur(gray(jitter(flip(x / 255)))))) per image, jitter = brightness, contrast,
// saturation and hue in a per-view order. u8 NHWC crops in, f32/bf16 NHWC activations out. The per-pixel
// formulas below are shared by the CPU reference and the CUDA kernels. Data augmentation: no gradients.
#pragma once
#include <cmath>

#include "kernels/common.h"
#include "kernels/philox.h"  // SSL_HD

namespace sslight::kernels {

// One view's photometric parameters (drawn by data/augment_params.h). POD, 32 bytes, copied to the GPU as is.
// The jitter factors are used only when jitter_apply is set; an identity factor (1, or hue 0) skips its op.
struct AugmentParams {
    uint8_t flip = 0, jitter_apply = 0, gray = 0, blur = 0, solarize = 0;
    uint8_t reserved[3] = {0, 0, 0};  // explicit padding: equal parameters compare equal byte for byte
    float brightness = 1, contrast = 1, saturation = 1, hue = 0;  // hue in [-0.5, 0.5]
    uint8_t order[4] = {0, 1, 2, 3};  // jitter ops in application order: 0 bright, 1 contrast, 2 sat, 3 hue
    float blur_sigma = 0;             // used when blur is set
};
static_assert(sizeof(AugmentParams) == 32, "AugmentParams is copied to the GPU byte for byte");

enum AugmentOp : int { kOpBrightness = 0, kOpContrast = 1, kOpSaturation = 2, kOpHue = 3 };

// A batch of B same-size crops (H x W x 3) and the normalisation (ImageNet mean and std by default).
struct AugmentBatch {
    int B = 0, H = 0, W = 0;
    float mean[3] = {0.485f, 0.456f, 0.406f};
    float std[3] = {0.229f, 0.224f, 0.225f};
    int threads = 0;  // CPU path: OpenMP threads over images (0 = OpenMP's default, 1 = the calling thread)
};

// Blur: a separable Gaussian of radius ceil(3 sigma) (torchvision's gaussian_blur with kernel size
// 2 ceil(3 sigma) + 1), reflect padding, radius capped at kAugmentMaxBlurRadius (sigma <= 8/3; the recipes
// validate their sigma range against it). DINO's own GaussianBlur calls PIL's ImageFilter.GaussianBlur(radius =
// sigma), which approximates the same Gaussian with box filters and edge extension: a documented difference.
// Solarize: x >= 128/255 -> 1 - x (torchvision's tensor solarize at 128/255; PIL's ImageOps.solarize at 128).
constexpr int kAugmentMaxBlurRadius = 8;
constexpr float kAugmentMaxBlurSigma = kAugmentMaxBlurRadius / 3.0f;
constexpr float kSolarizeThreshold = 128.0f / 255.0f;
// torchvision's rgb_to_grayscale coefficients on tensors (PIL's convert("L") uses 0.299).
constexpr float kGrayR = 0.2989f, kGrayG = 0.587f, kGrayB = 0.114f;

// ---- per-pixel formulas (host, emulator and GPU) --------------------------------------------------------
SSL_HD float aug_clamp01(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
SSL_HD float aug_gray(float r, float g, float b) { return kGrayR * r + kGrayG * g + kGrayB * b; }
// torchvision's _blend: clamp(f * x + (1 - f) * y, 0, 1).
SSL_HD float aug_blend(float x, float y, float f) { return aug_clamp01(f * x + (1.f - f) * y); }

// torchvision's adjust_hue on floats: _rgb2hsv, h = (h + hue) mod 1, _hsv2rgb, with the same values. Written
// with selects of constants and of finished values (no arithmetic under a condition) so that the CPU loop
// over a row vectorises: e = 1 exactly when max == min, where cr = 0 and torchvision divides by 1.
SSL_HD void aug_hue(float& r, float& g, float& b, float hue) {
    const float maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
    const float minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    const float e = maxc == minc ? 1.f : 0.f;
    const float cr = maxc - minc;
    const float s = cr / (maxc + e);
    const float crd = cr + e;
    const float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
    const float hr = bc - gc, hg = 2.f + rc - bc, hb = 4.f + gc - rc;
    float h = maxc == r ? hr : (maxc == g ? hg : hb);
    h = h / 6.f + 1.f;                // in [5/6, 11/6]: fmod(., 1) is one exact subtraction
    h = h - (h >= 1.f ? 1.f : 0.f);
    h = h + hue;                      // Python's remainder mod 1 on [-0.5, 1.5)
    h = (h + (h < 0.f ? 1.f : 0.f)) - (h >= 1.f ? 1.f : 0.f);
    const float h6 = h * 6.f;
    int i = static_cast<int>(h6);  // floor: h6 >= 0
    const float f = h6 - static_cast<float>(i);
    i = i >= 6 ? i - 6 : i;
    const float v = maxc;
    const float p = aug_clamp01(v * (1.f - s)), q = aug_clamp01(v * (1.f - s * f)),
                t = aug_clamp01(v * (1.f - s * (1.f - f)));
    float ro = p, go = p, bo = p;  // sector i: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    ro = i == 1 ? q : ro;
    ro = i == 4 ? t : ro;
    ro = (i == 0) | (i == 5) ? v : ro;
    go = i == 0 ? t : go;
    go = i == 3 ? q : go;
    go = (i == 1) | (i == 2) ? v : go;
    bo = i == 2 ? t : bo;
    bo = i == 5 ? q : bo;
    bo = (i == 3) | (i == 4) ? v : bo;
    r = ro, g = go, b = bo;
}

// Jitter op `op` on one pixel; `mean` is the contrast op's image mean.
SSL_HD void aug_jitter_op(int op, float& r, float& g, float& b, const AugmentParams& a, float mean) {
    if (op == kOpBrightness) {
        r = aug_clamp01(a.brightness * r), g = aug_clamp01(a.brightness * g), b = aug_clamp01(a.brightness * b);
    } else if (op == kOpContrast) {
        r = aug_blend(r, mean, a.contrast), g = aug_blend(g, mean, a.contrast), b = aug_blend(b, mean, a.contrast);
    } else if (op == kOpSaturation) {
        const float l = aug_gray(r, g, b);
        r = aug_blend(r, l, a.saturation), g = aug_blend(g, l, a.saturation), b = aug_blend(b, l, a.saturation);
    } else {
        aug_hue(r, g, b, a.hue);
    }
}

// Whether jitter op `op` changes anything (identity factors are skipped).
SSL_HD bool aug_op_active(int op, const AugmentParams& a) {
    if (!a.jitter_apply) return false;
    switch (op) {
        case kOpBrightness: return a.brightness != 1.f;
        case kOpContrast: return a.contrast != 1.f;
        case kOpSaturation: return a.saturation != 1.f;
        default: return a.hue != 0.f;
    }
}

// Position of contrast in the order when it needs the image mean, else 4.
SSL_HD int aug_contrast_pos(const AugmentParams& a) {
    if (!aug_op_active(kOpContrast, a)) return 4;
    for (int k = 0; k < 4; ++k)
        if (a.order[k] == kOpContrast) return k;
    return 4;
}

// Jitter ops order[k0 .. k1) on one pixel.
SSL_HD void aug_jitter_range(float& r, float& g, float& b, const AugmentParams& a, float mean, int k0, int k1) {
    for (int k = k0; k < k1; ++k)
        if (aug_op_active(a.order[k], a)) aug_jitter_op(a.order[k], r, g, b, a, mean);
}

SSL_HD float aug_solarize(float x) { return x >= kSolarizeThreshold ? 1.f - x : x; }

// Blur radius for sigma (0: no blur).
SSL_HD int aug_blur_radius(const AugmentParams& a) {
    if (!a.blur || !(a.blur_sigma > 0.f)) return 0;
    const int r = static_cast<int>(ceilf(3.f * a.blur_sigma));
    return r < kAugmentMaxBlurRadius ? r : kAugmentMaxBlurRadius;
}

// Normalised Gaussian taps w[0 .. R] (w[k] for offsets +-k): exp(-(k / sigma)^2 / 2) over their sum taken
// from -R to R, as torchvision's _get_gaussian_kernel1d.
SSL_HD void aug_gauss_weights(float sigma, int R, float* w) {
    for (int k = 0; k <= R; ++k) {
        const float x = static_cast<float>(k) / sigma;
        w[k] = expf(-0.5f * (x * x));
    }
    float sum = 0.f;
    for (int k = -R; k <= R; ++k) sum += w[k < 0 ? -k : k];
    for (int k = 0; k <= R; ++k) w[k] = w[k] / sum;
}

// torchvision's "reflect" padding (edge not repeated), extended periodically for offsets beyond the image.
SSL_HD int aug_reflect(int i, int n) {
    if (n == 1) return 0;
    const int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

// in: (B, H, W, 3) u8; aug: (B); out: (B, H, W, 3). T = float, bf16 (computed in f32, rounded once).
// Throws on a bad batch shape (B < 0, H or W < 1).
template <class T>
void augment_fwd_cpu(const AugmentBatch& p, const uint8_t* in, const AugmentParams* aug, T* out);

}  // namespace sslight::kernels

SSL_GPU_DECLARE(
    // in: (B, H, W, 3) u8; aug: (B); mean_ws: (B) f32 scratch (contrast means); out: (B, H, W, 3).
    // T = float, bf16. Two launches on `s`: per-image contrast means, then one block per 32x32 tile.
    template <class T> void augment_fwd(const AugmentBatch& p, const uint8_t* in, const AugmentParams* aug,
                                        float* mean_ws, T* out, Stream s);
)
