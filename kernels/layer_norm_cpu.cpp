// CPU implementation (and reference) of layer normalisation over the last dim, forward and backward, with
// double accumulation. dw / db are summed over rows in row order by one thread per column block
// (deterministic) and added (+=) to the caller's buffers.
#include <cmath>

#include "kernels/layer_norm.h"

namespace sslight::kernels {

template <class T>
void layer_norm_fwd_cpu(const LayerNormParams& p, const T* x, const T* w, const T* b, T* y, T* mean, T* rstd) {
    const int64_t C = p.C;
#pragma omp parallel for if (p.rows * C > (1 << 15))
    for (int64_t r = 0; r < p.rows; ++r) {
        const T* xr = x + r * C;
        double m = 0;
        for (int64_t c = 0; c < C; ++c) m += static_cast<double>(xr[c]);
        m /= static_cast<double>(C);
        double var = 0;
        for (int64_t c = 0; c < C; ++c) var += (static_cast<double>(xr[c]) - m) * (static_cast<double>(xr[c]) - m);
        const double rs = 1.0 / std::sqrt(var / static_cast<double>(C) + p.eps);
        mean[r] = static_cast<T>(m);
        rstd[r] = static_cast<T>(rs);
        for (int64_t c = 0; c < C; ++c) {
            double v = (static_cast<double>(xr[c]) - m) * rs;
            if (w) v *= static_cast<double>(w[c]);
            if (b) v += static_cast<double>(b[c]);
            y[r * C + c] = static_cast<T>(v);
        }
    }
}

namespace {

template <class T>
void layer_norm_dx_cpu(const LayerNormParams& p, const T* x, const T* w, const T* mean, const T* rstd, const T* dy,
                       T* dx) {
    const int64_t C = p.C;
#pragma omp parallel for if (p.rows * C > (1 << 15))
    for (int64_t r = 0; r < p.rows; ++r) {
        const double m = static_cast<double>(mean[r]), rs = static_cast<double>(rstd[r]);
        double a = 0, bsum = 0;  // sum dxhat, sum dxhat * xhat
        for (int64_t c = 0; c < C; ++c) {
            const double g = static_cast<double>(dy[r * C + c]) * (w ? static_cast<double>(w[c]) : 1.0);
            a += g;
            bsum += g * (static_cast<double>(x[r * C + c]) - m) * rs;
        }
        a /= static_cast<double>(C);
        bsum /= static_cast<double>(C);
        for (int64_t c = 0; c < C; ++c) {
            const double g = static_cast<double>(dy[r * C + c]) * (w ? static_cast<double>(w[c]) : 1.0);
            const double xh = (static_cast<double>(x[r * C + c]) - m) * rs;
            dx[r * C + c] = static_cast<T>(rs * (g - a - xh * bsum));
        }
    }
}

template <class T>
void layer_norm_dparams_cpu(const LayerNormParams& p, const T* x, const T* mean, const T* rstd, const T* dy, T* dw,
                            T* db) {
    constexpr int64_t kChunk = 64;
    const int64_t C = p.C, chunks = (C + kChunk - 1) / kChunk;
#pragma omp parallel for if (p.rows * C > (1 << 15))
    for (int64_t ch = 0; ch < chunks; ++ch) {
        const int64_t c0 = ch * kChunk, n = C - c0 < kChunk ? C - c0 : kChunk;
        double aw[kChunk] = {0}, ab[kChunk] = {0};
        for (int64_t r = 0; r < p.rows; ++r) {
            const double m = static_cast<double>(mean[r]), rs = static_cast<double>(rstd[r]);
            for (int64_t c = 0; c < n; ++c) {
                const double g = static_cast<double>(dy[r * C + c0 + c]);
                aw[c] += g * (static_cast<double>(x[r * C + c0 + c]) - m) * rs;
                ab[c] += g;
            }
        }
        for (int64_t c = 0; c < n; ++c) {
            if (dw) dw[c0 + c] = static_cast<T>(static_cast<double>(dw[c0 + c]) + aw[c]);
            if (db) db[c0 + c] = static_cast<T>(static_cast<double>(db[c0 + c]) + ab[c]);
        }
    }
}

}  // namespace

template <class T>
void layer_norm_bwd_cpu(const LayerNormParams& p, const T* x, const T* w, const T* mean, const T* rstd, const T* dy,
                        T* dx, T* dw, T* db) {
    if (dx) layer_norm_dx_cpu(p, x, w, mean, rstd, dy, dx);
    if (dw || db) layer_norm_dparams_cpu(p, x, mean, rstd, dy, dw, db);
}

template void layer_norm_fwd_cpu<float>(const LayerNormParams&, const float*, const float*, const float*, float*,
                                        float*, float*);
template void layer_norm_fwd_cpu<double>(const LayerNormParams&, const double*, const double*, const double*,
                                         double*, double*, double*);
template void layer_norm_bwd_cpu<float>(const LayerNormParams&, const float*, const float*, const float*,
                                        const float*, const float*, float*, float*, float*);
template void layer_norm_bwd_cpu<double>(const LayerNormParams&, const double*, const double*, const double*,
                                         const double*, const double*, double*, double*, double*);

}  // namespace sslight::kernels
