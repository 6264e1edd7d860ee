// Differentiable layer normalisation over the last dim (CPU: f32, f64; CUDA: f32, bf16 storage with f32 math):
// y = (x - mean) / sqrt(var + eps) * weight + bias with the biased variance, as torch.nn.functional.layer_norm.
// Gradients flow to x, weight and bias; dweight / dbias are deterministic sums over all rows.
#pragma once
#include "engine/tensor.h"

namespace sslight {

// x: (..., C); weight, bias: [C] of x's dtype and device, either may be undefined (no scale / no shift).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-6);

}  // namespace sslight
