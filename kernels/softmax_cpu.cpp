// CPU implementation (and reference) of softmax, log-softmax and the hard/soft cross-entropy losses over rows,
// forward and backward. Max-subtracted, double accumulation; the loss mean sums rows in order (deterministic).
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/softmax.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 15;

// Log-sum-exp of one row in double: m + log sum exp(x - m).
template <class T>
double row_lse(const T* x, int64_t C) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < C; ++c) m = static_cast<double>(x[c]) > m ? static_cast<double>(x[c]) : m;
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(static_cast<double>(x[c]) - m);
    return m + std::log(s);
}

template <class L>
bool label_ok(L label, int64_t C) {
    return label >= 0 && static_cast<int64_t>(label) < C;
}

}  // namespace

template <class T>
void softmax_fwd_cpu(const SoftmaxParams& p, const T* x, T* y) {
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const double lse = row_lse(x + r * p.C, p.C);
        for (int64_t c = 0; c < p.C; ++c)
            y[r * p.C + c] = static_cast<T>(std::exp(static_cast<double>(x[r * p.C + c]) - lse));
    }
}

template <class T>
void softmax_bwd_cpu(const SoftmaxParams& p, const T* y, const T* dy, T* dx) {
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const T* yr = y + r * p.C;
        const T* gr = dy + r * p.C;
        double dot = 0;
        for (int64_t c = 0; c < p.C; ++c) dot += static_cast<double>(yr[c]) * static_cast<double>(gr[c]);
        for (int64_t c = 0; c < p.C; ++c)
            dx[r * p.C + c] = static_cast<T>(static_cast<double>(yr[c]) * (static_cast<double>(gr[c]) - dot));
    }
}

template <class T>
void log_softmax_fwd_cpu(const SoftmaxParams& p, const T* x, T* y) {
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const double lse = row_lse(x + r * p.C, p.C);
        for (int64_t c = 0; c < p.C; ++c) y[r * p.C + c] = static_cast<T>(static_cast<double>(x[r * p.C + c]) - lse);
    }
}

template <class T>
void log_softmax_bwd_cpu(const SoftmaxParams& p, const T* y, const T* dy, T* dx) {
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const T* yr = y + r * p.C;
        const T* gr = dy + r * p.C;
        double gsum = 0;
        for (int64_t c = 0; c < p.C; ++c) gsum += static_cast<double>(gr[c]);
        for (int64_t c = 0; c < p.C; ++c)
            dx[r * p.C + c] = static_cast<T>(static_cast<double>(gr[c]) - std::exp(static_cast<double>(yr[c])) * gsum);
    }
}

template <class T, class L>
void cross_entropy_fwd_cpu(const SoftmaxParams& p, const T* logits, const L* labels, T* loss, T* lse) {
    std::vector<double> row(static_cast<size_t>(p.rows));
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const double l = row_lse(logits + r * p.C, p.C);
        lse[r] = static_cast<T>(l);
        row[r] = label_ok(labels[r], p.C) ? l - static_cast<double>(logits[r * p.C + labels[r]])
                                          : std::numeric_limits<double>::quiet_NaN();
    }
    double total = 0;
    for (double v : row) total += v;
    loss[0] = static_cast<T>(p.rows > 0 ? total / static_cast<double>(p.rows) : std::nan(""));
}

template <class T, class L>
void cross_entropy_bwd_cpu(const SoftmaxParams& p, const T* logits, const L* labels, const T* lse, const T* dloss,
                           T* dlogits) {
    const double scale = static_cast<double>(dloss[0]) / static_cast<double>(p.rows);
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const bool ok = label_ok(labels[r], p.C);
        const double l = static_cast<double>(lse[r]);
        for (int64_t c = 0; c < p.C; ++c) {
            const double sm = std::exp(static_cast<double>(logits[r * p.C + c]) - l);
            const double hot = ok && labels[r] == static_cast<L>(c) ? 1.0 : 0.0;
            dlogits[r * p.C + c] = static_cast<T>(ok ? (sm - hot) * scale : std::nan(""));
        }
    }
}

template <class T>
void cross_entropy_soft_fwd_cpu(const SoftmaxParams& p, const T* logits, const T* targets, T* loss, T* lse,
                                T* tsum) {
    std::vector<double> row(static_cast<size_t>(p.rows));
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const T* x = logits + r * p.C;
        const T* t = targets + r * p.C;
        const double l = row_lse(x, p.C);
        double ts = 0, acc = 0;
        for (int64_t c = 0; c < p.C; ++c) {
            ts += static_cast<double>(t[c]);
            acc -= static_cast<double>(t[c]) * (static_cast<double>(x[c]) - l);
        }
        lse[r] = static_cast<T>(l);
        tsum[r] = static_cast<T>(ts);
        row[r] = acc;
    }
    double total = 0;
    for (double v : row) total += v;
    loss[0] = static_cast<T>(p.rows > 0 ? total / static_cast<double>(p.rows) : std::nan(""));
}

template <class T>
void cross_entropy_soft_bwd_cpu(const SoftmaxParams& p, const T* logits, const T* targets, const T* lse,
                                const T* tsum, const T* dloss, T* dlogits, T* dtargets) {
    const double scale = static_cast<double>(dloss[0]) / static_cast<double>(p.rows);
#pragma omp parallel for if (p.rows * p.C > kParallelMin)
    for (int64_t r = 0; r < p.rows; ++r) {
        const double l = static_cast<double>(lse[r]), ts = static_cast<double>(tsum[r]);
        for (int64_t c = 0; c < p.C; ++c) {
            const int64_t e = r * p.C + c;
            const double x = static_cast<double>(logits[e]), t = static_cast<double>(targets[e]);
            if (dlogits) dlogits[e] = static_cast<T>((std::exp(x - l) * ts - t) * scale);
            if (dtargets) dtargets[e] = static_cast<T>((l - x) * scale);
        }
    }
}

#define SSL_SOFTMAX_CPU_INSTANTIATE(T)                                                                          \
    template void softmax_fwd_cpu<T>(const SoftmaxParams&, const T*, T*);                                      \
    template void softmax_bwd_cpu<T>(const SoftmaxParams&, const T*, const T*, T*);                            \
    template void log_softmax_fwd_cpu<T>(const SoftmaxParams&, const T*, T*);                                  \
    template void log_softmax_bwd_cpu<T>(const SoftmaxParams&, const T*, const T*, T*);                        \
    template void cross_entropy_fwd_cpu<T, int32_t>(const SoftmaxParams&, const T*, const int32_t*, T*, T*);   \
    template void cross_entropy_fwd_cpu<T, int64_t>(const SoftmaxParams&, const T*, const int64_t*, T*, T*);   \
    template void cross_entropy_bwd_cpu<T, int32_t>(const SoftmaxParams&, const T*, const int32_t*, const T*,  \
                                                    const T*, T*);                                             \
    template void cross_entropy_bwd_cpu<T, int64_t>(const SoftmaxParams&, const T*, const int64_t*, const T*,  \
                                                    const T*, T*);                                             \
    template void cross_entropy_soft_fwd_cpu<T>(const SoftmaxParams&, const T*, const T*, T*, T*, T*);         \
    template void cross_entropy_soft_bwd_cpu<T>(const SoftmaxParams&, const T*, const T*, const T*, const T*,  \
                                                const T*, T*, T*);
SSL_SOFTMAX_CPU_INSTANTIATE(float)
SSL_SOFTMAX_CPU_INSTANTIATE(double)
#undef SSL_SOFTMAX_CPU_INSTANTIATE

}  // namespace sslight::kernels
