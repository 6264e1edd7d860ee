// Inverted dropout and drop path (stochastic depth, Huang et al. 2016; timm's drop_path) with masks drawn
// from the counter-based sequence keyed (seed, stream): decision k keeps iff uniform01(word k) < 1 - p, i.e.
// (word_k >> 8) < threshold with threshold = ceil((1 - p) 2^24), so it equals a uniform fill with the same
// key compared against 1 - p. Dropout: decision k = element k; drop path: decision k = sample k along dim 0.
// y = keep ? x * scale : 0 (scale = 1 / (1 - p); a dropped NaN becomes 0). Gradient contract: the op is
// linear in x, so dx = the same function applied to dy (written, =). Nothing is saved but the key.
#pragma once
#include <cmath>

#include "kernels/common.h"
#include "kernels/philox.h"

namespace sslight::kernels {

struct DropoutParams {
    uint64_t seed = 0, stream = 0;  // the key
    int64_t n = 0;                  // elements of x
    int64_t row_size = 1;           // drop path: elements per sample (samples = n / row_size); dropout: 1
    uint32_t threshold = 0;         // keep decision k iff (word_k >> 8) < threshold; 0..2^24
    double scale = 1;               // multiplier of kept values
};

// Params for drop probability p in [0, 1]: p = 1 drops everything (scale 0).
inline DropoutParams make_dropout_params(double p, uint64_t seed, uint64_t stream, int64_t n, int64_t row_size = 1) {
    DropoutParams d;
    d.seed = seed;
    d.stream = stream;
    d.n = n;
    d.row_size = row_size;
    const double keep = 1.0 - p;
    d.threshold = static_cast<uint32_t>(std::ceil(keep * 16777216.0));
    d.scale = keep > 0 ? 1.0 / keep : 0.0;
    return d;
}

// Decision k of the keyed sequence (shared by the CPU and GPU code).
SSL_HD bool dropout_keep(const philox::U4& block_bits, uint64_t k, uint32_t threshold) {
    return (block_bits.v[k & 3] >> 8) < threshold;
}

// y = mask * scale * x, x, y: (n); y may alias x. Backward: dropout_cpu(params, dy, dx). T = float, double.
template <class T>
void dropout_cpu(const DropoutParams& p, const T* x, T* y);
// y[s, :] = keep_s * scale * x[s, :], x, y: (n / row_size, row_size); y may alias x. T = float, double.
template <class T>
void drop_path_cpu(const DropoutParams& p, const T* x, T* y);

}  // namespace sslight::kernels

SSL_GPU_DECLARE(
    // Same contracts as the CPU functions; T = float, bf16 (f32 arithmetic). Masks equal the CPU's exactly.
    template <class T> void dropout(const DropoutParams& p, const T* x, T* y, Stream s);
    template <class T> void drop_path(const DropoutParams& p, const T* x, T* y, Stream s);
)
