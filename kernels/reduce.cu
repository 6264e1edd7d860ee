// CUDA reductions over [outer, n, inner] and fused L2 norm / normalize over the last dim, f32 accumulation.
// inner == 1 (rows): one warp per row (n <= 1024) or one block per row. inner > 1 (columns): 32x8 blocks,
// the 32 lanes of a warp read 32 consecutive inner elements (coalesced), the 8 warps stride over n and
// are combined through shared memory. Long reductions are split into chunks (reduce_plan) whose partials
// go to a workspace and are reduced by a second pass: fixed trees, no atomics, so results are deterministic.
#include "kernels/common.cuh"
#include "kernels/reduce.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kRowsPerBlock = 8;  // warp-per-row mode: 8 warps of one 256-thread block
constexpr int64_t kWarpRowMax = 1024;
constexpr int kColX = 32, kColY = 8;
constexpr int kBlock = 256;

__host__ __device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }


// Max with the first index: larger wins, NaN beats any number, ties go to the smaller index.
__device__ __forceinline__ bool max_wins(float a, int ia, float b, int ib) {
    if (isnan(a)) return !isnan(b) || ia < ib;
    if (isnan(b)) return false;
    return a > b || (a == b && ia < ib);
}
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (max_wins(ov, oi, v, i)) v = ov, i = oi;
    }
}
template <bool BlockRow>
__device__ __forceinline__ void group_argmax(float& v, int& i, float* sv, int* si) {
    warp_argmax(v, i);
    if constexpr (BlockRow) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
        __syncthreads();
        if (lane == 0) sv[warp] = v, si[warp] = i;
        __syncthreads();
        v = lane < nwarps ? sv[lane] : -INFINITY;
        i = lane < nwarps ? si[lane] : 0x7fffffff;
        warp_argmax(v, i);
    }
}

// Job j = o * splits + sp reduces x[o, sp*chunk : (sp+1)*chunk) of rows of length n into y[j] * scale.
template <class Tin, class Tout, bool BlockRow>
__global__ void sum_rows_kernel(const Tin* x, Tout* y, int64_t jobs, int64_t n, int64_t splits, int64_t chunk,
                                float scale) {
    __shared__ float scratch[32];
    const RowGroup<BlockRow> g;
    for (int64_t j = g.first; j < jobs; j += g.step) {
        const int64_t o = j / splits, k0 = (j % splits) * chunk, k1 = min64(n, k0 + chunk);
        const Tin* row = x + o * n;
        float acc = 0.f;
        for (int64_t k = k0 + g.lane; k < k1; k += g.width) acc += to_f32(row[k]);
        acc = group_sum<BlockRow>(acc, scratch);
        if (g.lane == 0) y[j] = from_f32<Tout>(acc * scale);
    }
}

// Same jobs over columns; block (32, 8); job = (o * splits + sp) * tiles + tile.
template <class Tin, class Tout>
__global__ void sum_cols_kernel(const Tin* x, Tout* y, int64_t outer, int64_t n, int64_t inner, int64_t splits,
                                int64_t chunk, float scale) {
    __shared__ float part[kColY][kColX + 1];
    const int64_t tiles = (inner + kColX - 1) / kColX, jobs = outer * splits * tiles;
    for (int64_t j = blockIdx.x; j < jobs; j += gridDim.x) {
        const int64_t tile = j % tiles, os = j / tiles, o = os / splits, sp = os % splits;
        const int64_t i = tile * kColX + threadIdx.x, k1 = min64(n, (sp + 1) * chunk);
        float acc = 0.f;
        if (i < inner)
            for (int64_t k = sp * chunk + threadIdx.y; k < k1; k += kColY) acc += to_f32(x[(o * n + k) * inner + i]);
        part[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            float t = 0.f;
            for (int r = 0; r < kColY; ++r) t += part[r][threadIdx.x];
            y[os * inner + i] = from_f32<Tout>(t * scale);
        }
        __syncthreads();
    }
}

// Max over rows; idx_in (optional) gives each input's index (second pass over partials), else it is k.
template <class Tin, class Tout, bool BlockRow>
__global__ void max_rows_kernel(const Tin* x, const int32_t* idx_in, Tout* y, int32_t* idx, int64_t jobs,
                                int64_t n, int64_t splits, int64_t chunk) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const RowGroup<BlockRow> g;
    for (int64_t j = g.first; j < jobs; j += g.step) {
        const int64_t o = j / splits, k0 = (j % splits) * chunk, k1 = min64(n, k0 + chunk);
        float v = -INFINITY;
        int vi = 0x7fffffff;
        for (int64_t k = k0 + g.lane; k < k1; k += g.width) {
            const float c = to_f32(x[o * n + k]);
            const int ci = idx_in ? idx_in[o * n + k] : (int)k;
            if (max_wins(c, ci, v, vi)) v = c, vi = ci;
        }
        group_argmax<BlockRow>(v, vi, sv, si);
        if (g.lane == 0) y[j] = from_f32<Tout>(v), idx[j] = vi;
    }
}

template <class Tin, class Tout>
__global__ void max_cols_kernel(const Tin* x, const int32_t* idx_in, Tout* y, int32_t* idx, int64_t outer,
                                int64_t n, int64_t inner, int64_t splits, int64_t chunk) {
    __shared__ float pv[kColY][kColX + 1];
    __shared__ int pi[kColY][kColX + 1];
    const int64_t tiles = (inner + kColX - 1) / kColX, jobs = outer * splits * tiles;
    for (int64_t j = blockIdx.x; j < jobs; j += gridDim.x) {
        const int64_t tile = j % tiles, os = j / tiles, o = os / splits, sp = os % splits;
        const int64_t i = tile * kColX + threadIdx.x, k1 = min64(n, (sp + 1) * chunk);
        float v = -INFINITY;
        int vi = 0x7fffffff;
        if (i < inner) {
            for (int64_t k = sp * chunk + threadIdx.y; k < k1; k += kColY) {
                const int64_t e = (o * n + k) * inner + i;
                const float c = to_f32(x[e]);
                const int ci = idx_in ? idx_in[e] : (int)k;
                if (max_wins(c, ci, v, vi)) v = c, vi = ci;
            }
        }
        pv[threadIdx.y][threadIdx.x] = v, pi[threadIdx.y][threadIdx.x] = vi;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            for (int r = 1; r < kColY; ++r) {
                const float c = pv[r][threadIdx.x];
                const int ci = pi[r][threadIdx.x];
                if (max_wins(c, ci, v, vi)) v = c, vi = ci;
            }
            y[os * inner + i] = from_f32<Tout>(v), idx[os * inner + i] = vi;
        }
        __syncthreads();
    }
}

template <class T>
__global__ void sum_bwd_kernel(const T* dy, T* dx, int64_t n, int64_t inner, int64_t total, float scale) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        dx[e] = from_f32<T>(to_f32(dy[(e / (n * inner)) * inner + e % inner]) * scale);
}

template <class T>
__global__ void max_bwd_kernel(const T* dy, const int32_t* idx, T* dx, int64_t n, int64_t inner, int64_t total) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t oi = (e / (n * inner)) * inner + e % inner, k = (e / inner) % n;
        dx[e] = idx[oi] == k ? dy[oi] : from_f32<T>(0.f);
    }
}

// ---- L2 over the last dim -------------------------------------------------------------------------------

template <class T, bool BlockRow>
__global__ void l2_norm_fwd_kernel(const T* x, T* y, float* norm, int64_t rows, int64_t D) {
    __shared__ float scratch[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        float ss = 0.f;
        for (int64_t d = g.lane; d < D; d += g.width) ss += to_f32(x[r * D + d]) * to_f32(x[r * D + d]);
        const float nrm = sqrtf(group_sum<BlockRow>(ss, scratch));
        if (g.lane == 0) y[r] = from_f32<T>(nrm), norm[r] = nrm;
    }
}

template <class T>
__global__ void l2_norm_bwd_kernel(const T* x, const float* norm, const T* dy, T* dx, int64_t rows, int64_t D) {
    const int64_t total = rows * D;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const float nrm = norm[e / D];
        dx[e] = from_f32<T>(nrm > 0.f ? to_f32(dy[e / D]) / nrm * to_f32(x[e]) : 0.f);
    }
}

template <class T, bool BlockRow>
__global__ void l2_normalize_fwd_kernel(const T* x, T* y, float* norm, int64_t rows, int64_t D, float eps) {
    __shared__ float scratch[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        float ss = 0.f;
        for (int64_t d = g.lane; d < D; d += g.width) ss += to_f32(x[r * D + d]) * to_f32(x[r * D + d]);
        const float nrm = sqrtf(group_sum<BlockRow>(ss, scratch));
        const float inv = 1.f / fmaxf(nrm, eps);
        for (int64_t d = g.lane; d < D; d += g.width) y[r * D + d] = from_f32<T>(to_f32(x[r * D + d]) * inv);
        if (g.lane == 0) norm[r] = nrm;
    }
}

template <class T, bool BlockRow>
__global__ void l2_normalize_bwd_kernel(const T* y, const float* norm, const T* dy, T* dx, int64_t rows, int64_t D,
                                        float eps) {
    __shared__ float scratch[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        const float nrm = norm[r];
        float dot = 0.f;
        for (int64_t d = g.lane; d < D; d += g.width) dot += to_f32(dy[r * D + d]) * to_f32(y[r * D + d]);
        dot = group_sum<BlockRow>(dot, scratch);
        const bool clamped = !(nrm > eps);
        const float inv = 1.f / (clamped ? eps : nrm);
        for (int64_t d = g.lane; d < D; d += g.width) {
            const float gd = to_f32(dy[r * D + d]);
            dx[r * D + d] = from_f32<T>((clamped ? gd : gd - to_f32(y[r * D + d]) * dot) * inv);
        }
    }
}

// ---- launch helpers --------------------------------------------------------------------------------------

// Launches the warp-per-row variant for rows of up to kWarpRowMax elements, else the block-per-row one.
template <class KW, class KB, class... Args>
void launch_rows(const char* name, KW warp_kernel, KB block_kernel, int64_t jobs, int64_t len, Stream s,
                 Args... args) {
    if (jobs <= 0) return;
    if (len <= kWarpRowMax)
        launch(name, warp_kernel, grid_1d(jobs, kRowsPerBlock), kRowsPerBlock * 32, 0, s, args...);
    else
        launch(name, block_kernel, grid_1d(jobs, 1), len <= 8192 ? 256 : 1024, 0, s, args...);
}

template <class Tin, class Tout>
void sum_pass(const Tin* x, Tout* y, int64_t outer, int64_t n, int64_t inner, int64_t splits, int64_t chunk,
              float scale, Stream s) {
    if (inner == 1) {
        launch_rows("sum_rows_kernel", sum_rows_kernel<Tin, Tout, false>, sum_rows_kernel<Tin, Tout, true>,
                    outer * splits, chunk, s, x, y, outer * splits, n, splits, chunk, scale);
    } else {
        const int64_t jobs = outer * splits * ((inner + kColX - 1) / kColX);
        launch("sum_cols_kernel", sum_cols_kernel<Tin, Tout>, grid_1d(jobs, 1), dim3(kColX, kColY), 0, s, x, y, outer,
               n, inner, splits, chunk, scale);
    }
}

template <class Tin, class Tout>
void max_pass(const Tin* x, const int32_t* idx_in, Tout* y, int32_t* idx, int64_t outer, int64_t n, int64_t inner,
              int64_t splits, int64_t chunk, Stream s) {
    if (inner == 1) {
        launch_rows("max_rows_kernel", max_rows_kernel<Tin, Tout, false>, max_rows_kernel<Tin, Tout, true>,
                    outer * splits, chunk, s, x, idx_in, y, idx, outer * splits, n, splits, chunk);
    } else {
        const int64_t jobs = outer * splits * ((inner + kColX - 1) / kColX);
        launch("max_cols_kernel", max_cols_kernel<Tin, Tout>, grid_1d(jobs, 1), dim3(kColX, kColY), 0, s, x, idx_in,
               y, idx, outer, n, inner, splits, chunk);
    }
}

}  // namespace

template <class T>
void sum_dim_fwd(const ReduceParams& p, const T* x, T* y, double scale, float* work, Stream s) {
    if (p.outer * p.inner == 0) return;
    const ReducePlan plan = reduce_plan(p);
    if (plan.splits == 1) {
        sum_pass(dev_ptr(x), dev_ptr(y), p.outer, p.n, p.inner, 1, plan.chunk, (float)scale, s);
        return;
    }
    sum_pass(dev_ptr(x), work, p.outer, p.n, p.inner, plan.splits, plan.chunk, 1.f, s);
    sum_pass((const float*)work, dev_ptr(y), p.outer, plan.splits, p.inner, 1, plan.splits, (float)scale, s);
}

template <class T>
void sum_dim_bwd(const ReduceParams& p, const T* dy, T* dx, double scale, Stream s) {
    const int64_t total = p.outer * p.n * p.inner;
    if (total == 0) return;
    launch("sum_bwd_kernel", sum_bwd_kernel<dev_t<T>>, grid_1d(total, kBlock), kBlock, 0, s, dev_ptr(dy),
           dev_ptr(dx), p.n, p.inner, total, (float)scale);
}

template <class T>
void max_dim_fwd(const ReduceParams& p, const T* x, T* y, int32_t* idx, float* work, int32_t* work_idx, Stream s) {
    if (p.outer * p.inner == 0) return;
    const ReducePlan plan = reduce_plan(p);
    const int32_t* none = nullptr;
    if (plan.splits == 1) {
        max_pass(dev_ptr(x), none, dev_ptr(y), idx, p.outer, p.n, p.inner, 1, plan.chunk, s);
        return;
    }
    max_pass(dev_ptr(x), none, work, work_idx, p.outer, p.n, p.inner, plan.splits, plan.chunk, s);
    max_pass((const float*)work, (const int32_t*)work_idx, dev_ptr(y), idx, p.outer, plan.splits, p.inner, 1,
             plan.splits, s);
}

template <class T>
void max_dim_bwd(const ReduceParams& p, const T* dy, const int32_t* idx, T* dx, Stream s) {
    const int64_t total = p.outer * p.n * p.inner;
    if (total == 0) return;
    launch("max_bwd_kernel", max_bwd_kernel<dev_t<T>>, grid_1d(total, kBlock), kBlock, 0, s, dev_ptr(dy), idx,
           dev_ptr(dx), p.n, p.inner, total);
}

template <class T>
void l2_norm_fwd(int64_t rows, int64_t D, const T* x, T* y, float* norm, Stream s) {
    using DT = dev_t<T>;
    launch_rows("l2_norm_fwd_kernel", l2_norm_fwd_kernel<DT, false>, l2_norm_fwd_kernel<DT, true>, rows, D, s,
                dev_ptr(x), dev_ptr(y), norm, rows, D);
}

template <class T>
void l2_norm_bwd(int64_t rows, int64_t D, const T* x, const float* norm, const T* dy, T* dx, Stream s) {
    if (rows * D == 0) return;
    launch("l2_norm_bwd_kernel", l2_norm_bwd_kernel<dev_t<T>>, grid_1d(rows * D, kBlock), kBlock, 0, s, dev_ptr(x),
           norm, dev_ptr(dy), dev_ptr(dx), rows, D);
}

template <class T>
void l2_normalize_fwd(int64_t rows, int64_t D, double eps, const T* x, T* y, float* norm, Stream s) {
    using DT = dev_t<T>;
    launch_rows("l2_normalize_fwd_kernel", l2_normalize_fwd_kernel<DT, false>, l2_normalize_fwd_kernel<DT, true>,
                rows, D, s, dev_ptr(x), dev_ptr(y), norm, rows, D, (float)eps);
}

template <class T>
void l2_normalize_bwd(int64_t rows, int64_t D, double eps, const T* y, const float* norm, const T* dy, T* dx,
                      Stream s) {
    using DT = dev_t<T>;
    launch_rows("l2_normalize_bwd_kernel", l2_normalize_bwd_kernel<DT, false>, l2_normalize_bwd_kernel<DT, true>,
                rows, D, s, dev_ptr(y), norm, dev_ptr(dy), dev_ptr(dx), rows, D, (float)eps);
}

#define SSL_REDUCE_GPU_INSTANTIATE(T)                                                                           \
    template void sum_dim_fwd<T>(const ReduceParams&, const T*, T*, double, float*, Stream);                   \
    template void sum_dim_bwd<T>(const ReduceParams&, const T*, T*, double, Stream);                           \
    template void max_dim_fwd<T>(const ReduceParams&, const T*, T*, int32_t*, float*, int32_t*, Stream);       \
    template void max_dim_bwd<T>(const ReduceParams&, const T*, const int32_t*, T*, Stream);                   \
    template void l2_norm_fwd<T>(int64_t, int64_t, const T*, T*, float*, Stream);                              \
    template void l2_norm_bwd<T>(int64_t, int64_t, const T*, const float*, const T*, T*, Stream);              \
    template void l2_normalize_fwd<T>(int64_t, int64_t, double, const T*, T*, float*, Stream);                 \
    template void l2_normalize_bwd<T>(int64_t, int64_t, double, const T*, const float*, const T*, T*, Stream);
SSL_REDUCE_GPU_INSTANTIATE(float)
SSL_REDUCE_GPU_INSTANTIATE(bf16)
#undef SSL_REDUCE_GPU_INSTANTIATE

}  // namespace sslight::kernels::SSL_GPU_NS
