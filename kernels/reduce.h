// Reductions over one dimension of a tensor viewed as [outer, n, inner] (sum with a scale, so mean is a
// sum scaled by 1/n; max with the index of the first maximal element) and the fused L2 kernels over the
// last dim: l2_norm y = ||x|| (gradient x/||x||, 0 at ||x|| = 0) and l2_normalize y = x / max(||x||, eps)
// (gradient (dy - y (dy.y)) / ||x|| above eps, dy / eps below). Gradient contract: every backward kernel
// writes (=) its activation gradient. GPU kernels are deterministic (fixed reduction trees, no atomics).
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

// The input is [outer, n, inner] (contiguous); the output is [outer, inner].
struct ReduceParams {
    int64_t outer = 1, n = 1, inner = 1;
};

// How the GPU splits a reduction: `splits` chunks of n per output, each reduced by its own block into a
// float workspace of outer * splits * inner partials, then a second pass reduces the partials. Plain host
// arithmetic, shared by the launchers and the engine (which allocates the workspace).
struct ReducePlan {
    int64_t splits = 1;
    int64_t chunk = 0;  // elements of n per split
};
inline ReducePlan reduce_plan(const ReduceParams& p) {
    constexpr int64_t kTargetBlocks = 264;  // two waves of 132 SMs
    const bool rows = p.inner == 1;
    const int64_t min_chunk = rows ? 8192 : 256;
    const int64_t blocks = rows ? p.outer : p.outer * ((p.inner + 31) / 32);
    int64_t by_size = (p.n + min_chunk - 1) / min_chunk;
    int64_t by_occupancy = blocks >= kTargetBlocks ? 1 : kTargetBlocks / (blocks > 0 ? blocks : 1);
    ReducePlan plan;
    plan.splits = by_size < by_occupancy ? by_size : by_occupancy;
    if (plan.splits < 1) plan.splits = 1;
    plan.chunk = (p.n + plan.splits - 1) / plan.splits;
    if (plan.chunk < 1) plan.chunk = 1;
    plan.splits = (p.n + plan.chunk - 1) / plan.chunk;
    if (plan.splits < 1) plan.splits = 1;
    return plan;
}
// Workspace elements (floats for sum; floats plus as many int32 for max) the launchers need; 0 = none.
inline int64_t reduce_workspace(const ReduceParams& p) {
    const ReducePlan plan = reduce_plan(p);
    return plan.splits > 1 ? p.outer * plan.splits * p.inner : 0;
}

// y = scale * sum_k x[o, k, i]. x: (outer, n, inner), y: (outer, inner)
template <class T>
void sum_dim_fwd_cpu(const ReduceParams& p, const T* x, T* y, double scale);
// dx[o, k, i] = scale * dy[o, i]. dy: (outer, inner), dx: (outer, n, inner)
template <class T>
void sum_dim_bwd_cpu(const ReduceParams& p, const T* dy, T* dx, double scale);
// y = max_k x[o, k, i], idx = the first k reaching it (NaN counts as the maximum). n >= 1.
// x: (outer, n, inner), y: (outer, inner), idx: (outer, inner)
template <class T>
void max_dim_fwd_cpu(const ReduceParams& p, const T* x, T* y, int32_t* idx);
// dx[o, k, i] = k == idx[o, i] ? dy[o, i] : 0. dy, idx: (outer, inner), dx: (outer, n, inner)
template <class T>
void max_dim_bwd_cpu(const ReduceParams& p, const T* dy, const int32_t* idx, T* dx);

// Over the last dim of x: (rows, D). norm: (rows) = ||x_r||.
template <class T>
void l2_norm_fwd_cpu(int64_t rows, int64_t D, const T* x, T* norm);
// dx = dy_r * x / norm_r (0 where norm_r == 0). dy, norm: (rows), x, dx: (rows, D)
template <class T>
void l2_norm_bwd_cpu(int64_t rows, int64_t D, const T* x, const T* norm, const T* dy, T* dx);
// y = x / max(norm, eps), norm saved. x, y: (rows, D), norm: (rows)
template <class T>
void l2_normalize_fwd_cpu(int64_t rows, int64_t D, double eps, const T* x, T* y, T* norm);
// dx = (dy - y * sum(dy * y)) / norm when norm > eps, else dy / eps. y, dy, dx: (rows, D), norm: (rows)
template <class T>
void l2_normalize_bwd_cpu(int64_t rows, int64_t D, double eps, const T* y, const T* norm, const T* dy, T* dx);

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16, f32 accumulation). `work` / `work_idx`: reduce_workspace(p) elements
// on the device (may be null when it is 0). Saved norms are f32.
SSL_GPU_DECLARE(
    template <class T> void sum_dim_fwd(const ReduceParams& p, const T* x, T* y, double scale, float* work,
                                        Stream s);
    template <class T> void sum_dim_bwd(const ReduceParams& p, const T* dy, T* dx, double scale, Stream s);
    template <class T> void max_dim_fwd(const ReduceParams& p, const T* x, T* y, int32_t* idx, float* work,
                                        int32_t* work_idx, Stream s);
    template <class T> void max_dim_bwd(const ReduceParams& p, const T* dy, const int32_t* idx, T* dx, Stream s);
    template <class T> void l2_norm_fwd(int64_t rows, int64_t D, const T* x, T* y, float* norm, Stream s);
    template <class T> void l2_norm_bwd(int64_t rows, int64_t D, const T* x, const float* norm, const T* dy,
                                        T* dx, Stream s);
    template <class T> void l2_normalize_fwd(int64_t rows, int64_t D, double eps, const T* x, T* y, float* norm,
                                             Stream s);
    template <class T> void l2_normalize_bwd(int64_t rows, int64_t D, double eps, const T* y, const float* norm,
                                             const T* dy, T* dx, Stream s);
)
