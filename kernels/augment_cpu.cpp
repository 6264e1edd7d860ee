// CPU photometric augmentation (the reference for kernels/augment.cu): OpenMP over images; per image, planar
// float rows (R, G, B planes of H x W) so that every op is a tight loop over a row held in L1. Passes: load +
// flip + jitter ops before contrast (+ grey sum for the contrast mean, accumulated in double); the remaining
// ops + grayscale; separable blur (horizontal into a scratch plane, vertical per output row); solarize +
// normalise + interleave to NHWC. No gradients.
//
// GCC may speculate floating-point operations here (no FP exception flag is ever read; values are unchanged):
// that lets the vectoriser if-convert the selects of the hue loop.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <omp.h>

#include <algorithm>
#include <vector>

#include "engine/check.h"
#include "kernels/augment.h"

namespace sslight::kernels {
namespace {

// Per-thread planes, reused across calls (no allocation per image once warm).
struct Scratch {
    std::vector<float> planes, tmp, row, pad;
    void reserve(int H, int W) {
        const size_t n = static_cast<size_t>(H) * W * 3;
        if (planes.size() < n) planes.resize(n), tmp.resize(n);
        if (row.size() < static_cast<size_t>(W) * 3) row.resize(static_cast<size_t>(W) * 3);
        if (pad.size() < static_cast<size_t>(W) + 2 * kAugmentMaxBlurRadius)
            pad.resize(static_cast<size_t>(W) + 2 * kAugmentMaxBlurRadius);
    }
};

template <class T>
inline T store(float v) {
    return static_cast<T>(v);
}
template <>
inline bf16 store<bf16>(float v) {
    return bf16(v);
}

// Jitter ops over a row of n pixels (planar r, g, b; distinct rows). Plain loops on local factors, written so
// that the compiler vectorises them.
void brightness_row(float* __restrict r, float* __restrict g, float* __restrict b, int n, float f) {
    for (int x = 0; x < n; ++x) {
        r[x] = aug_clamp01(f * r[x]);
        g[x] = aug_clamp01(f * g[x]);
        b[x] = aug_clamp01(f * b[x]);
    }
}
void contrast_row(float* __restrict r, float* __restrict g, float* __restrict b, int n, float f, float mean) {
    for (int x = 0; x < n; ++x) {
        r[x] = aug_blend(r[x], mean, f);
        g[x] = aug_blend(g[x], mean, f);
        b[x] = aug_blend(b[x], mean, f);
    }
}
void saturation_row(float* __restrict r, float* __restrict g, float* __restrict b, int n, float f) {
    for (int x = 0; x < n; ++x) {
        const float l = aug_gray(r[x], g[x], b[x]);
        r[x] = aug_blend(r[x], l, f);
        g[x] = aug_blend(g[x], l, f);
        b[x] = aug_blend(b[x], l, f);
    }
}
void hue_row(float* __restrict r, float* __restrict g, float* __restrict b, int n, float hue) {
#pragma omp simd
    for (int x = 0; x < n; ++x) {
        float rx = r[x], gx = g[x], bx = b[x];
        aug_hue(rx, gx, bx, hue);
        r[x] = rx, g[x] = gx, b[x] = bx;
    }
}

void jitter_row(int op, float* r, float* g, float* b, int n, const AugmentParams& a, float mean) {
    switch (op) {
        case kOpBrightness: return brightness_row(r, g, b, n, a.brightness);
        case kOpContrast: return contrast_row(r, g, b, n, a.contrast, mean);
        case kOpSaturation: return saturation_row(r, g, b, n, a.saturation);
        default: return hue_row(r, g, b, n, a.hue);
    }
}

void jitter_row_range(float* r, float* g, float* b, int n, const AugmentParams& a, float mean, int k0, int k1) {
    for (int k = k0; k < k1; ++k)
        if (aug_op_active(a.order[k], a)) jitter_row(a.order[k], r, g, b, n, a, mean);
}

void gray_row(float* r, float* g, float* b, int n) {
    for (int x = 0; x < n; ++x) r[x] = g[x] = b[x] = aug_gray(r[x], g[x], b[x]);
}

// Solarize + normalise + interleave one row of planes r, g, b (the same plane three times for a grey image).
template <class T, bool kSolarize>
void finish_row_impl(const float* r, const float* g, const float* b, int W, const AugmentBatch& p, T* out) {
    const float m0 = p.mean[0], m1 = p.mean[1], m2 = p.mean[2];
    const float i0 = static_cast<float>(1.0 / p.std[0]), i1 = static_cast<float>(1.0 / p.std[1]),
                i2 = static_cast<float>(1.0 / p.std[2]);
    for (int x = 0; x < W; ++x) {
        const float vr = kSolarize ? aug_solarize(r[x]) : r[x];
        const float vg = kSolarize ? aug_solarize(g[x]) : g[x];
        const float vb = kSolarize ? aug_solarize(b[x]) : b[x];
        out[x * 3 + 0] = store<T>((vr - m0) * i0);
        out[x * 3 + 1] = store<T>((vg - m1) * i1);
        out[x * 3 + 2] = store<T>((vb - m2) * i2);
    }
}
template <class T>
void finish_row(const float* r, const float* g, const float* b, int W, const AugmentBatch& p, bool solarize, T* out) {
    if (solarize)
        finish_row_impl<T, true>(r, g, b, W, p, out);
    else
        finish_row_impl<T, false>(r, g, b, W, p, out);
}

// Horizontal blur of one plane row into dst: the row is copied with its reflected borders into pad
// (W + 2R), then each tap is a vectorisable pass over the row (same summation order as the GPU kernel).
void blur_row_h(const float* src, float* __restrict pad, float* __restrict dst, int W, int R, const float* w) {
    for (int x = 0; x < W; ++x) pad[x + R] = src[x];
    for (int k = 1; k <= R; ++k) {  // the reflected borders only: aug_reflect costs an integer division
        pad[R - k] = src[aug_reflect(-k, W)];
        pad[W - 1 + R + k] = src[aug_reflect(W - 1 + k, W)];
    }
    const float* c = pad + R;
    const float w0 = w[0];
    for (int x = 0; x < W; ++x) dst[x] = w0 * c[x];
    for (int k = 1; k <= R; ++k) {
        const float wk = w[k];
        for (int x = 0; x < W; ++x) dst[x] += wk * (c[x - k] + c[x + k]);
    }
}

// Vertical blur: output row y of plane `src` (H x W) into dst (W).
void blur_row_v(const float* src, float* dst, int H, int W, int y, int R, const float* w) {
    const float* c = src + static_cast<size_t>(y) * W;
    for (int x = 0; x < W; ++x) dst[x] = w[0] * c[x];
    for (int k = 1; k <= R; ++k) {
        const float* up = src + static_cast<size_t>(aug_reflect(y - k, H)) * W;
        const float* dn = src + static_cast<size_t>(aug_reflect(y + k, H)) * W;
        const float wk = w[k];
        for (int x = 0; x < W; ++x) dst[x] += wk * (up[x] + dn[x]);
    }
}

// u8 -> [0, 1]: x / 255 correctly rounded, as on the GPU and in torchvision.
struct UnitTable {
    float v[256];
    UnitTable() {
        for (int i = 0; i < 256; ++i) v[i] = static_cast<float>(i) / 255.f;
    }
    float operator[](int i) const { return v[i]; }
};
const UnitTable kUnit;

// Load + flip + jitter ops [0, cpos) for every row; returns the mean grey level when contrast needs it.
float first_pass(const uint8_t* in, int H, int W, const AugmentParams& a, int cpos, float* P) {
    const size_t HW = static_cast<size_t>(H) * W;
    double sum = 0;
    for (int y = 0; y < H; ++y) {
        float *r = P + static_cast<size_t>(y) * W, *g = r + HW, *b = g + HW;
        const uint8_t* src = in + static_cast<size_t>(y) * W * 3;
        if (a.flip) {
            for (int x = 0; x < W; ++x) {
                const uint8_t* px = src + (W - 1 - x) * 3;
                r[x] = kUnit[px[0]], g[x] = kUnit[px[1]], b[x] = kUnit[px[2]];
            }
        } else {
            for (int x = 0; x < W; ++x) {
                const uint8_t* px = src + x * 3;
                r[x] = kUnit[px[0]], g[x] = kUnit[px[1]], b[x] = kUnit[px[2]];
            }
        }
        if (!a.jitter_apply) continue;
        jitter_row_range(r, g, b, W, a, 0.f, 0, cpos);
        if (cpos < 4) {
            float row_sum = 0.f;
            for (int x = 0; x < W; ++x) row_sum += aug_gray(r[x], g[x], b[x]);
            sum += row_sum;
        }
    }
    return static_cast<float>(sum / static_cast<double>(HW));
}

template <class T>
void augment_image(const AugmentBatch& p, const uint8_t* in, const AugmentParams& a, T* out, Scratch& s) {
    const int H = p.H, W = p.W;
    const size_t HW = static_cast<size_t>(H) * W;
    s.reserve(H, W);
    float* P = s.planes.data();
    const int cpos = aug_contrast_pos(a);
    const float mean = first_pass(in, H, W, a, cpos, P);
    const int R = aug_blur_radius(a);
    const int nplanes = a.gray ? 1 : 3;  // a grey image is blurred and finished from one plane
    const bool sol = a.solarize != 0;
    float w[kAugmentMaxBlurRadius + 1];
    if (R > 0) aug_gauss_weights(a.blur_sigma, R, w);
    for (int y = 0; y < H; ++y) {
        float *r = P + static_cast<size_t>(y) * W, *g = r + HW, *b = g + HW;
        if (a.jitter_apply && cpos < 4) jitter_row_range(r, g, b, W, a, mean, cpos, 4);
        if (a.gray) gray_row(r, g, b, W);
        if (R == 0) {
            finish_row(r, a.gray ? r : g, a.gray ? r : b, W, p, sol, out + static_cast<size_t>(y) * W * 3);
        } else {
            for (int c = 0; c < nplanes; ++c)
                blur_row_h(r + c * HW, s.pad.data(), s.tmp.data() + c * HW + static_cast<size_t>(y) * W, W, R, w);
        }
    }
    if (R == 0) return;
    float* row = s.row.data();
    for (int y = 0; y < H; ++y) {
        for (int c = 0; c < nplanes; ++c) blur_row_v(s.tmp.data() + c * HW, row + c * W, H, W, y, R, w);
        const size_t off = nplanes == 3 ? static_cast<size_t>(W) : 0;
        finish_row(row, row + off, row + 2 * off, W, p, sol, out + static_cast<size_t>(y) * W * 3);
    }
}

}  // namespace

template <class T>
void augment_fwd_cpu(const AugmentBatch& p, const uint8_t* in, const AugmentParams* aug, T* out) {
    SSL_CHECK_SHAPE(p.B >= 0 && p.H >= 1 && p.W >= 1, "augment: need B >= 0 and H, W >= 1, got B ", p.B, ", H ",
                    p.H, ", W ", p.W);
    const size_t img = static_cast<size_t>(p.H) * p.W * 3;
    const int threads = p.threads > 0 ? p.threads : omp_get_max_threads();
#pragma omp parallel num_threads(threads) if (p.B > 1 && threads > 1)
    {
        static thread_local Scratch scratch;
#pragma omp for schedule(dynamic)
        for (int i = 0; i < p.B; ++i) augment_image(p, in + i * img, aug[i], out + i * img, scratch);
    }
}

template void augment_fwd_cpu<float>(const AugmentBatch&, const uint8_t*, const AugmentParams*, float*);
template void augment_fwd_cpu<bf16>(const AugmentBatch&, const uint8_t*, const AugmentParams*, bf16*);

}  // namespace sslight::kernels
