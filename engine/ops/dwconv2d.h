// Depthwise 2-D convolution on NHWC activations: one k x k filter per channel (groups = C), zero padding,
//   y[n, i, j, c] = bias[c] + sum_{u,v} w[c, u, v, 0] * x[n, i*stride - padding + u, j*stride - padding + v, c].
// Differentiable w.r.t. x, weight and bias; backward returns fresh gradients (=) and the tape accumulates
// them into leaf .grad. CPU: f32, f64 (OpenMP). CUDA: f32 and bf16 storage with f32 accumulation, hand-written
// kernels (kernels/dwconv2d.cu). conv2d routes its depthwise 3x3 / 5x5 cases here.
#pragma once
#include "engine/tensor.h"

namespace sslight {

// x: [N, H, W, C]; weight: [C, k, k, 1] (OHWI with Cin/groups = 1); bias: [C] or undefined.
// k in {3, 5}, stride in {1, 2}, padding >= 0 (same on both axes) -> [N, Ho, Wo, C] with
// Ho = (H + 2 padding - k) / stride + 1. ShapeError (naming the shapes) for a wrong weight or bias shape,
// an unsupported k / stride / padding or an empty output; DTypeError / DeviceError for mixed dtypes or devices
// and for dtypes the device does not support.
Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding);

}  // namespace sslight
