// Dense and grouped 2-D convolution (cross-correlation) on NHWC activations with OHWI weights:
//   y[n,oh,ow,k] = b[k] + sum_{i,j,c} x[n, oh*sh - ph + i*dh, ow*sw - pw + j*dw, g*Cg + c] * w[k,i,j,c],
// g = k / Kg, Cg = C / groups, Kg = K / groups, out-of-range input positions read as zero.
// CPU: im2col + cblas GEMM per group (col2im gather for the input gradient); GPU: cuDNN (kernels/conv2d_cuda.cpp).
// Gradient contract: every kernel here WRITES its output (=); parameter-gradient accumulation (+=) into
// .grad happens in autograd, which receives fresh dw / db tensors from the op's backward.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct Conv2dParams {
    int64_t N = 0, H = 0, W = 0, C = 0;  // input (N, H, W, C)
    int64_t K = 0;                       // output channels
    int64_t kh = 1, kw = 1;              // kernel size
    int64_t Ho = 0, Wo = 0;              // output spatial size (conv2d_out_size)
    int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
    int64_t groups = 1;
    // GPU f32 only: let cuDNN use TF32 tensor cores (~1e-3 relative error). Off by default so that f32
    // convolutions match the CPU reference to f32 accuracy (same policy as GemmParams::allow_tf32).
    bool allow_tf32 = false;
    // CPU only: bytes of im2col buffer per chunk of whole images (at least one image per chunk).
    int64_t cpu_col_budget = int64_t(64) << 20;

    int64_t Cg() const { return C / groups; }
    int64_t Kg() const { return K / groups; }
    int64_t taps_cols() const { return kh * kw * Cg(); }  // columns of the im2col matrix of one group
};

// floor((in + 2 pad - dil (k - 1) - 1) / stride) + 1; may be <= 0 for impossible configurations.
inline int64_t conv2d_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
}

// x: (N, H, W, C), w: (K, kh, kw, Cg), bias: (K) or nullptr, y: (N, Ho, Wo, K). T = float, double.
template <class T>
void conv2d_fwd_cpu(const Conv2dParams& p, const T* x, const T* w, const T* bias, T* y);
// dy: (N, Ho, Wo, K), w: (K, kh, kw, Cg) -> dx: (N, H, W, C), written.
template <class T>
void conv2d_bwd_data_cpu(const Conv2dParams& p, const T* dy, const T* w, T* dx);
// x: (N, H, W, C), dy: (N, Ho, Wo, K) -> dw: (K, kh, kw, Cg), written.
template <class T>
void conv2d_bwd_weight_cpu(const Conv2dParams& p, const T* x, const T* dy, T* dw);
// dy: (N, Ho, Wo, K) -> db: (K), written: db[k] = sum over n, oh, ow of dy.
template <class T>
void conv2d_bwd_bias_cpu(const Conv2dParams& p, const T* dy, T* db);

}  // namespace sslight::kernels

// cuDNN launchers (CUDA builds only; kernels/conv2d_cuda.cpp). No emulated variant: cuDNN is a library.
// They run on runtime::stream(Device::cuda(device)) with a cuDNN handle per device bound to that stream;
// the algorithm is found once per (shape, dtype, args) and cached; workspace comes from the engine's
// stream-ordered allocator. T = float (FP32 math unless allow_tf32) and bf16 (bf16 storage, tensor-op math,
// f32 accumulation). Bias is not handled here (see the ops: the pool kernels' channel sums do it).
// Without cuDNN in the build every launcher throws an Error naming the missing library.
namespace sslight::kernels::cuda {
bool conv2d_cudnn_available();
template <class T>
void conv2d_fwd(const Conv2dParams& p, const T* x, const T* w, T* y, int device);
template <class T>
void conv2d_bwd_data(const Conv2dParams& p, const T* dy, const T* w, T* dx, int device);
template <class T>
void conv2d_bwd_weight(const Conv2dParams& p, const T* x, const T* dy, T* dw, int device);
}  // namespace sslight::kernels::cuda
