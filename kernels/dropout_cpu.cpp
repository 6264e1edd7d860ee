// CPU dropout and drop path (and reference for the GPU kernels): one Philox block per four decisions,
// OpenMP over blocks (dropout) or samples (drop path); the mask is a pure function of (key, index).
#include "kernels/dropout.h"

namespace sslight::kernels {

template <class T>
void dropout_cpu(const DropoutParams& p, const T* x, T* y) {
    if (p.n <= 0) return;
    const T scale = static_cast<T>(p.scale);
    const int64_t nblocks = (p.n + 3) / 4;
#pragma omp parallel for if (p.n > (1 << 15))
    for (int64_t b = 0; b < nblocks; ++b) {
        const philox::U4 bits = philox::block(p.seed, p.stream, static_cast<uint64_t>(b));
        const int64_t end = b * 4 + 4 < p.n ? b * 4 + 4 : p.n;
        for (int64_t i = b * 4; i < end; ++i)
            y[i] = dropout_keep(bits, static_cast<uint64_t>(i), p.threshold) ? x[i] * scale : T(0);
    }
}

template <class T>
void drop_path_cpu(const DropoutParams& p, const T* x, T* y) {
    if (p.n <= 0 || p.row_size <= 0) return;
    const T scale = static_cast<T>(p.scale);
    const int64_t rows = p.n / p.row_size, cols = p.row_size;
#pragma omp parallel for if (p.n > (1 << 15))
    for (int64_t r = 0; r < rows; ++r) {
        const uint64_t k = static_cast<uint64_t>(r);
        const T f = dropout_keep(philox::block(p.seed, p.stream, k >> 2), k, p.threshold) ? scale : T(0);
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        if (f == T(0)) {
            for (int64_t c = 0; c < cols; ++c) yr[c] = T(0);
        } else {
            for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * f;
        }
    }
}

template void dropout_cpu<float>(const DropoutParams&, const float*, float*);
template void dropout_cpu<double>(const DropoutParams&, const double*, double*);
template void drop_path_cpu<float>(const DropoutParams&, const float*, float*);
template void drop_path_cpu<double>(const DropoutParams&, const double*, double*);

}  // namespace sslight::kernels
