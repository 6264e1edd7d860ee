// Depthwise 2-D convolution (one k x k filter per channel, MobileNetV2's 3x3 layers), NHWC:
//   y[b, i, j, c] = bias[c] + sum_{u,v < k} w[c, u, v] * x[b, i*s - pad + u, j*s - pad + v, c]   (zero padding)
// Backward input is the transposed convolution (gather form); backward weight/bias are reductions over
// B*Ho*Wo per (channel, tap). Gradient contract: dx is WRITTEN (=); dw and dbias ACCUMULATE (+=) into
// what the caller passes (the op hands in fresh zeroed tensors). Supported: k in {3, 5}, s in {1, 2}, pad >= 0.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct DwConv2dParams {
    int B = 0, H = 0, W = 0, C = 0;  // input  (B, H, W, C)
    int Ho = 0, Wo = 0;              // output (B, Ho, Wo, C): Ho = (H + 2 pad - k) / s + 1
    int k = 3, stride = 1, pad = 0;  // filter size, stride and zero padding (same on both axes)
};

// Fills Ho and Wo from the input geometry (they may come out <= 0: the caller validates).
inline DwConv2dParams dwconv2d_params(int B, int H, int W, int C, int k, int stride, int pad) {
    DwConv2dParams p;
    p.B = B, p.H = H, p.W = W, p.C = C, p.k = k, p.stride = stride, p.pad = pad;
    p.Ho = stride > 0 ? (H + 2 * pad - k) / stride + 1 : 0;
    p.Wo = stride > 0 ? (W + 2 * pad - k) / stride + 1 : 0;
    return p;
}

// CPU implementation and reference (T = float, double), OpenMP over output rows.
// x: (B, H, W, C)  w: (C, k, k)  bias: (C) or nullptr  y: (B, Ho, Wo, C), written.
template <class T>
void dwconv2d_fwd_cpu(const DwConv2dParams& p, const T* x, const T* w, const T* bias, T* y);
// dy: (B, Ho, Wo, C)  w: (C, k, k)  dx: (B, H, W, C), written.
template <class T>
void dwconv2d_bwd_input_cpu(const DwConv2dParams& p, const T* dy, const T* w, T* dx);
// x: (B, H, W, C)  dy: (B, Ho, Wo, C)  dw: (C, k, k) or nullptr, accumulated  dbias: (C) or nullptr,
// accumulated. Deterministic whatever the thread count (fixed row chunks summed in a fixed order).
template <class T>
void dwconv2d_bwd_weight_cpu(const DwConv2dParams& p, const T* x, const T* dy, T* dw, T* dbias);

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16 storage, f32 arithmetic). Vectorised over channels (float4 / 8 x bf16)
// when C is a multiple of the vector width and the activation pointers are 16-byte aligned, scalar otherwise.
SSL_GPU_DECLARE(
    // x: (B, H, W, C)  w: (C, k, k)  bias: (C) or nullptr  y: (B, Ho, Wo, C), written.
    template <class T> void dwconv2d_fwd(const DwConv2dParams& p, const T* x, const T* w, const T* bias, T* y,
                                         Stream s);
    // dy: (B, Ho, Wo, C)  w: (C, k, k)  dx: (B, H, W, C), written.
    template <class T> void dwconv2d_bwd_input(const DwConv2dParams& p, const T* dy, const T* w, T* dx, Stream s);
    // Number of floats of device workspace dwconv2d_bwd_weight needs (depends on the shape only).
    size_t dwconv2d_bwd_weight_workspace(const DwConv2dParams& p);
    // x: (B, H, W, C)  dy: (B, Ho, Wo, C)  dw: (C, k, k) or nullptr, accumulated  dbias: (C) or nullptr,
    // accumulated  workspace: dwconv2d_bwd_weight_workspace(p) floats, overwritten. Deterministic: per-block
    // partial sums in a fixed order, then a second kernel sums the chunks in order; no atomics.
    template <class T> void dwconv2d_bwd_weight(const DwConv2dParams& p, const T* x, const T* dy, T* dw, T* dbias,
                                                float* workspace, Stream s);
)
