// Matrix products: batched matmul with optional transposes and the PyTorch-layout linear layer
// y = x·Wᵀ + b. Both are differentiable; gradients are written fresh (the tape accumulates them into leaf
// .grad). CPU: f32 and f64 (OpenBLAS). CUDA: f32 (FP32 compute; TF32 stays off so results match the CPU to
// f32 accuracy) and bf16 (bf16 storage, f32 accumulation) through cuBLAS.
#pragma once
#include "engine/tensor.h"

namespace sslight {

// a: [..., M, K] ([..., K, M] with trans_a), b: [..., K, N] ([..., N, K] with trans_b) -> [..., M, N].
// The batch dims of a and b are equal, or b is 2-D and shared by every matrix of a's batch (its gradient
// then sums over the batch). Throws ShapeError naming both shapes on a mismatch.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// x: [..., in], weight: [out, in], bias: [out] or undefined -> [..., out]. Backward: dx = dy·W,
// dW = dyᵀ·x over all leading dims in one GEMM, db = column sums of dy (deterministic).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace sslight
