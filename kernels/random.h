// Counter-based random fills: uniform [lo, hi), normal (Box-Muller) and truncated normal (inverse CDF,
// x = mean + std * sqrt(2) * erfinv(t) with t uniform in [erf(alpha / sqrt 2), erf(beta / sqrt 2)), clamped
// to [lower, upper]; as torch.nn.init.trunc_normal_). Element i of a fill is element g = offset + i of the
// sequence keyed (seed, stream): lane g % 4 of Philox block g / 4, so any partition of the work (CPU
// threads, GPU threads, partial fills) gives the same values. f32/bf16 values are computed in float with
// the formulas below on every device (bit-identical CPU, emulator and GPU); f64 (CPU only) finishes the
// affine map in double (f32 rounding of lo + (hi - lo) u may reach hi). No gradients (in-place initialisers).
#pragma once
#include <cmath>

#include "kernels/common.h"
#include "kernels/philox.h"

namespace sslight::kernels {

struct RandomParams {
    uint64_t seed = 0, stream = 0;     // the key: Philox key words and counter words 2-3
    uint64_t offset = 0;               // sequence index of out[0]
    int64_t n = 0;                     // elements to write
    double lo = 0, hi = 1;             // uniform
    double mean = 0, std = 1;          // normal and truncated normal
    double lower = -2, upper = 2;      // truncated normal: absolute bounds, lower < upper
};

// Per-block value functors: four values from one Philox block (shared by the CPU and GPU code).
struct UniformF {
    float lo, range;
    SSL_HD void operator()(const philox::U4& b, float v[4]) const {
        for (int k = 0; k < 4; ++k) v[k] = philox::fadd(lo, philox::fmul(range, philox::uniform01(b.v[k])));
    }
};
struct NormalF {
    float mean, std;
    SSL_HD void operator()(const philox::U4& b, float v[4]) const {
        const philox::SinCos z0 = philox::box_muller(b.v[0], b.v[1]), z1 = philox::box_muller(b.v[2], b.v[3]);
        const float z[4] = {z0.c, z0.s, z1.c, z1.s};
        for (int k = 0; k < 4; ++k) v[k] = philox::fadd(mean, philox::fmul(std, z[k]));
    }
};
// The standard part of the truncated normal: erfinv(t) for t uniform in [tlo, tlo + trange).
SSL_HD float trunc_std_value(uint32_t word, float tlo, float trange) {
    return philox::erfinv_f(philox::fadd(tlo, philox::fmul(trange, philox::uniform01(word))));
}
struct TruncNormalF {
    float tlo, trange, mean, scale, lower, upper;  // scale = std * sqrt(2)
    SSL_HD void operator()(const philox::U4& b, float v[4]) const {
        for (int k = 0; k < 4; ++k) {
            const float x = philox::fadd(mean, philox::fmul(scale, trunc_std_value(b.v[k], tlo, trange)));
            v[k] = x < lower ? lower : (x > upper ? upper : x);
        }
    }
};

// Host-side coefficients from the params (double maths once, then rounded to float).
inline UniformF uniform_coeffs(const RandomParams& p) {
    return {static_cast<float>(p.lo), static_cast<float>(p.hi - p.lo)};
}
inline NormalF normal_coeffs(const RandomParams& p) { return {static_cast<float>(p.mean), static_cast<float>(p.std)}; }
// erf(alpha / sqrt 2) and erf(beta / sqrt 2): the uniform range whose erfinv lands in [lower, upper].
inline void trunc_normal_range(const RandomParams& p, double* tlo, double* thi) {
    if (!(p.std > 0)) {  // degenerate: every value is mean, clamped
        *tlo = *thi = 0;
        return;
    }
    *tlo = std::erf((p.lower - p.mean) / (p.std * 1.4142135623730951));
    *thi = std::erf((p.upper - p.mean) / (p.std * 1.4142135623730951));
}
inline TruncNormalF trunc_normal_coeffs(const RandomParams& p) {
    double tlo, thi;
    trunc_normal_range(p, &tlo, &thi);
    return {static_cast<float>(tlo),           static_cast<float>(thi - tlo),
            static_cast<float>(p.mean),        static_cast<float>(p.std * 1.4142135623730951),
            static_cast<float>(p.lower),       static_cast<float>(p.upper)};
}

// out: (n). T = float, double, bf16.
template <class T>
void uniform_fill_cpu(const RandomParams& p, T* out);
template <class T>
void normal_fill_cpu(const RandomParams& p, T* out);
template <class T>
void trunc_normal_fill_cpu(const RandomParams& p, T* out);

}  // namespace sslight::kernels

SSL_GPU_DECLARE(
    // out: (n). T = float, bf16. Values equal the CPU's bit for bit (bf16: the float value rounded).
    template <class T> void uniform_fill(const RandomParams& p, T* out, Stream s);
    template <class T> void normal_fill(const RandomParams& p, T* out, Stream s);
    template <class T> void trunc_normal_fill(const RandomParams& p, T* out, Stream s);
)
