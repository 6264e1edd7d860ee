// Differentiable reductions (CPU: f32, f64; CUDA: f32, bf16 storage with f32 accumulation; deterministic).
// sum / mean / max over all elements (shape {}) or over one dim (negative dims count from the end; keepdim
// keeps it as size 1). Gradients: sum -> dy broadcast; mean -> dy / n broadcast; max -> dy to the first
// maximal element only (ties go to the lowest index; NaN counts as the maximum). Over the last dim: l2_norm
// ||x|| (gradient x / ||x||, 0 where ||x|| = 0) and l2_normalize x / max(||x||, eps), like
// torch.nn.functional.normalize(x, dim=-1) (gradient (dy - y (dy.y)) / ||x||, or dy / eps where clamped).
#pragma once
#include "engine/tensor.h"

namespace sslight {

Tensor sum(const Tensor& a);
Tensor sum(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& a);  // NaN for an empty tensor
Tensor mean(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& a);  // values only; the reduced dim must not be empty
Tensor max(const Tensor& a, int64_t dim, bool keepdim = false);

Tensor l2_norm(const Tensor& a);  // a: (..., D) -> (...)
Tensor l2_normalize(const Tensor& a, double eps = 1e-12);  // same shape as a

}  // namespace sslight
