// CPU random fills (and reference for the GPU ones): OpenMP over Philox blocks, each block's four values
// written where they fall inside [offset, offset + n). f32/bf16 use the shared float functors of
// kernels/random.h; f64 maps the same float base draws (u, z, erfinv(t)) affinely in double.
#include <type_traits>

#include "kernels/random.h"

namespace sslight::kernels {
namespace {

// Results stored as T (bf16 rounds to nearest even, like the GPU's __float2bfloat16).
template <class T>
struct Store {
    template <class V>
    static T from(V v) {
        return static_cast<T>(v);
    }
};
template <>
struct Store<bf16> {
    static bf16 from(float v) { return bf16(v); }
};

// f64 versions: the affine part in double on the same float base draws.
struct UniformD {
    double lo, range;
    void operator()(const philox::U4& b, double v[4]) const {
        for (int k = 0; k < 4; ++k) v[k] = lo + range * static_cast<double>(philox::uniform01(b.v[k]));
    }
};
struct NormalD {
    double mean, std;
    void operator()(const philox::U4& b, double v[4]) const {
        const philox::SinCos z0 = philox::box_muller(b.v[0], b.v[1]), z1 = philox::box_muller(b.v[2], b.v[3]);
        const double z[4] = {z0.c, z0.s, z1.c, z1.s};
        for (int k = 0; k < 4; ++k) v[k] = mean + std * z[k];
    }
};
struct TruncNormalD {
    float tlo, trange;
    double mean, scale, lower, upper;
    void operator()(const philox::U4& b, double v[4]) const {
        for (int k = 0; k < 4; ++k) {
            const double x = mean + scale * static_cast<double>(trunc_std_value(b.v[k], tlo, trange));
            v[k] = x < lower ? lower : (x > upper ? upper : x);
        }
    }
};

// Runs `f` (block -> 4 values of type V) over every Philox block that overlaps [offset, offset + n).
template <class T, class V, class F>
void fill_blocks(const RandomParams& p, T* out, const F& f) {
    if (p.n <= 0) return;
    const uint64_t begin = p.offset, end = p.offset + static_cast<uint64_t>(p.n);
    const uint64_t first = begin >> 2;
    const int64_t nblocks = static_cast<int64_t>(((end - 1) >> 2) - first + 1);
#pragma omp parallel for if (p.n > (1 << 14))
    for (int64_t b = 0; b < nblocks; ++b) {
        const uint64_t blk = first + static_cast<uint64_t>(b);
        V v[4];
        f(philox::block(p.seed, p.stream, blk), v);
        for (int lane = 0; lane < 4; ++lane) {
            const uint64_t g = blk * 4 + static_cast<uint64_t>(lane);
            if (g >= begin && g < end) out[g - begin] = Store<T>::from(v[lane]);
        }
    }
}

}  // namespace

template <class T>
void uniform_fill_cpu(const RandomParams& p, T* out) {
    if constexpr (std::is_same_v<T, double>)
        fill_blocks<double, double>(p, out, UniformD{p.lo, p.hi - p.lo});
    else
        fill_blocks<T, float>(p, out, uniform_coeffs(p));
}

template <class T>
void normal_fill_cpu(const RandomParams& p, T* out) {
    if constexpr (std::is_same_v<T, double>)
        fill_blocks<double, double>(p, out, NormalD{p.mean, p.std});
    else
        fill_blocks<T, float>(p, out, normal_coeffs(p));
}

template <class T>
void trunc_normal_fill_cpu(const RandomParams& p, T* out) {
    const TruncNormalF f = trunc_normal_coeffs(p);
    if constexpr (std::is_same_v<T, double>)
        fill_blocks<double, double>(p, out, TruncNormalD{f.tlo, f.trange, p.mean, p.std * 1.4142135623730951,
                                                         p.lower, p.upper});
    else
        fill_blocks<T, float>(p, out, f);
}

template void uniform_fill_cpu<float>(const RandomParams&, float*);
template void uniform_fill_cpu<double>(const RandomParams&, double*);
template void uniform_fill_cpu<bf16>(const RandomParams&, bf16*);
template void normal_fill_cpu<float>(const RandomParams&, float*);
template void normal_fill_cpu<double>(const RandomParams&, double*);
template void normal_fill_cpu<bf16>(const RandomParams&, bf16*);
template void trunc_normal_fill_cpu<float>(const RandomParams&, float*);
template void trunc_normal_fill_cpu<double>(const RandomParams&, double*);
template void trunc_normal_fill_cpu<bf16>(const RandomParams&, bf16*);

}  // namespace sslight::kernels
