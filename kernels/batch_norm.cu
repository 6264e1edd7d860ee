// CUDA batch normalisation (kernels/batch_norm.h), f32 or bf16 storage with f32 arithmetic. The two column
// reductions (statistics: per-thread Welford merged with Chan's formula; backward: Σdz, Σdz·x̂) put threads over
// 32 consecutive channels (one coalesced row segment per warp) and blocks over row chunks, write per-chunk
// partials to a workspace and merge them per channel in a fixed tree order: deterministic, no float atomics.
// The normalise and dx passes are grid-stride element-wise loops that step the channel index incrementally.
#include "kernels/batch_norm.h"
#include "kernels/common.cuh"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kTile = 32;        // channels per block (threadIdx.x)
constexpr int kLanes = 8;        // row lanes per block of the partial passes (threadIdx.y)
constexpr int kMergeLanes = 32;  // chunk lanes per block of the merge passes (threadIdx.y)
constexpr int kBlock = 256;      // threads of the element-wise and per-channel kernels
constexpr int kPerThread = 4;    // element-wise kernels: elements per thread (amortises the channel index setup)

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float act_fwd(int act, float z) {
    if (act == static_cast<int>(BnAct::relu)) return z > 0.f ? z : 0.f;
    if (act == static_cast<int>(BnAct::relu6)) return z > 0.f ? (z < 6.f ? z : 6.f) : 0.f;
    return z;
}
__device__ __forceinline__ bool act_pass(int act, float z) {
    if (act == static_cast<int>(BnAct::relu)) return z > 0.f;
    if (act == static_cast<int>(BnAct::relu6)) return z > 0.f && z < 6.f;
    return true;
}

// Pre-activation z = w·x̂ + b with x̂ = (x - mean)·rstd; the same expression in every kernel so that the backward
// masks agree with the forward outputs.
__device__ __forceinline__ float affine(float xh, const float* w, const float* b, int64_t c) {
    return (w ? w[c] : 1.f) * xh + (b ? b[c] : 0.f);
}

// Chan et al.'s merge of the (count, mean, M2) triple (nb, mb, qb) into (n, mean, q).
__device__ __forceinline__ void chan_merge(float& n, float& mean, float& q, float nb, float mb, float qb) {
    if (nb == 0.f) return;
    const float total = n + nb;
    const float delta = mb - mean;
    const float f = nb / total;
    mean += delta * f;
    q += qb + delta * delta * n * f;
    n = total;
}

// Fixed-order tree over threadIdx.y of L lanes in shared memory; lane 0 holds the result afterwards.
template <int L>
__device__ __forceinline__ void tree_welford(float (*sn)[kTile], float (*sm)[kTile], float (*sq)[kTile]) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (int s = L / 2; s > 0; s >>= 1) {
        __syncthreads();
        if (ty < s) chan_merge(sn[ty][tx], sm[ty][tx], sq[ty][tx], sn[ty + s][tx], sm[ty + s][tx], sq[ty + s][tx]);
    }
    __syncthreads();
}
template <int L>
__device__ __forceinline__ void tree_sum2(float (*sa)[kTile], float (*sb)[kTile]) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (int s = L / 2; s > 0; s >>= 1) {
        __syncthreads();
        if (ty < s) {
            sa[ty][tx] += sa[ty + s][tx];
            sb[ty][tx] += sb[ty + s][tx];
        }
    }
    __syncthreads();
}

// part (chunks, 2, C) = per-chunk [mean, M2] of rows [k·rows, (k+1)·rows). grid (tiles, chunks), block (32, 8).
template <class T>
__global__ void bn_stats_partial_kernel(const T* x, int64_t M, int64_t C, int64_t rows, float* part) {
    __shared__ float sn[kLanes][kTile], sm[kLanes][kTile], sq[kLanes][kTile];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + tx;
    const int64_t k = blockIdx.y;
    const int64_t end = min64(M, (k + 1) * rows);
    float n = 0.f, mean = 0.f, q = 0.f;
    if (c < C) {
        for (int64_t r = k * rows + ty; r < end; r += kLanes) {
            const float v = to_f32(x[r * C + c]);
            n += 1.f;
            const float d = v - mean;
            mean += d / n;
            q += d * (v - mean);
        }
    }
    sn[ty][tx] = n;
    sm[ty][tx] = mean;
    sq[ty][tx] = q;
    tree_welford<kLanes>(sn, sm, sq);
    if (ty == 0 && c < C) {
        part[(2 * k) * C + c] = sm[0][tx];
        part[(2 * k + 1) * C + c] = sq[0][tx];
    }
}

// local = [mean_r, M2_r], s1 = [M·mean_r, M] from the chunk partials. grid (tiles), block (32, 32).
__global__ void bn_stats_merge_kernel(const float* part, int64_t M, int64_t C, int64_t rows, int64_t chunks,
                                      float* local, float* s1) {
    __shared__ float sn[kMergeLanes][kTile], sm[kMergeLanes][kTile], sq[kMergeLanes][kTile];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + tx;
    float n = 0.f, mean = 0.f, q = 0.f;
    if (c < C) {
        for (int64_t k = ty; k < chunks; k += kMergeLanes) {
            const float nk = static_cast<float>(min64(rows, M - k * rows));
            chan_merge(n, mean, q, nk, part[(2 * k) * C + c], part[(2 * k + 1) * C + c]);
        }
    }
    sn[ty][tx] = n;
    sm[ty][tx] = mean;
    sq[ty][tx] = q;
    tree_welford<kMergeLanes>(sn, sm, sq);
    if (ty == 0 && c < C) {
        local[c] = sm[0][tx];
        local[C + c] = sq[0][tx];
        s1[c] = sm[0][tx] * static_cast<float>(M);
    }
    if (blockIdx.x == 0 && tx == 0 && ty == 0) s1[C] = static_cast<float>(M);
}

__global__ void bn_stats_m2_kernel(const float* local, const float* s1, int64_t M, int64_t C, float* s2) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const float n = s1[C];
    const float d = local[c] - (n > 0.f ? s1[c] / n : 0.f);
    s2[c] = local[C + c] + static_cast<float>(M) * d * d;
}

__global__ void bn_stats_finalize_kernel(const float* s1, const float* s2, int64_t C, float eps, float momentum,
                                         float* save, float* running_mean, float* running_var) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const float n = s1[C];
    const float mean = n > 0.f ? s1[c] / n : 0.f;
    const float m2 = fmaxf(s2[c], 0.f);
    const float var = n > 0.f ? m2 / n : 0.f;
    save[c] = mean;
    save[C + c] = 1.f / sqrtf(var + eps);
    if (c == 0) save[2 * C] = n;
    if (running_mean) {
        const float var_unbiased = m2 / fmaxf(n - 1.f, 1.f);  // N = 1: the biased variance (0), see the CPU code
        running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1.f - momentum) * running_var[c] + momentum * var_unbiased;
    }
}

__global__ void bn_stats_eval_kernel(const float* running_mean, const float* running_var, int64_t M, int64_t C,
                                     float eps, float* save) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= C) return;
    save[c] = running_mean[c];
    save[C + c] = 1.f / sqrtf(running_var[c] + eps);
    if (c == 0) save[2 * C] = static_cast<float>(M);
}

// y = act(w·(x - mean)·rstd + b) over n = M·C elements; the channel index advances by stride mod C per step.
template <class T>
__global__ void bn_fwd_kernel(const T* x, int64_t n, int64_t C, const float* save, const float* w, const float* b,
                              int act, T* y) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t step = stride % C;
    int64_t c = i % C;
    for (; i < n; i += stride) {
        const float xh = (to_f32(x[i]) - save[c]) * save[C + c];
        y[i] = from_f32<T>(act_fwd(act, affine(xh, w, b, c)));
        c += step;
        if (c >= C) c -= C;
    }
}

// part (chunks, 2, C) = per-chunk [Σdz, Σdz·x̂]. grid (tiles, chunks), block (32, 8).
template <class T>
__global__ void bn_bwd_partial_kernel(const T* x, const T* dy, int64_t M, int64_t C, int64_t rows, const float* save,
                                      const float* w, const float* b, int act, float* part) {
    __shared__ float sa[kLanes][kTile], sb[kLanes][kTile];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + tx;
    const int64_t k = blockIdx.y;
    const int64_t end = min64(M, (k + 1) * rows);
    float s_dz = 0.f, s_dzx = 0.f;
    if (c < C) {
        const float mean = save[c], rstd = save[C + c];
        for (int64_t r = k * rows + ty; r < end; r += kLanes) {
            const float xh = (to_f32(x[r * C + c]) - mean) * rstd;
            const float g = act_pass(act, affine(xh, w, b, c)) ? to_f32(dy[r * C + c]) : 0.f;
            s_dz += g;
            s_dzx += g * xh;
        }
    }
    sa[ty][tx] = s_dz;
    sb[ty][tx] = s_dzx;
    tree_sum2<kLanes>(sa, sb);
    if (ty == 0 && c < C) {
        part[(2 * k) * C + c] = sa[0][tx];
        part[(2 * k + 1) * C + c] = sb[0][tx];
    }
}

// sums (2, C) from the chunk partials in a fixed order. grid (tiles), block (32, 32).
__global__ void bn_bwd_merge_kernel(const float* part, int64_t C, int64_t chunks, float* sums) {
    __shared__ float sa[kMergeLanes][kTile], sb[kMergeLanes][kTile];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kTile + tx;
    float s_dz = 0.f, s_dzx = 0.f;
    if (c < C) {
        for (int64_t k = ty; k < chunks; k += kMergeLanes) {
            s_dz += part[(2 * k) * C + c];
            s_dzx += part[(2 * k + 1) * C + c];
        }
    }
    sa[ty][tx] = s_dz;
    sb[ty][tx] = s_dzx;
    tree_sum2<kMergeLanes>(sa, sb);
    if (ty == 0 && c < C) {
        sums[c] = sa[0][tx];
        sums[C + c] = sb[0][tx];
    }
}

// dx = w·rstd·(dz - Σdz/N - x̂·Σdz·x̂/N) (training) or w·rstd·dz (eval).
template <class T>
__global__ void bn_bwd_dx_kernel(const T* x, const T* dy, int64_t n, int64_t C, const float* save, const float* w,
                                 const float* b, const float* sums, int act, int training, T* dx) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float inv_n = training ? 1.f / save[2 * C] : 0.f;
    const int64_t step = stride % C;
    int64_t c = i % C;
    for (; i < n; i += stride) {
        const float rstd = save[C + c];
        const float xh = (to_f32(x[i]) - save[c]) * rstd;
        float g = act_pass(act, affine(xh, w, b, c)) ? to_f32(dy[i]) : 0.f;
        if (training) g -= (sums[c] + xh * sums[C + c]) * inv_n;
        dx[i] = from_f32<T>((w ? w[c] : 1.f) * rstd * g);
        c += step;
        if (c >= C) c -= C;
    }
}

unsigned elementwise_grid(int64_t n) {
    const int64_t g = (n + kBlock * kPerThread - 1) / (kBlock * kPerThread);
    return static_cast<unsigned>(g < 1 ? 1 : (g > 8192 ? 8192 : g));
}
unsigned channel_tiles(int64_t C) { return static_cast<unsigned>((C + kTile - 1) / kTile); }
unsigned channel_blocks(int64_t C) { return static_cast<unsigned>((C + kBlock - 1) / kBlock); }

}  // namespace

template <class T>
void bn_stats(const BatchNormParams& p, const T* x, float* work, float* local, float* s1, Stream s) {
    if (p.C <= 0) return;
    const BnPlan plan = bn_plan(p);
    const int64_t chunks = p.M > 0 ? plan.chunks : 0;
    if (chunks > 0)
        launch("bn_stats_partial_kernel", bn_stats_partial_kernel<dev_t<T>>,
               dim3(channel_tiles(p.C), static_cast<unsigned>(chunks)), dim3(kTile, kLanes), 0, s, dev_ptr(x), p.M,
               p.C, plan.rows, work);
    launch("bn_stats_merge_kernel", bn_stats_merge_kernel, dim3(channel_tiles(p.C)), dim3(kTile, kMergeLanes), 0, s,
           static_cast<const float*>(work), p.M, p.C, plan.rows, chunks, local, s1);
}

void bn_stats_m2(const BatchNormParams& p, const float* local, const float* s1, float* s2, Stream s) {
    if (p.C <= 0) return;
    launch("bn_stats_m2_kernel", bn_stats_m2_kernel, dim3(channel_blocks(p.C)), dim3(kBlock), 0, s, local, s1, p.M,
           p.C, s2);
}

void bn_stats_finalize(const BatchNormParams& p, const float* s1, const float* s2, float* save, float* running_mean,
                       float* running_var, Stream s) {
    if (p.C <= 0) return;
    launch("bn_stats_finalize_kernel", bn_stats_finalize_kernel, dim3(channel_blocks(p.C)), dim3(kBlock), 0, s, s1,
           s2, p.C, static_cast<float>(p.eps), static_cast<float>(p.momentum), save, running_mean, running_var);
}

void bn_stats_eval(const BatchNormParams& p, const float* running_mean, const float* running_var, float* save,
                   Stream s) {
    if (p.C <= 0) return;
    launch("bn_stats_eval_kernel", bn_stats_eval_kernel, dim3(channel_blocks(p.C)), dim3(kBlock), 0, s, running_mean,
           running_var, p.M, p.C, static_cast<float>(p.eps), save);
}

template <class T>
void bn_fwd(const BatchNormParams& p, const T* x, const float* save, const float* w, const float* b, T* y, Stream s) {
    const int64_t n = p.M * p.C;
    if (n <= 0) return;
    launch("bn_fwd_kernel", bn_fwd_kernel<dev_t<T>>, dim3(elementwise_grid(n)), dim3(kBlock), 0, s, dev_ptr(x), n, p.C,
           save, w, b, static_cast<int>(p.act), dev_ptr(y));
}

template <class T>
void bn_bwd_reduce(const BatchNormParams& p, const T* x, const T* dy, const float* save, const float* w,
                   const float* b, float* work, float* sums, Stream s) {
    if (p.C <= 0) return;
    const BnPlan plan = bn_plan(p);
    const int64_t chunks = p.M > 0 ? plan.chunks : 0;
    if (chunks > 0)
        launch("bn_bwd_partial_kernel", bn_bwd_partial_kernel<dev_t<T>>,
               dim3(channel_tiles(p.C), static_cast<unsigned>(chunks)), dim3(kTile, kLanes), 0, s, dev_ptr(x),
               dev_ptr(dy), p.M, p.C, plan.rows, save, w, b, static_cast<int>(p.act), work);
    launch("bn_bwd_merge_kernel", bn_bwd_merge_kernel, dim3(channel_tiles(p.C)), dim3(kTile, kMergeLanes), 0, s,
           static_cast<const float*>(work), p.C, chunks, sums);
}

template <class T>
void bn_bwd_dx(const BatchNormParams& p, const T* x, const T* dy, const float* save, const float* w, const float* b,
               const float* sums, T* dx, Stream s) {
    const int64_t n = p.M * p.C;
    if (n <= 0) return;
    launch("bn_bwd_dx_kernel", bn_bwd_dx_kernel<dev_t<T>>, dim3(elementwise_grid(n)), dim3(kBlock), 0, s, dev_ptr(x),
           dev_ptr(dy), n, p.C, save, w, b, sums, static_cast<int>(p.act), p.training ? 1 : 0, dev_ptr(dx));
}

#define SSL_BN_INSTANTIATE(T)                                                                                      \
    template void bn_stats<T>(const BatchNormParams&, const T*, float*, float*, float*, Stream);                  \
    template void bn_fwd<T>(const BatchNormParams&, const T*, const float*, const float*, const float*, T*,       \
                            Stream);                                                                              \
    template void bn_bwd_reduce<T>(const BatchNormParams&, const T*, const T*, const float*, const float*,        \
                                   const float*, float*, float*, Stream);                                         \
    template void bn_bwd_dx<T>(const BatchNormParams&, const T*, const T*, const float*, const float*,            \
                               const float*, const float*, T*, Stream);
SSL_BN_INSTANTIATE(float)
SSL_BN_INSTANTIATE(bf16)
#undef SSL_BN_INSTANTIATE

}  // namespace sslight::kernels::SSL_GPU_NS
