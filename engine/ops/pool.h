// Pooling over NHWC images. max_pool2d: max over k x k windows (padding acts as -inf); the gradient goes to
// the first maximum of each window in scan order (deterministic). global_avg_pool: [N, H, W, C] -> [N, C]
// mean over H·W; its gradient spreads dy / (H·W). Both differentiable (fresh gradients). CPU: f32, f64.
// CUDA: f32, bf16 (f32 arithmetic), hand-written kernels in kernels/pool.cu.
#pragma once
#include "engine/tensor.h"

namespace sslight {

// x: [N, H, W, C] -> [N, Ho, Wo, C], Ho = floor((H + 2 padding - kernel) / stride) + 1.
// Needs kernel >= 1, stride >= 1, 0 <= padding <= kernel / 2 (so no window lies entirely in the padding).
Tensor max_pool2d(const Tensor& x, int kernel = 3, int stride = 2, int padding = 1);

// x: [N, H, W, C] -> [N, C], the mean over H and W.
Tensor global_avg_pool(const Tensor& x);

}  // namespace sslight
