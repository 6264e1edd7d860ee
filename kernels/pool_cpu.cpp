// CPU max pooling and global (average) pooling over NHWC images, also the reference for kernels/pool.cu.
// Max pool keeps the first maximum in window scan order (a NaN wins and propagates); its backward is a
// gather over the windows that can contain each input element, so no two threads write the same value.
// Gradients are written (=), except global_pool_bwd_cpu with accumulate (+=); see kernels/pool.h.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/pool.h"

namespace sslight::kernels {
namespace {
constexpr int64_t kParallelMin = 1 << 15;  // elements below which an OpenMP region costs more than it saves
}  // namespace

template <class T>
void max_pool2d_fwd_cpu(const MaxPoolParams& p, const T* x, T* y, int32_t* argmax) {
#pragma omp parallel for collapse(2) schedule(static) if (p.N * p.Ho * p.Wo * p.C * p.kernel * p.kernel > kParallelMin)
    for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t oh = 0; oh < p.Ho; ++oh) {
            for (int64_t ow = 0; ow < p.Wo; ++ow) {
                const int64_t out = ((n * p.Ho + oh) * p.Wo + ow) * p.C;
                for (int64_t c = 0; c < p.C; ++c) {
                    T best = T(0);
                    int64_t best_idx = -1;
                    for (int64_t i = 0; i < p.kernel; ++i) {
                        const int64_t ih = oh * p.stride - p.pad + i;
                        if (ih < 0 || ih >= p.H) continue;
                        for (int64_t j = 0; j < p.kernel; ++j) {
                            const int64_t iw = ow * p.stride - p.pad + j;
                            if (iw < 0 || iw >= p.W) continue;
                            const T v = x[((n * p.H + ih) * p.W + iw) * p.C + c];
                            if (best_idx < 0 || (!std::isnan(best) && (v > best || std::isnan(v)))) {
                                best = v;
                                best_idx = ih * p.W + iw;
                            }
                        }
                    }
                    y[out + c] = best;
                    if (argmax) argmax[out + c] = static_cast<int32_t>(best_idx);
                }
            }
        }
    }
}

template <class T>
void max_pool2d_bwd_cpu(const MaxPoolParams& p, const T* dy, const int32_t* argmax, T* dx) {
#pragma omp parallel for collapse(2) schedule(static) if (p.N * p.H * p.W * p.C > kParallelMin)
    for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t ih = 0; ih < p.H; ++ih) {
            // Windows oh with oh·s - p <= ih <= oh·s - p + k - 1.
            const int64_t lo_h = ih + p.pad - p.kernel + 1, hi_h = std::min(p.Ho - 1, (ih + p.pad) / p.stride);
            const int64_t oh0 = lo_h <= 0 ? 0 : (lo_h + p.stride - 1) / p.stride;
            for (int64_t iw = 0; iw < p.W; ++iw) {
                const int64_t lo_w = iw + p.pad - p.kernel + 1, hi_w = std::min(p.Wo - 1, (iw + p.pad) / p.stride);
                const int64_t ow0 = lo_w <= 0 ? 0 : (lo_w + p.stride - 1) / p.stride;
                const int32_t self = static_cast<int32_t>(ih * p.W + iw);
                T* dst = dx + ((n * p.H + ih) * p.W + iw) * p.C;
                for (int64_t c = 0; c < p.C; ++c) {
                    T acc = T(0);
                    for (int64_t oh = oh0; oh <= hi_h; ++oh) {
                        for (int64_t ow = ow0; ow <= hi_w; ++ow) {
                            const int64_t o = ((n * p.Ho + oh) * p.Wo + ow) * p.C + c;
                            if (argmax[o] == self) acc += dy[o];
                        }
                    }
                    dst[c] = acc;
                }
            }
        }
    }
}

template <class T>
void global_pool_fwd_cpu(const GlobalPoolParams& p, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (p.N * p.HW * p.C > kParallelMin)
    for (int64_t n = 0; n < p.N; ++n) {
        std::vector<double> acc(static_cast<size_t>(p.C), 0.0);
        for (int64_t hw = 0; hw < p.HW; ++hw) {
            const T* row = x + (n * p.HW + hw) * p.C;
            for (int64_t c = 0; c < p.C; ++c) acc[c] += static_cast<double>(row[c]);
        }
        for (int64_t c = 0; c < p.C; ++c) y[n * p.C + c] = static_cast<T>(acc[c] * p.scale);
    }
}

template <class T>
void global_pool_bwd_cpu(const GlobalPoolParams& p, const T* dy, T* dx, bool accumulate) {
    const T scale = static_cast<T>(p.scale);
#pragma omp parallel for collapse(2) schedule(static) if (p.N * p.HW * p.C > kParallelMin)
    for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t hw = 0; hw < p.HW; ++hw) {
            T* row = dx + (n * p.HW + hw) * p.C;
            const T* g = dy + n * p.C;
            for (int64_t c = 0; c < p.C; ++c) row[c] = (accumulate ? row[c] : T(0)) + scale * g[c];
        }
    }
}

template void max_pool2d_fwd_cpu<float>(const MaxPoolParams&, const float*, float*, int32_t*);
template void max_pool2d_fwd_cpu<double>(const MaxPoolParams&, const double*, double*, int32_t*);
template void max_pool2d_bwd_cpu<float>(const MaxPoolParams&, const float*, const int32_t*, float*);
template void max_pool2d_bwd_cpu<double>(const MaxPoolParams&, const double*, const int32_t*, double*);
template void global_pool_fwd_cpu<float>(const GlobalPoolParams&, const float*, float*);
template void global_pool_fwd_cpu<double>(const GlobalPoolParams&, const double*, double*);
template void global_pool_bwd_cpu<float>(const GlobalPoolParams&, const float*, float*, bool);
template void global_pool_bwd_cpu<double>(const GlobalPoolParams&, const double*, double*, bool);

}  // namespace sslight::kernels
