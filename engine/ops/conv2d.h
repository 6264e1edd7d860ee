// Dense and grouped 2-D convolution (cross-correlation) on NHWC activations, weights [Cout, kh, kw, Cin/groups]
// (OHWI, cuDNN's NHWC filter layout), bias [Cout] or undefined. Output size per axis:
// floor((in + 2 pad - dil (k - 1) - 1) / stride) + 1. Differentiable w.r.t. x, weight and bias (fresh
// gradients; the tape accumulates them into leaf .grad). CPU: f32, f64 (im2col + OpenBLAS). CUDA: f32, bf16
// (cuDNN). Depthwise 3x3/5x5 convolutions are routed to depthwise_conv2d (engine/ops/dwconv2d.h).
#pragma once
#include "engine/tensor.h"

namespace sslight {

struct Conv2dArgs {
    int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
};

// x: [N, H, W, Cin], weight: [Cout, kh, kw, Cin/groups], bias: [Cout] or undefined -> [N, Ho, Wo, Cout].
// Throws ShapeError (naming the shapes) when Cin does not match, groups does not divide Cin and Cout, or the
// output would be empty; DTypeError / DeviceError for mixed dtypes or devices.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dArgs& args);

}  // namespace sslight
