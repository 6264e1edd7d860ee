// Pooling over NHWC images.
//   max pool:    y[n,oh,ow,c] = max over the k x k window at (oh·s - p, ow·s - p) (padding acts as -inf);
//                argmax[n,oh,ow,c] = ih·W + iw of the FIRST maximum in scan order (rows, then columns),
//                and dx[n,ih,iw,c] = sum of dy over the windows whose argmax is (ih, iw): deterministic.
//   global pool: y[n,c] = scale · sum_{hw} x[n,hw,c]  (scale = 1/(H·W): global average pooling;
//                scale = 1 on a (1, rows, C) view: the per-channel sum used for a conv bias gradient);
//                dx[n,hw,c] (=, or += with accumulate) scale · dy[n,c] (also adds a bias to each row).
// Gradient contract: dx is written (=) except where `accumulate` says +=. No atomics anywhere.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct MaxPoolParams {
    int64_t N = 0, H = 0, W = 0, C = 0;
    int64_t Ho = 0, Wo = 0;
    int64_t kernel = 3, stride = 2, pad = 1;  // pad <= kernel / 2, so every window holds an input element
};

struct GlobalPoolParams {
    int64_t N = 0, HW = 0, C = 0;  // x viewed as (N, HW, C)
    double scale = 1.0;  // the GPU kernels use it rounded to f32
};

// x: (N, H, W, C) -> y: (N, Ho, Wo, C), argmax: (N, Ho, Wo, C) or nullptr (not needed without a backward).
template <class T>
void max_pool2d_fwd_cpu(const MaxPoolParams& p, const T* x, T* y, int32_t* argmax);
// dy, argmax: (N, Ho, Wo, C) -> dx: (N, H, W, C), written.
template <class T>
void max_pool2d_bwd_cpu(const MaxPoolParams& p, const T* dy, const int32_t* argmax, T* dx);
// x: (N, HW, C) -> y: (N, C), written.
template <class T>
void global_pool_fwd_cpu(const GlobalPoolParams& p, const T* x, T* y);
// dy: (N, C) -> dx: (N, HW, C), written (=) or accumulated (+=).
template <class T>
void global_pool_bwd_cpu(const GlobalPoolParams& p, const T* dy, T* dx, bool accumulate);

}  // namespace sslight::kernels

// GPU launchers (kernels/pool.cu), T = float and bf16 with f32 arithmetic; pointers as for the CPU versions.
SSL_GPU_DECLARE(
    template <class T> void max_pool2d_fwd(const MaxPoolParams& p, const T* x, T* y, int32_t* argmax, Stream s);
    template <class T> void max_pool2d_bwd(const MaxPoolParams& p, const T* dy, const int32_t* argmax, T* dx,
                                           Stream s);
    template <class T> void global_pool_fwd(const GlobalPoolParams& p, const T* x, T* y, Stream s);
    template <class T> void global_pool_bwd(const GlobalPoolParams& p, const T* dy, T* dx, bool accumulate,
                                            Stream s);
)
