// Batch normalisation (PyTorch BatchNorm1d/2d) on the channels-innermost layout x: (M, C), M = N·H·W for NHWC
// images or N for features, with a fused activation: y = act(z), z = w·(x - mean)·rstd + b, act = none/relu/relu6.
// Training statistics are built in steps so that a cross-rank sum can sit between them (packing below).
// Backward: dz = dy·act'(z) with z recomputed from x and the saved mean/rstd; sums = [Σdz, Σdz·x̂] per channel
// (db = Σdz, dw = Σdz·x̂); dx = w·rstd·(dz - Σdz/N - x̂·Σdz·x̂/N) in training, w·rstd·dz in eval.
// Gradient contract: every kernel writes (=) its outputs; the engine turns `sums` into the parameter gradients.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

enum class BnAct : int32_t { none, relu, relu6 };

struct BatchNormParams {
    int64_t M = 0;  // rows on this rank: numel / C
    int64_t C = 0;  // channels (innermost dim)
    double eps = 1e-5;
    double momentum = 0.1;  // running = (1 - momentum)·running + momentum·batch statistic
    BnAct act = BnAct::none;
    bool training = true;  // bn_bwd_dx: gradient through the batch statistics (true) or constants (false)
};

// Arrays (S = the statistics type: T on the CPU, float on the GPU):
//   local (2, C) = [mean_r, m2_r]        this rank's mean and Σ(x - mean_r)² per channel (stable, no cancellation)
//   s1    (C + 1) = [Σx (C), M]          summable: after a cross-rank sum, mean = s1[c] / s1[C], N = s1[C]
//   s2    (C) = m2_r + M·(mean_r - s1[c]/s1[C])²   summable: Σ(x - mean)² about the (global) mean of s1
//   save  (2C + 1) = [mean (C), rstd (C), N]      what the normalisation and the backward read
//   sums  (2, C) = [Σdz, Σdz·x̂]           summable across ranks for dx
// w, b: (C) or null (no affine: w = 1, b = 0). running_mean, running_var: (C) f32 or null (not updated).

// How the GPU splits the M rows for the two column reductions (statistics and backward sums): `chunks` row
// chunks of `rows` rows each (the last may be shorter), reduced by one block each into a float workspace of
// bn_workspace(p) = 2 · chunks · C floats, then merged per channel in a fixed order (deterministic, no atomics).
// Plain host arithmetic on the shape only, shared by the launchers and the engine (which allocates the workspace).
struct BnPlan {
    int64_t chunks = 1;
    int64_t rows = 1;  // rows per chunk
};
inline BnPlan bn_plan(const BatchNormParams& p) {
    constexpr int64_t kTargetBlocks = 1056;  // ~8 blocks of 256 threads on each of 132 SMs
    constexpr int64_t kMinRows = 64;         // >= 8 rows for each of the 8 row lanes of a block
    constexpr int64_t kMaxChunks = 512;      // the merge pass walks chunks with 32 lanes: <= 16 steps each
    const int64_t tiles = (p.C + 31) / 32;
    int64_t chunks = (kTargetBlocks + tiles - 1) / (tiles > 0 ? tiles : 1);
    const int64_t by_size = (p.M + kMinRows - 1) / kMinRows;
    if (chunks > by_size) chunks = by_size;
    if (chunks > kMaxChunks) chunks = kMaxChunks;
    if (chunks < 1) chunks = 1;
    BnPlan plan;
    plan.rows = (p.M + chunks - 1) / chunks;
    if (plan.rows < 1) plan.rows = 1;
    plan.chunks = (p.M + plan.rows - 1) / plan.rows;
    if (plan.chunks < 1) plan.chunks = 1;
    return plan;
}
inline int64_t bn_workspace(const BatchNormParams& p) { return 2 * bn_plan(p).chunks * p.C; }

// CPU reference, T = float or double (statistics in T, accumulated in double). x, y, dy, dx: (M, C).
template <class T>
void bn_stats_cpu(const BatchNormParams& p, const T* x, T* local, T* s1);
template <class T>
void bn_stats_m2_cpu(const BatchNormParams& p, const T* local, const T* s1, T* s2);
// save from s1, s2 (biased variance); running stats updated with the unbiased variance s2 / (N - 1).
template <class T>
void bn_stats_finalize_cpu(const BatchNormParams& p, const T* s1, const T* s2, T* save, float* running_mean,
                           float* running_var);
// save from the running statistics (eval mode); save[2C] = M.
template <class T>
void bn_stats_eval_cpu(const BatchNormParams& p, const float* running_mean, const float* running_var, T* save);
template <class T>
void bn_fwd_cpu(const BatchNormParams& p, const T* x, const T* save, const T* w, const T* b, T* y);
template <class T>
void bn_bwd_reduce_cpu(const BatchNormParams& p, const T* x, const T* dy, const T* save, const T* w, const T* b,
                       T* sums);
// sums is read only in training mode (may be null in eval).
template <class T>
void bn_bwd_dx_cpu(const BatchNormParams& p, const T* x, const T* dy, const T* save, const T* w, const T* b,
                   const T* sums, T* dx);

}  // namespace sslight::kernels

// GPU launchers: T = float or bf16 storage, f32 statistics and arithmetic. Same arrays and contracts as the CPU
// functions; bn_stats and bn_bwd_reduce need `work` of bn_workspace(p) floats.
SSL_GPU_DECLARE(
    template <class T> void bn_stats(const BatchNormParams& p, const T* x, float* work, float* local, float* s1,
                                     Stream s);
    void bn_stats_m2(const BatchNormParams& p, const float* local, const float* s1, float* s2, Stream s);
    void bn_stats_finalize(const BatchNormParams& p, const float* s1, const float* s2, float* save,
                           float* running_mean, float* running_var, Stream s);
    void bn_stats_eval(const BatchNormParams& p, const float* running_mean, const float* running_var, float* save,
                       Stream s);
    template <class T> void bn_fwd(const BatchNormParams& p, const T* x, const float* save, const float* w,
                                   const float* b, T* y, Stream s);
    template <class T> void bn_bwd_reduce(const BatchNormParams& p, const T* x, const T* dy, const float* save,
                                          const float* w, const float* b, float* work, float* sums, Stream s);
    template <class T> void bn_bwd_dx(const BatchNormParams& p, const T* x, const T* dy, const float* save,
                                      const float* w, const float* b, const float* sums, T* dx, Stream s);
)
