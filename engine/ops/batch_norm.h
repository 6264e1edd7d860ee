// Batch normalisation exactly as PyTorch's BatchNorm1d/2d, on x [..., C] with C innermost (NHWC images
// [N, H, W, C], features [N, C]), statistics per channel over the M = numel / C other elements, with an optional
// fused activation after the affine: y = act(w·(x - mean)/sqrt(var + eps) + b). Differentiable w.r.t. x, weight
// and bias (through the batch statistics in training mode); dx is written, dweight/dbias are returned for the
// tape to accumulate (+=). Synchronised BN: pass `all_reduce` and every statistic is the global-batch one.
#pragma once
#include <functional>

#include "engine/tensor.h"

namespace sslight {

enum class Activation { none, relu, relu6 };

// Sums a small statistics tensor across data-parallel ranks in place (synchronised BN). nullptr: local stats.
// The tensor lives on x's device, is f32 (f64 when x is f64) and contiguous; every rank must call the hook the
// same number of times with the same sizes (below), which holds when all ranks run the same model.
//
// Packing (C channels, M local rows, N the global row count = the sum of the ranks' M):
//   training forward, call 1: [C + 1]  = [Σx per channel (C), M]         -> global Σx and N; mean = Σx / N
//   training forward, call 2: [C]      = [Σ(x - mean)² per channel]      -> global M2; var = M2 / N
//     (each rank forms call 2 from its own stable (mean_r, M2_r) as M2_r + M·(mean_r - mean)², so the variance
//      has no cancellation whatever the offset of the data and needs no second read of x)
//   backward (training, when dx is needed), one call: [2C] = [Σdz (C), Σdz·x̂ (C)], dz = dy·act'(z)
//     (dweight = Σdz·x̂ and dbias = Σdz stay the local sums, as in PyTorch's SyncBatchNorm: data parallel
//      averages parameter gradients afterwards)
// Eval mode calls no hook.
using StatsAllReduce = std::function<void(Tensor& stats)>;

struct BatchNormArgs {
    bool training = true;
    double momentum = 0.1;  // running = (1 - momentum)·running + momentum·batch statistic
    double eps = 1e-5;
    Activation act = Activation::none;
    StatsAllReduce all_reduce = nullptr;
};

// x: [..., C] (at least 2 dims), f32 or f64 on the CPU, f32 or bf16 on CUDA.
// weight, bias: [C] or undefined (no affine); dtype of x, or f32 (bf16 x with f32 master parameters).
// running_mean, running_var: f32 [C] on x's device, both defined or both undefined. Training mode normalises with
// the batch mean and biased variance and, when defined, updates them in place with the mean and the unbiased
// variance (M2 / (N - 1)); undefined, nothing is updated. Eval mode normalises with them (required).
// Training needs more than one value per channel (M > 1) unless all_reduce is set.
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, const BatchNormArgs& args);

}  // namespace sslight
