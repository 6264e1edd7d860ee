// The SSL losses and the EMA update as engine ops (CPU: f32, f64; CUDA: f32 and bf16 logits with f32 math,
// EMA f32): DINO's multi-crop loss with the centred, sharpened teacher; SwAV's Sinkhorn-Knopp codes and
// swapped-prediction loss; MoCo's InfoNCE against a queue; teacher ← m·teacher + (1 − m)·student. Each loss
// is differentiable with respect to the student logits / scores / queries only (fused hand-written backward,
// see kernels/dino_loss.h and kernels/infonce.h); teacher outputs, codes, keys and the queue are constants and
// must not require grad. λ re-weighting (SSLight): L = λ_gg·mean over gg pairs + λ_gl·mean over gl pairs.
#pragma once
#include <functional>
#include <limits>
#include <vector>

#include "engine/tensor.h"

namespace sslight::ssl {

// Unset fields are NaN and rejected: the teacher temperature and the λ's come from the recipe.
struct DinoLossArgs {
    double student_temp = 0.1;
    double teacher_temp = std::numeric_limits<double>::quiet_NaN();
    double lambda_gg = std::numeric_limits<double>::quiet_NaN();
    double lambda_gl = std::numeric_limits<double>::quiet_NaN();
    int n_global = 2;  // global crops: the teacher's views and the student's first views
};

struct DinoLossResult {
    Tensor loss;          // {}: the student's dtype
    Tensor teacher_mean;  // [K]: mean of the raw teacher rows (CPU: the logits' dtype; CUDA: f32)
};

// student: [V·B, K] view-major (V = n_global + locals), teacher: [n_global·B, K], center: [K] (CPU: the logits'
// dtype; CUDA: f32). P^i = softmax((t_i − c)/τ_t), H(i, v) = batch mean of −Σ_k P^i log softmax(s_v/τ_s) over
// v != i. One fused pass forward and one backward (recomputing softmaxes from saved per-row log-sum-exps, no
// [V·B, K] tensor is kept). At most 4 global crops and 32 views on the GPU.
DinoLossResult dino_loss(const Tensor& student, const Tensor& teacher, const Tensor& center, const DinoLossArgs& args);

// SwAV's distributed_sinkhorn on scores [B, K] (this rank's rows, queue rows included): returns codes [B, K]
// (scores' dtype), each row summing to 1. `all_reduce` (optional) receives first a {} tensor, then one [K]
// tensor per iteration (CPU: the scores' dtype; CUDA: f32), and must sum them over ranks in place.
// global_rows: B summed over ranks (SwAV's B; 0: this rank's rows). Single process: exp is shifted by the max
// score/ε (exact: the first normalisation divides it out); with a hook no shift (SwAV's behaviour), so
// |scores|/ε must stay below ~88 in f32 — SwAV's L2-normalised scores (|s| <= 1, ε = 0.05) do. No gradient.
Tensor sinkhorn(const Tensor& scores, double eps = 0.05, int iters = 3,
                const std::function<void(Tensor&)>& all_reduce = nullptr, int64_t global_rows = 0);

// scores: [V·B, K] (all views, view-major), codes: one [B, K] per global crop (the first codes.size() views).
// H(a, v) = batch mean of −Σ q_a log softmax(s_v / temp) for v != a; the DINO kernel with given targets.
Tensor swav_loss(const Tensor& scores, const std::vector<Tensor>& codes, double lambda_gg, double lambda_gl,
                 double temp = 0.1);

// q: [B, D] queries (L2-normalised), k: [B, D] positive keys, queue: [Kq, D] negatives. Mean over queries of
// the cross-entropy of [q·k, q·queueᵀ] / temp with label 0. The [B, Kq] logits come from a GEMM and are kept
// for backward, which turns them into the softmax in place (no second [B, Kq] buffer) for dq's GEMM.
Tensor infonce_loss(const Tensor& q, const Tensor& k, const Tensor& queue, double temp = 0.2);

// teacher[i] ← m·teacher[i] + (1 − m)·student[i] for every pair (same shape, dtype and device; one device for
// all; m in [0, 1]). Fused multi-tensor update (kernels/ema.h); records nothing. Teachers must be leaves.
void ema_update(const std::vector<Tensor*>& teacher, const std::vector<Tensor*>& student, double m);

}  // namespace sslight::ssl
