// Differentiable softmax / log-softmax over the last dim and the cross-entropy losses (CPU: f32, f64; CUDA:
// f32, bf16 storage with f32 math). Numerically stable (max-subtracted); outputs have the input's dtype.
// Gradients: softmax dx = y (dy - sum dy y); log_softmax dx = dy - softmax sum dy; cross_entropy
// d/dlogits = (softmax - onehot) / N; cross_entropy_soft d/dlogits = (softmax sum t - t) / N and
// d/dtargets = -log_softmax / N (each times the upstream gradient).
#pragma once
#include "engine/tensor.h"

namespace sslight {

Tensor softmax(const Tensor& x);      // same shape as x (at least 1-d)
Tensor log_softmax(const Tensor& x);  // same shape as x (at least 1-d)

// Mean over N of -log softmax(logits)[r, labels[r]]. logits: [N, C] floating, labels: [N] i64 or i32, on the
// same device; returns shape {} in the logits' dtype. CPU labels outside [0, C) throw an Error naming the
// row and the label. CUDA labels are trusted (checking them would need a device sync): a label outside
// [0, C) makes the loss and that row's gradient NaN, never an out-of-bounds read.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);

// Mean over N of -sum_c targets[r, c] log softmax(logits)[r, c]. logits, targets: [N, C] of one dtype;
// differentiable with respect to both; returns shape {}.
Tensor cross_entropy_soft(const Tensor& logits, const Tensor& targets);

}  // namespace sslight
