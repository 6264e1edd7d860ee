// CPU implementation (and reference) of the multi-crop soft cross-entropy of DINO / SwAV (math in
// kernels/dino_loss.h): per sample, the targets once (softmax of the centred teacher or the codes), then the
// log-softmax of every student view and every pair term. Double accumulation; rows summed in order.
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/dino_loss.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 14;

// m + log Σ exp(x − m) of x = scale · row (double).
template <class T>
double scaled_lse(const T* row, int64_t K, double scale) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < K; ++k) m = std::fmax(m, double(row[k]) * scale);
    double z = 0;
    for (int64_t k = 0; k < K; ++k) z += std::exp(double(row[k]) * scale - m);
    return m + std::log(z);
}

// Target i of sample b into P (K); returns its tstat (DINO: lse of (t − c)/τ_t, SwAV: Σ q).
template <class T>
double load_target(const DinoLossParams& p, const T* target, const T* center, int i, int64_t b, double* P) {
    const T* row = target + (i * p.B + b) * p.K;
    if (!p.softmax_targets) {
        double sum = 0;
        for (int64_t k = 0; k < p.K; ++k) sum += P[k] = double(row[k]);
        return sum;
    }
    const double inv_tt = 1.0 / p.teacher_temp;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < p.K; ++k) {
        P[k] = (double(row[k]) - (center ? double(center[k]) : 0.0)) * inv_tt;
        m = std::fmax(m, P[k]);
    }
    double z = 0;
    for (int64_t k = 0; k < p.K; ++k) z += std::exp(P[k] - m);
    const double lse = m + std::log(z);
    for (int64_t k = 0; k < p.K; ++k) P[k] = std::exp(P[k] - lse);
    return lse;
}

}  // namespace

template <class T>
void dino_loss_fwd_cpu(const DinoLossParams& p, const T* student, const T* target, const T* center, T* loss,
                       T* lse_s, T* tstat, T* teacher_mean) {
    const int G = p.n_global, V = p.views;
    const double inv_ts = 1.0 / p.student_temp;
    std::vector<double> row_loss(size_t(p.B), 0.0);
#pragma omp parallel for if (p.B * p.K * V > kParallelMin)
    for (int64_t b = 0; b < p.B; ++b) {
        std::vector<double> P(static_cast<size_t>(G * p.K)), tsum(static_cast<size_t>(G));
        for (int i = 0; i < G; ++i) {
            const double st = load_target(p, target, center, i, b, P.data() + i * p.K);
            tstat[i * p.B + b] = T(st);
            tsum[i] = p.softmax_targets ? 1.0 : st;
        }
        double acc = 0;
        for (int v = 0; v < V; ++v) {
            const T* s = student + (v * p.B + b) * p.K;
            const double lse = scaled_lse(s, p.K, inv_ts);
            lse_s[v * p.B + b] = T(lse);
            for (int i = 0; i < G; ++i) {
                const double w = dino_pair_weight(p, i, v);
                if (w == 0) continue;
                double dot = 0;
                for (int64_t k = 0; k < p.K; ++k) dot += P[i * p.K + k] * double(s[k]) * inv_ts;
                acc += w * (tsum[i] * lse - dot);  // −Σ_k P (x − lse)
            }
        }
        row_loss[size_t(b)] = acc;
    }
    double total = 0;
    for (double r : row_loss) total += r;
    loss[0] = T(p.B > 0 ? total / double(p.B) : std::nan(""));
    if (!teacher_mean) return;
    std::vector<double> col(size_t(p.K), 0.0);
    for (int64_t r = 0; r < G * p.B; ++r)
        for (int64_t k = 0; k < p.K; ++k) col[size_t(k)] += double(target[r * p.K + k]);
    for (int64_t k = 0; k < p.K; ++k) teacher_mean[k] = T(col[size_t(k)] / double(G * p.B));
}

template <class T>
void dino_loss_bwd_cpu(const DinoLossParams& p, const T* student, const T* target, const T* center, const T* lse_s,
                       const T* tstat, const T* dloss, T* dstudent) {
    const int G = p.n_global, V = p.views;
    const double inv_ts = 1.0 / p.student_temp, inv_tt = 1.0 / p.teacher_temp;
    const double scale = double(dloss[0]) * inv_ts / double(p.B);
#pragma omp parallel for if (p.B * p.K * V > kParallelMin)
    for (int64_t b = 0; b < p.B; ++b) {
        std::vector<double> P(static_cast<size_t>(G * p.K)), tsum(static_cast<size_t>(G));
        for (int i = 0; i < G; ++i) {
            const T* row = target + (i * p.B + b) * p.K;
            const double st = double(tstat[i * p.B + b]);
            tsum[i] = p.softmax_targets ? 1.0 : st;
            for (int64_t k = 0; k < p.K; ++k)
                P[i * p.K + k] = p.softmax_targets
                                     ? std::exp((double(row[k]) - (center ? double(center[k]) : 0.0)) * inv_tt - st)
                                     : double(row[k]);
        }
        for (int v = 0; v < V; ++v) {
            const T* s = student + (v * p.B + b) * p.K;
            T* ds = dstudent + (v * p.B + b) * p.K;
            const double lse = double(lse_s[v * p.B + b]);
            double wsum = 0;
            for (int i = 0; i < G; ++i) wsum += dino_pair_weight(p, i, v) * tsum[i];
            for (int64_t k = 0; k < p.K; ++k) {
                double tgt = 0;
                for (int i = 0; i < G; ++i) tgt += dino_pair_weight(p, i, v) * P[i * p.K + k];
                ds[k] = T((wsum * std::exp(double(s[k]) * inv_ts - lse) - tgt) * scale);
            }
        }
    }
}

#define SSL_DINO_CPU_INSTANTIATE(T)                                                                             \
    template void dino_loss_fwd_cpu<T>(const DinoLossParams&, const T*, const T*, const T*, T*, T*, T*, T*);     \
    template void dino_loss_bwd_cpu<T>(const DinoLossParams&, const T*, const T*, const T*, const T*, const T*, \
                                       const T*, T*);
SSL_DINO_CPU_INSTANTIATE(float)
SSL_DINO_CPU_INSTANTIATE(double)
#undef SSL_DINO_CPU_INSTANTIATE

}  // namespace sslight::kernels
