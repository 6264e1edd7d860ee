// CPU implementation and reference of batch normalisation (kernels/batch_norm.h): two-pass statistics in double
// (Σx, then Σ(x - mean)², no cancellation whatever the offset), the normalise+affine+activation pass and the
// backward pair (per-channel sums of dz and dz·x̂, then dx). Column sums split the rows into fixed chunks that
// depend only on the shape and are added in order, so results do not depend on the OpenMP thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/batch_norm.h"

namespace sslight::kernels {
namespace {

// out[j·C + c] = Σ_r (the j-th value f adds for (r, c)), for j < K. f(r, c, acc) adds into acc[j·C + c].
template <int K, class F>
void column_sums(int64_t M, int64_t C, F f, double* out) {
    const int64_t rows = std::max<int64_t>(16, 16384 / std::max<int64_t>(C, 1));
    const int64_t chunks = (M + rows - 1) / rows;
    std::vector<double> part(static_cast<size_t>(chunks * K * C), 0.0);
#pragma omp parallel for schedule(static) if (M * C > (1 << 16))
    for (int64_t k = 0; k < chunks; ++k) {
        double* acc = part.data() + k * K * C;
        const int64_t end = std::min(M, (k + 1) * rows);
        for (int64_t r = k * rows; r < end; ++r)
            for (int64_t c = 0; c < C; ++c) f(r, c, acc);
    }
    std::fill(out, out + K * C, 0.0);
    for (int64_t k = 0; k < chunks; ++k)
        for (int64_t i = 0; i < K * C; ++i) out[i] += part[static_cast<size_t>(k * K * C + i)];
}

// The activation applied to z, and its derivative mask (PyTorch: relu passes where z > 0, relu6 where 0 < z < 6).
inline double act_fwd(BnAct a, double z) {
    if (a == BnAct::relu) return z > 0 ? z : 0;
    if (a == BnAct::relu6) return z > 0 ? (z < 6 ? z : 6) : 0;
    return z;
}
inline bool act_pass(BnAct a, double z) {
    if (a == BnAct::relu) return z > 0;
    if (a == BnAct::relu6) return z > 0 && z < 6;
    return true;
}

// Per-channel constants of the normalisation: x̂ = (x - mean)·rstd, z = w·x̂ + b.
template <class T>
struct Channel {
    const T* save;
    const T* w;
    const T* b;
    int64_t C;
    double mean(int64_t c) const { return static_cast<double>(save[c]); }
    double rstd(int64_t c) const { return static_cast<double>(save[C + c]); }
    double weight(int64_t c) const { return w ? static_cast<double>(w[c]) : 1.0; }
    double bias(int64_t c) const { return b ? static_cast<double>(b[c]) : 0.0; }
};

}  // namespace

template <class T>
void bn_stats_cpu(const BatchNormParams& p, const T* x, T* local, T* s1) {
    const int64_t M = p.M, C = p.C;
    std::vector<double> sum(static_cast<size_t>(C)), m2(static_cast<size_t>(C)), mean(static_cast<size_t>(C));
    column_sums<1>(M, C, [&](int64_t r, int64_t c, double* acc) { acc[c] += static_cast<double>(x[r * C + c]); },
                   sum.data());
    for (int64_t c = 0; c < C; ++c) mean[c] = M > 0 ? sum[c] / static_cast<double>(M) : 0.0;
    column_sums<1>(
        M, C,
        [&](int64_t r, int64_t c, double* acc) {
            const double d = static_cast<double>(x[r * C + c]) - mean[c];
            acc[c] += d * d;
        },
        m2.data());
    for (int64_t c = 0; c < C; ++c) {
        local[c] = static_cast<T>(mean[c]);
        local[C + c] = static_cast<T>(m2[c]);
        s1[c] = static_cast<T>(sum[c]);
    }
    s1[C] = static_cast<T>(M);
}

template <class T>
void bn_stats_m2_cpu(const BatchNormParams& p, const T* local, const T* s1, T* s2) {
    const int64_t C = p.C;
    const double n_global = static_cast<double>(s1[C]);
    for (int64_t c = 0; c < C; ++c) {
        const double mean = n_global > 0 ? static_cast<double>(s1[c]) / n_global : 0.0;
        const double d = static_cast<double>(local[c]) - mean;
        s2[c] = static_cast<T>(static_cast<double>(local[C + c]) + static_cast<double>(p.M) * d * d);
    }
}

template <class T>
void bn_stats_finalize_cpu(const BatchNormParams& p, const T* s1, const T* s2, T* save, float* running_mean,
                           float* running_var) {
    const int64_t C = p.C;
    const double n = static_cast<double>(s1[C]);
    const double mom = p.momentum;
    for (int64_t c = 0; c < C; ++c) {
        const double mean = n > 0 ? static_cast<double>(s1[c]) / n : 0.0;
        const double m2 = std::max(static_cast<double>(s2[c]), 0.0);
        const double var = n > 0 ? m2 / n : 0.0;
        save[c] = static_cast<T>(mean);
        save[C + c] = static_cast<T>(1.0 / std::sqrt(var + p.eps));
        if (running_mean) {
            // N = 1 (possible only across ranks) has no unbiased variance: the biased one (0) is used.
            const double var_unbiased = m2 / std::max(n - 1.0, 1.0);
            running_mean[c] = static_cast<float>((1.0 - mom) * running_mean[c] + mom * mean);
            running_var[c] = static_cast<float>((1.0 - mom) * running_var[c] + mom * var_unbiased);
        }
    }
    save[2 * C] = static_cast<T>(n);
}

template <class T>
void bn_stats_eval_cpu(const BatchNormParams& p, const float* running_mean, const float* running_var, T* save) {
    const int64_t C = p.C;
    for (int64_t c = 0; c < C; ++c) {
        save[c] = static_cast<T>(running_mean[c]);
        save[C + c] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + p.eps));
    }
    save[2 * C] = static_cast<T>(p.M);
}

template <class T>
void bn_fwd_cpu(const BatchNormParams& p, const T* x, const T* save, const T* w, const T* b, T* y) {
    const int64_t M = p.M, C = p.C;
    const Channel<T> ch{save, w, b, C};
#pragma omp parallel for schedule(static) if (M * C > (1 << 16))
    for (int64_t r = 0; r < M; ++r) {
        for (int64_t c = 0; c < C; ++c) {
            const double xh = (static_cast<double>(x[r * C + c]) - ch.mean(c)) * ch.rstd(c);
            y[r * C + c] = static_cast<T>(act_fwd(p.act, ch.weight(c) * xh + ch.bias(c)));
        }
    }
}

template <class T>
void bn_bwd_reduce_cpu(const BatchNormParams& p, const T* x, const T* dy, const T* save, const T* w, const T* b,
                       T* sums) {
    const int64_t M = p.M, C = p.C;
    const Channel<T> ch{save, w, b, C};
    std::vector<double> acc(static_cast<size_t>(2 * C));
    column_sums<2>(
        M, C,
        [&](int64_t r, int64_t c, double* a) {
            const double xh = (static_cast<double>(x[r * C + c]) - ch.mean(c)) * ch.rstd(c);
            const double g = act_pass(p.act, ch.weight(c) * xh + ch.bias(c)) ? static_cast<double>(dy[r * C + c]) : 0.0;
            a[c] += g;
            a[C + c] += g * xh;
        },
        acc.data());
    for (int64_t i = 0; i < 2 * C; ++i) sums[i] = static_cast<T>(acc[i]);
}

template <class T>
void bn_bwd_dx_cpu(const BatchNormParams& p, const T* x, const T* dy, const T* save, const T* w, const T* b,
                   const T* sums, T* dx) {
    const int64_t M = p.M, C = p.C;
    const Channel<T> ch{save, w, b, C};
    const double inv_n = p.training ? 1.0 / static_cast<double>(save[2 * C]) : 0.0;
#pragma omp parallel for schedule(static) if (M * C > (1 << 16))
    for (int64_t r = 0; r < M; ++r) {
        for (int64_t c = 0; c < C; ++c) {
            const double xh = (static_cast<double>(x[r * C + c]) - ch.mean(c)) * ch.rstd(c);
            const double g = act_pass(p.act, ch.weight(c) * xh + ch.bias(c)) ? static_cast<double>(dy[r * C + c]) : 0.0;
            const double scale = ch.weight(c) * ch.rstd(c);
            double v = g;
            if (p.training)
                v = g - static_cast<double>(sums[c]) * inv_n - xh * static_cast<double>(sums[C + c]) * inv_n;
            dx[r * C + c] = static_cast<T>(scale * v);
        }
    }
}

#define SSL_BN_INSTANTIATE(T)                                                                                  \
    template void bn_stats_cpu<T>(const BatchNormParams&, const T*, T*, T*);                                  \
    template void bn_stats_m2_cpu<T>(const BatchNormParams&, const T*, const T*, T*);                         \
    template void bn_stats_finalize_cpu<T>(const BatchNormParams&, const T*, const T*, T*, float*, float*);   \
    template void bn_stats_eval_cpu<T>(const BatchNormParams&, const float*, const float*, T*);               \
    template void bn_fwd_cpu<T>(const BatchNormParams&, const T*, const T*, const T*, const T*, T*);          \
    template void bn_bwd_reduce_cpu<T>(const BatchNormParams&, const T*, const T*, const T*, const T*,        \
                                       const T*, T*);                                                         \
    template void bn_bwd_dx_cpu<T>(const BatchNormParams&, const T*, const T*, const T*, const T*, const T*,  \
                                   const T*, T*);
SSL_BN_INSTANTIATE(float)
SSL_BN_INSTANTIATE(double)
#undef SSL_BN_INSTANTIATE

}  // namespace sslight::kernels
