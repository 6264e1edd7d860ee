// CPU implementation (and reference) of the depthwise convolution, NHWC, T = float or double.
// Forward and backward-input parallelise over output rows (each row owned by one thread, channel loop
// innermost so it vectorises); backward-weight sums fixed row chunks into private partials and combines
// them in order, so dw/dbias (accumulated, +=) do not depend on the thread count.
#include <algorithm>
#include <vector>

#include "kernels/dwconv2d.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kParallelWork = int64_t(1) << 18;  // multiply-adds below which a parallel region costs more

// Weights (C, k, k) -> (k*k, C) so the channel loop reads contiguous memory.
template <class T>
std::vector<T> taps_major(const T* w, int C, int KK) {
    std::vector<T> t(static_cast<size_t>(KK) * C);
    for (int c = 0; c < C; ++c)
        for (int q = 0; q < KK; ++q) t[static_cast<size_t>(q) * C + c] = w[static_cast<size_t>(c) * KK + q];
    return t;
}

// Output columns j with 0 <= j*s - pad + v < W, as [lo, hi).
inline void valid_cols(const DwConv2dParams& p, int v, int& lo, int& hi) {
    const int s = p.stride, first = p.pad - v;  // j*s >= first
    lo = first <= 0 ? 0 : (first + s - 1) / s;
    const int last = p.W - 1 + p.pad - v;       // j*s <= last
    hi = last < 0 ? 0 : std::min(p.Wo, last / s + 1);
}

}  // namespace

template <class T>
void dwconv2d_fwd_cpu(const DwConv2dParams& p, const T* x, const T* w, const T* bias, T* y) {
    const int K = p.k, C = p.C;
    const std::vector<T> wt = taps_major(w, C, K * K);
    const int64_t rows = static_cast<int64_t>(p.B) * p.Ho;
#pragma omp parallel for schedule(static) if (rows * p.Wo * C * K * K > kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = r / p.Ho;
        const int ho = static_cast<int>(r % p.Ho);
        T* yrow = y + r * p.Wo * C;
        for (int j = 0; j < p.Wo; ++j)
            for (int c = 0; c < C; ++c) yrow[static_cast<int64_t>(j) * C + c] = bias ? bias[c] : T(0);
        for (int u = 0; u < K; ++u) {
            const int ih = ho * p.stride - p.pad + u;
            if (ih < 0 || ih >= p.H) continue;
            const T* xrow = x + (n * p.H + ih) * p.W * C;
            for (int v = 0; v < K; ++v) {
                const T* wk = wt.data() + static_cast<size_t>(u * K + v) * C;
                int lo, hi;
                valid_cols(p, v, lo, hi);
                for (int j = lo; j < hi; ++j) {
                    const T* xp = xrow + static_cast<int64_t>(j * p.stride - p.pad + v) * C;
                    T* yp = yrow + static_cast<int64_t>(j) * C;
                    for (int c = 0; c < C; ++c) yp[c] += wk[c] * xp[c];
                }
            }
        }
    }
}

template <class T>
void dwconv2d_bwd_input_cpu(const DwConv2dParams& p, const T* dy, const T* w, T* dx) {
    const int K = p.k, C = p.C;
    const std::vector<T> wt = taps_major(w, C, K * K);
    const int64_t rows = static_cast<int64_t>(p.B) * p.H;
#pragma omp parallel for schedule(static) if (rows * p.W * C * K * K > kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = r / p.H;
        const int h = static_cast<int>(r % p.H);
        T* dxrow = dx + r * p.W * C;
        std::fill(dxrow, dxrow + static_cast<int64_t>(p.W) * C, T(0));
        // Input row h receives from output row i through tap u when i*s - pad + u == h.
        for (int u = 0; u < K; ++u) {
            const int num = h + p.pad - u;
            if (num < 0 || num % p.stride != 0 || num / p.stride >= p.Ho) continue;
            const T* dyrow = dy + (n * p.Ho + num / p.stride) * p.Wo * C;
            for (int v = 0; v < K; ++v) {
                const T* wk = wt.data() + static_cast<size_t>(u * K + v) * C;
                int lo, hi;
                valid_cols(p, v, lo, hi);
                for (int j = lo; j < hi; ++j) {
                    T* dp = dxrow + static_cast<int64_t>(j * p.stride - p.pad + v) * C;
                    const T* gp = dyrow + static_cast<int64_t>(j) * C;
                    for (int c = 0; c < C; ++c) dp[c] += wk[c] * gp[c];
                }
            }
        }
    }
}

template <class T>
void dwconv2d_bwd_weight_cpu(const DwConv2dParams& p, const T* x, const T* dy, T* dw, T* dbias) {
    const int K = p.k, KK = K * K, C = p.C;
    const int64_t rows = static_cast<int64_t>(p.B) * p.Ho;
    const int64_t chunks = std::min<int64_t>(rows, 64);
    if (chunks <= 0) return;
    // partial[chunk][tap][c]; tap KK holds the bias sums.
    const size_t per_chunk = static_cast<size_t>(KK + 1) * C;
    std::vector<T> partial(per_chunk * static_cast<size_t>(chunks), T(0));
#pragma omp parallel for schedule(dynamic, 1) if (rows * p.Wo * C * K * K > kParallelWork)
    for (int64_t ch = 0; ch < chunks; ++ch) {
        T* part = partial.data() + per_chunk * static_cast<size_t>(ch);
        for (int64_t r = rows * ch / chunks; r < rows * (ch + 1) / chunks; ++r) {
            const int64_t n = r / p.Ho;
            const int ho = static_cast<int>(r % p.Ho);
            const T* dyrow = dy + r * p.Wo * C;
            T* bsum = part + static_cast<size_t>(KK) * C;
            for (int j = 0; j < p.Wo; ++j)
                for (int c = 0; c < C; ++c) bsum[c] += dyrow[static_cast<int64_t>(j) * C + c];
            for (int u = 0; u < (dw ? K : 0); ++u) {
                const int ih = ho * p.stride - p.pad + u;
                if (ih < 0 || ih >= p.H) continue;
                const T* xrow = x + (n * p.H + ih) * p.W * C;
                for (int v = 0; v < K; ++v) {
                    T* acc = part + static_cast<size_t>(u * K + v) * C;
                    int lo, hi;
                    valid_cols(p, v, lo, hi);
                    for (int j = lo; j < hi; ++j) {
                        const T* xp = xrow + static_cast<int64_t>(j * p.stride - p.pad + v) * C;
                        const T* gp = dyrow + static_cast<int64_t>(j) * C;
                        for (int c = 0; c < C; ++c) acc[c] += gp[c] * xp[c];
                    }
                }
            }
        }
    }
    for (int c = 0; c < C; ++c) {
        for (int q = dw ? 0 : KK; q <= KK; ++q) {
            if (q == KK && !dbias) break;
            const T* src = partial.data() + static_cast<size_t>(q) * C + c;
            double s = 0;
            for (int64_t ch = 0; ch < chunks; ++ch) s += src[per_chunk * static_cast<size_t>(ch)];
            T& dst = q < KK ? dw[static_cast<size_t>(c) * KK + q] : dbias[c];
            dst = static_cast<T>(dst + s);
        }
    }
}

template void dwconv2d_fwd_cpu<float>(const DwConv2dParams&, const float*, const float*, const float*, float*);
template void dwconv2d_fwd_cpu<double>(const DwConv2dParams&, const double*, const double*, const double*, double*);
template void dwconv2d_bwd_input_cpu<float>(const DwConv2dParams&, const float*, const float*, float*);
template void dwconv2d_bwd_input_cpu<double>(const DwConv2dParams&, const double*, const double*, double*);
template void dwconv2d_bwd_weight_cpu<float>(const DwConv2dParams&, const float*, const float*, float*, float*);
template void dwconv2d_bwd_weight_cpu<double>(const DwConv2dParams&, const double*, const double*, double*, double*);

}  // namespace sslight::kernels
