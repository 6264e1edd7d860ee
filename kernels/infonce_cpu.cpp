// CPU implementation (and reference) of the InfoNCE kernels around the queue GEMM (math in kernels/infonce.h):
// positive logit, log-sum-exp over [positive, negatives] and the loss mean; backward softmax in place and the
// positive-key term of dq. Double accumulation, rows summed in order.
#include <cmath>
#include <vector>

#include "kernels/infonce.h"

namespace sslight::kernels {

template <class T>
void infonce_fwd_cpu(const InfoNceParams& p, const T* q, const T* k, const T* logits, T* lpos, T* lse, T* loss) {
    const double inv_t = 1.0 / p.temp;
    std::vector<double> row_loss(size_t(p.B));
#pragma omp parallel for if (p.B * p.Kq > (1 << 15))
    for (int64_t b = 0; b < p.B; ++b) {
        double pos = 0;
        for (int64_t d = 0; d < p.D; ++d) pos += double(q[b * p.D + d]) * double(k[b * p.D + d]);
        pos *= inv_t;
        const T* row = logits + b * p.Kq;
        double m = pos;
        for (int64_t j = 0; j < p.Kq; ++j) m = std::fmax(m, double(row[j]) * inv_t);
        double z = std::exp(pos - m);
        for (int64_t j = 0; j < p.Kq; ++j) z += std::exp(double(row[j]) * inv_t - m);
        const double l = m + std::log(z);
        lpos[b] = T(pos);
        lse[b] = T(l);
        row_loss[size_t(b)] = l - pos;
    }
    double total = 0;
    for (double r : row_loss) total += r;
    loss[0] = T(p.B > 0 ? total / double(p.B) : std::nan(""));
}

template <class T>
void infonce_bwd_cpu(const InfoNceParams& p, const T* k, const T* lpos, const T* lse, const T* dloss, T* logits,
                     T* dq) {
    const double inv_t = 1.0 / p.temp, scale = double(dloss[0]) / (double(p.B) * p.temp);
#pragma omp parallel for if (p.B * p.Kq > (1 << 15))
    for (int64_t b = 0; b < p.B; ++b) {
        const double l = double(lse[b]);
        T* row = logits + b * p.Kq;
        for (int64_t j = 0; j < p.Kq; ++j) row[j] = T(std::exp(double(row[j]) * inv_t - l) * scale);
        const double cpos = (std::exp(double(lpos[b]) - l) - 1.0) * scale;
        for (int64_t d = 0; d < p.D; ++d) dq[b * p.D + d] = T(cpos * double(k[b * p.D + d]));
    }
}

#define SSL_INFONCE_CPU_INSTANTIATE(T)                                                                         \
    template void infonce_fwd_cpu<T>(const InfoNceParams&, const T*, const T*, const T*, T*, T*, T*);          \
    template void infonce_bwd_cpu<T>(const InfoNceParams&, const T*, const T*, const T*, const T*, T*, T*);
SSL_INFONCE_CPU_INSTANTIATE(float)
SSL_INFONCE_CPU_INSTANTIATE(double)
#undef SSL_INFONCE_CPU_INSTANTIATE

}  // namespace sslight::kernels
