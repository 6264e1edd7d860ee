// Naive per-op reference of the photometric augmentation (kernels/augment.h), written from torchvision's
// functional_tensor code: whole-image passes over planar channels in Real (double in the tests, float as
// the bench's naive baseline): hflip, _blend-based brightness / contrast (mean of rgb_to_grayscale) /
// saturation, _rgb2hsv + _hsv2rgb hue, grayscale, gaussian_blur as a full 2-D kernel on a reflect-padded
// image, solarize, normalize. Shared by tests/test_augment.cpp and bench/bench_augment.cpp. No gradients.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/augment.h"

namespace sslight::test {

template <class Real>
struct RefImage {
    int H = 0, W = 0;
    std::vector<Real> c[3];  // planar R, G, B, each H x W
};

template <class Real>
Real ref_clamp01(Real x) {
    return std::min(Real(1), std::max(Real(0), x));
}
template <class Real>
Real ref_gray(Real r, Real g, Real b) {
    return Real(0.2989) * r + Real(0.587) * g + Real(0.114) * b;
}

template <class Real>
RefImage<Real> ref_from_u8(const uint8_t* in, int H, int W) {
    RefImage<Real> im;
    im.H = H, im.W = W;
    for (int c = 0; c < 3; ++c) im.c[c].resize(static_cast<size_t>(H) * W);
    for (int i = 0; i < H * W; ++i)
        for (int c = 0; c < 3; ++c) im.c[c][i] = static_cast<Real>(in[i * 3 + c]) / Real(255);
    return im;
}

template <class Real>
void ref_hflip(RefImage<Real>& im) {
    for (int c = 0; c < 3; ++c)
        for (int y = 0; y < im.H; ++y) std::reverse(im.c[c].begin() + y * im.W, im.c[c].begin() + (y + 1) * im.W);
}

// torchvision's _blend(img, other, f) with other per pixel (other_planar) or a constant.
template <class Real>
void ref_blend(RefImage<Real>& im, const std::vector<Real>* other, Real constant, Real f) {
    for (int c = 0; c < 3; ++c)
        for (size_t i = 0; i < im.c[c].size(); ++i)
            im.c[c][i] = ref_clamp01(f * im.c[c][i] + (Real(1) - f) * (other ? (*other)[i] : constant));
}

template <class Real>
std::vector<Real> ref_gray_plane(const RefImage<Real>& im) {
    std::vector<Real> l(im.c[0].size());
    for (size_t i = 0; i < l.size(); ++i) l[i] = ref_gray(im.c[0][i], im.c[1][i], im.c[2][i]);
    return l;
}

template <class Real>
void ref_brightness(RefImage<Real>& im, Real f) {
    ref_blend(im, static_cast<const std::vector<Real>*>(nullptr), Real(0), f);
}
template <class Real>
void ref_contrast(RefImage<Real>& im, Real f) {
    const std::vector<Real> l = ref_gray_plane(im);
    double sum = 0;
    for (Real v : l) sum += v;
    ref_blend(im, static_cast<const std::vector<Real>*>(nullptr), static_cast<Real>(sum / l.size()), f);
}
template <class Real>
void ref_saturation(RefImage<Real>& im, Real f) {
    const std::vector<Real> l = ref_gray_plane(im);
    ref_blend(im, &l, Real(0), f);
}

// torchvision's _rgb2hsv, (h + hue) % 1.0, _hsv2rgb for one pixel.
template <class Real>
void ref_hue_pixel(Real& r, Real& g, Real& b, Real hue) {
    const Real maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
    const bool eqc = maxc == minc;
    const Real cr = maxc - minc;
    const Real s = cr / (eqc ? Real(1) : maxc);
    const Real crd = eqc ? Real(1) : cr;
    const Real rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
    const Real hr = maxc == r ? bc - gc : Real(0);
    const Real hg = (maxc == g && maxc != r) ? Real(2) + rc - bc : Real(0);
    const Real hb = (maxc != g && maxc != r) ? Real(4) + gc - rc : Real(0);
    Real h = std::fmod((hr + hg + hb) / Real(6) + Real(1), Real(1));
    h = h + hue;
    h = h - std::floor(h);  // Python's remainder by 1
    const Real i_f = std::floor(h * Real(6));
    const Real f = h * Real(6) - i_f;
    const int i = static_cast<int>(i_f) % 6;
    const Real v = maxc;
    const Real p = ref_clamp01(v * (Real(1) - s)), q = ref_clamp01(v * (Real(1) - s * f)),
               t = ref_clamp01(v * (Real(1) - s * (Real(1) - f)));
    const Real a1[6] = {v, q, p, p, t, v}, a2[6] = {t, v, v, q, p, p}, a3[6] = {p, p, t, v, v, q};
    r = a1[i], g = a2[i], b = a3[i];
}
template <class Real>
void ref_hue(RefImage<Real>& im, Real hue) {
    for (size_t i = 0; i < im.c[0].size(); ++i) ref_hue_pixel(im.c[0][i], im.c[1][i], im.c[2][i], hue);
}

template <class Real>
void ref_grayscale(RefImage<Real>& im) {
    const std::vector<Real> l = ref_gray_plane(im);
    for (int c = 0; c < 3; ++c) im.c[c] = l;
}

// Reflect (edge not repeated), applied until the index lands inside [0, n).
inline int ref_reflect(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

// gaussian_blur with kernel size 2 ceil(3 sigma) + 1 (radius capped as the kernel's) as one 2-D kernel.
template <class Real>
void ref_blur(RefImage<Real>& im, Real sigma) {
    const int R = std::min(static_cast<int>(std::ceil(3 * static_cast<double>(sigma))), kernels::kAugmentMaxBlurRadius);
    std::vector<Real> k1(2 * R + 1);
    Real sum = 0;
    for (int k = -R; k <= R; ++k) sum += k1[k + R] = std::exp(Real(-0.5) * (Real(k) / sigma) * (Real(k) / sigma));
    for (Real& v : k1) v /= sum;
    for (int c = 0; c < 3; ++c) {
        std::vector<Real> out(im.c[c].size());
        for (int y = 0; y < im.H; ++y)
            for (int x = 0; x < im.W; ++x) {
                Real acc = 0;
                for (int i = -R; i <= R; ++i)
                    for (int j = -R; j <= R; ++j)
                        acc += k1[i + R] * k1[j + R] *
                               im.c[c][ref_reflect(y + i, im.H) * im.W + ref_reflect(x + j, im.W)];
                out[y * im.W + x] = acc;
            }
        im.c[c] = out;
    }
}

template <class Real>
void ref_solarize(RefImage<Real>& im) {
    for (int c = 0; c < 3; ++c)
        for (Real& v : im.c[c]) v = v >= Real(128.0 / 255.0) ? Real(1) - v : v;
}

// The whole chain for one image, normalised into out (H, W, 3).
template <class Real, class T>
void ref_augment_image(const kernels::AugmentBatch& p, const uint8_t* in, const kernels::AugmentParams& a, T* out) {
    RefImage<Real> im = ref_from_u8<Real>(in, p.H, p.W);
    if (a.flip) ref_hflip(im);
    if (a.jitter_apply)
        for (int k = 0; k < 4; ++k) {
            const int op = a.order[k];
            if (op == kernels::kOpBrightness && a.brightness != 1.f) ref_brightness(im, Real(a.brightness));
            if (op == kernels::kOpContrast && a.contrast != 1.f) ref_contrast(im, Real(a.contrast));
            if (op == kernels::kOpSaturation && a.saturation != 1.f) ref_saturation(im, Real(a.saturation));
            if (op == kernels::kOpHue && a.hue != 0.f) ref_hue(im, Real(a.hue));
        }
    if (a.gray) ref_grayscale(im);
    if (a.blur && a.blur_sigma > 0) ref_blur(im, Real(a.blur_sigma));
    if (a.solarize) ref_solarize(im);
    for (int i = 0; i < p.H * p.W; ++i)
        for (int c = 0; c < 3; ++c) out[i * 3 + c] = static_cast<T>((im.c[c][i] - Real(p.mean[c])) / Real(p.std[c]));
}

template <class Real, class T>
void ref_augment(const kernels::AugmentBatch& p, const uint8_t* in, const kernels::AugmentParams* aug, T* out) {
    const size_t img = static_cast<size_t>(p.H) * p.W * 3;
    for (int i = 0; i < p.B; ++i) ref_augment_image<Real>(p, in + i * img, aug[i], out + i * img);
}

}  // namespace sslight::test
