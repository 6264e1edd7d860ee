// CPU implementation (and reference) of SwAV's Sinkhorn-Knopp (math in kernels/swav.h): the literal steps of
// `distributed_sinkhorn` on a materialised Q stored in the scores' type, sums accumulated in double, the
// reduce hook called where SwAV all-reduces.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/swav.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kParallelMin = 1 << 15;

template <class T>
void scale_all(T* q, int64_t n, double f) {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) q[i] = T(double(q[i]) * f);
}

}  // namespace

template <class T>
void sinkhorn_cpu(const SinkhornParams& p, const T* scores, T* q, T* total, T* proto_sums,
                  const SinkhornReduce& reduce) {
    const int64_t n = p.B * p.K;
    const double inv_eps = 1.0 / p.eps, Bg = p.global_rows > 0 ? p.global_rows : double(p.B);
    double shift = 0;
    if (p.shift_max && n > 0) {
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < n; ++i) m = std::max(m, double(scores[i]) * inv_eps);
        shift = m;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        q[i] = T(std::exp(double(scores[i]) * inv_eps - shift));
        sum += double(q[i]);
    }
    total[0] = T(sum);
    reduce(1);
    scale_all(q, n, 1.0 / double(total[0]));
    std::vector<double> acc(size_t(p.K));
    for (int it = 0; it < p.iters; ++it) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t b = 0; b < p.B; ++b)
            for (int64_t k = 0; k < p.K; ++k) acc[size_t(k)] += double(q[b * p.K + k]);
        for (int64_t k = 0; k < p.K; ++k) proto_sums[k] = T(acc[size_t(k)]);
        reduce(p.K);
        // Q /= row sums; Q /= K; Q /= column sums; Q /= B (SwAV's K × B orientation).
#pragma omp parallel for if (n > kParallelMin)
        for (int64_t b = 0; b < p.B; ++b) {
            T* row = q + b * p.K;
            double rs = 0;
            for (int64_t k = 0; k < p.K; ++k) {
                row[k] = T(double(row[k]) / double(proto_sums[k]) / double(p.K));
                rs += double(row[k]);
            }
            for (int64_t k = 0; k < p.K; ++k) row[k] = T(double(row[k]) / rs / Bg);
        }
    }
    scale_all(q, n, Bg);
}

template void sinkhorn_cpu<float>(const SinkhornParams&, const float*, float*, float*, float*,
                                  const SinkhornReduce&);
template void sinkhorn_cpu<double>(const SinkhornParams&, const double*, double*, double*, double*,
                                   const SinkhornReduce&);

}  // namespace sslight::kernels
