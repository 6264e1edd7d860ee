// CPU implementation (and reference) of the reductions over [outer, n, inner] (sum/mean, max with the
// first maximal index) and the fused L2 norm / normalize over the last dim, with their backward kernels.
// Accumulation in double; each output is produced by one thread in a fixed order (deterministic).
#include <cmath>

#include "kernels/reduce.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kColChunk = 64;  // inner elements one thread sums together (contiguous loads)

// True when value a at index ia beats the current best b at ib: larger, or NaN, or equal at a smaller index.
template <class T>
bool max_wins(T a, int64_t ia, T b, int64_t ib) {
    if (std::isnan(static_cast<double>(a))) return !std::isnan(static_cast<double>(b)) || ia < ib;
    if (std::isnan(static_cast<double>(b))) return false;
    return a > b || (a == b && ia < ib);
}

}  // namespace

template <class T>
void sum_dim_fwd_cpu(const ReduceParams& p, const T* x, T* y, double scale) {
    const int64_t chunks = (p.inner + kColChunk - 1) / kColChunk;
#pragma omp parallel for if (p.outer * p.n * p.inner > (1 << 16))
    for (int64_t job = 0; job < p.outer * chunks; ++job) {
        const int64_t o = job / chunks, i0 = (job % chunks) * kColChunk;
        const int64_t w = p.inner - i0 < kColChunk ? p.inner - i0 : kColChunk;
        double acc[kColChunk] = {0};
        const T* base = x + o * p.n * p.inner + i0;
        for (int64_t k = 0; k < p.n; ++k)
            for (int64_t i = 0; i < w; ++i) acc[i] += static_cast<double>(base[k * p.inner + i]);
        for (int64_t i = 0; i < w; ++i) y[o * p.inner + i0 + i] = static_cast<T>(acc[i] * scale);
    }
}

template <class T>
void sum_dim_bwd_cpu(const ReduceParams& p, const T* dy, T* dx, double scale) {
    const int64_t total = p.outer * p.n * p.inner;
#pragma omp parallel for if (total > (1 << 16))
    for (int64_t e = 0; e < total; ++e) {
        const int64_t i = e % p.inner, o = e / (p.n * p.inner);
        dx[e] = static_cast<T>(static_cast<double>(dy[o * p.inner + i]) * scale);
    }
}

template <class T>
void max_dim_fwd_cpu(const ReduceParams& p, const T* x, T* y, int32_t* idx) {
#pragma omp parallel for if (p.outer * p.n * p.inner > (1 << 16))
    for (int64_t o = 0; o < p.outer; ++o) {
        const T* base = x + o * p.n * p.inner;
        for (int64_t i = 0; i < p.inner; ++i) {
            T best = base[i];
            int64_t bi = 0;
            for (int64_t k = 1; k < p.n; ++k) {
                const T v = base[k * p.inner + i];
                if (max_wins(v, k, best, bi)) {
                    best = v;
                    bi = k;
                }
            }
            y[o * p.inner + i] = best;
            idx[o * p.inner + i] = static_cast<int32_t>(bi);
        }
    }
}

template <class T>
void max_dim_bwd_cpu(const ReduceParams& p, const T* dy, const int32_t* idx, T* dx) {
    const int64_t total = p.outer * p.n * p.inner;
#pragma omp parallel for if (total > (1 << 16))
    for (int64_t e = 0; e < total; ++e) {
        const int64_t i = e % p.inner, k = (e / p.inner) % p.n, o = e / (p.n * p.inner);
        dx[e] = idx[o * p.inner + i] == k ? dy[o * p.inner + i] : T(0);
    }
}

template <class T>
void l2_norm_fwd_cpu(int64_t rows, int64_t D, const T* x, T* norm) {
#pragma omp parallel for if (rows * D > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(x[r * D + d]) * static_cast<double>(x[r * D + d]);
        norm[r] = static_cast<T>(std::sqrt(ss));
    }
}

template <class T>
void l2_norm_bwd_cpu(int64_t rows, int64_t D, const T* x, const T* norm, const T* dy, T* dx) {
#pragma omp parallel for if (rows * D > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
        const double n = static_cast<double>(norm[r]);
        const double f = n > 0 ? static_cast<double>(dy[r]) / n : 0.0;
        for (int64_t d = 0; d < D; ++d) dx[r * D + d] = static_cast<T>(f * static_cast<double>(x[r * D + d]));
    }
}

template <class T>
void l2_normalize_fwd_cpu(int64_t rows, int64_t D, double eps, const T* x, T* y, T* norm) {
#pragma omp parallel for if (rows * D > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(x[r * D + d]) * static_cast<double>(x[r * D + d]);
        const double n = std::sqrt(ss);
        const double inv = 1.0 / (n > eps ? n : eps);
        norm[r] = static_cast<T>(n);
        for (int64_t d = 0; d < D; ++d) y[r * D + d] = static_cast<T>(static_cast<double>(x[r * D + d]) * inv);
    }
}

template <class T>
void l2_normalize_bwd_cpu(int64_t rows, int64_t D, double eps, const T* y, const T* norm, const T* dy, T* dx) {
#pragma omp parallel for if (rows * D > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
        const double n = static_cast<double>(norm[r]);
        const T* yr = y + r * D;
        const T* gr = dy + r * D;
        T* out = dx + r * D;
        if (!(n > eps)) {  // the clamp is active: y = x / eps, a constant scale
            for (int64_t d = 0; d < D; ++d) out[d] = static_cast<T>(static_cast<double>(gr[d]) / eps);
            continue;
        }
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(gr[d]) * static_cast<double>(yr[d]);
        for (int64_t d = 0; d < D; ++d)
            out[d] = static_cast<T>((static_cast<double>(gr[d]) - static_cast<double>(yr[d]) * dot) / n);
    }
}

#define SSL_REDUCE_CPU_INSTANTIATE(T)                                                                    \
    template void sum_dim_fwd_cpu<T>(const ReduceParams&, const T*, T*, double);                        \
    template void sum_dim_bwd_cpu<T>(const ReduceParams&, const T*, T*, double);                        \
    template void max_dim_fwd_cpu<T>(const ReduceParams&, const T*, T*, int32_t*);                      \
    template void max_dim_bwd_cpu<T>(const ReduceParams&, const T*, const int32_t*, T*);                \
    template void l2_norm_fwd_cpu<T>(int64_t, int64_t, const T*, T*);                                   \
    template void l2_norm_bwd_cpu<T>(int64_t, int64_t, const T*, const T*, const T*, T*);               \
    template void l2_normalize_fwd_cpu<T>(int64_t, int64_t, double, const T*, T*, T*);                  \
    template void l2_normalize_bwd_cpu<T>(int64_t, int64_t, double, const T*, const T*, const T*, T*);
SSL_REDUCE_CPU_INSTANTIATE(float)
SSL_REDUCE_CPU_INSTANTIATE(double)
#undef SSL_REDUCE_CPU_INSTANTIATE

}  // namespace sslight::kernels
