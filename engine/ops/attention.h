// Fused multi-head self-attention (flash-style; kernels/attention.h): per (batch, head), softmax(scale q kᵀ) v with
// no mask and no dropout (ViT). Forward saves q, k, v, the output and the per-row log-sum-exp; backward recomputes
// the probabilities from them (no T x T matrix in memory) and returns fresh gradients (=) that the tape
// accumulates. CPU: f32 and f64, head dim D <= 128. CUDA: f32 and bf16 storage with f32 accumulation, D <= 128 and
// a multiple of 8. scale = 0 means 1 / sqrt(D).
#pragma once
#include "engine/tensor.h"

namespace sslight {

// q, k, v: [B, heads, T, D] of one dtype and device -> [B, heads, T, D]. Differentiable w.r.t. q, k and v.
// ShapeError naming the shapes for a rank other than 4, mismatched shapes or an unsupported D.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale = 0);

// The fused path of a ViT block: qkv is the timm projection output [B, T, 3 * heads * D], read in place as
// (B, T, 3, heads, D); returns [B, T, heads * D] (heads concatenated, ready for the output projection), with no
// permute copies either way. Its gradient d(qkv) is written in the same fused layout.
Tensor attention_qkv(const Tensor& qkv, int heads, double scale = 0);

}  // namespace sslight
