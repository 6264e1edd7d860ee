// CUDA Sinkhorn-Knopp (SwAV; math in kernels/swav.h). Q_bk = E_bk·α_k·β_b with E = exp(scores/ε − shift): the
// initial Q /= ΣQ sets α = 1/ΣQ; each iteration's per-prototype sums r_k = α_k Σ_b E_bk β_b (block partials over
// 64-row slices, summed in order), then α_k /= r_k·K and, per sample (one warp a row), β_b /= β_b Σ_k E_bk α_k·B;
// the codes are written once as E·α·β·B. Every reduction is in a fixed order (deterministic); the host calls
// the reduce hook between the kernels that produce a sum and those that use it.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/swav.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlock = 256;
constexpr int kPartials = 512;     // blocks of the whole-matrix reductions
constexpr int64_t kSliceRows = 64;  // rows per partial of the per-prototype sums

struct Work {
    float *partial, *shift, *alpha, *beta, *cols;
    int64_t slices;
};
Work carve(const SinkhornParams& p, float* ws) {
    Work w;
    w.slices = (p.B + kSliceRows - 1) / kSliceRows;
    w.partial = ws, w.shift = ws + kPartials, w.alpha = w.shift + 1, w.beta = w.alpha + p.K, w.cols = w.beta + p.B;
    return w;
}

template <class T>
__device__ __forceinline__ float expo(const T* s, int64_t i, float inv_eps, const float* shift) {
    return expf(to_f32(s[i]) * inv_eps - (shift ? shift[0] : 0.f));
}

// Max plus one of scores·inv_eps (Max) or Σ E (otherwise) over n elements: one partial per block.
template <class T, bool Max>
__global__ void sk_partial_kernel(const T* s, int64_t n, float inv_eps, const float* shift, float* partial) {
    __shared__ float scratch[32];
    float acc = Max ? -INFINITY : 0.f;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
        acc = Max ? fmaxf(acc, to_f32(s[i]) * inv_eps) : acc + expo(s, i, inv_eps, shift);
    acc = Max ? block_max(acc, scratch) : block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <bool Max>
__global__ void sk_reduce_kernel(const float* partial, int n, float* out) {
    __shared__ float scratch[32];
    float acc = Max ? -INFINITY : 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc = Max ? fmaxf(acc, partial[i]) : acc + partial[i];
    acc = Max ? block_max(acc, scratch) : block_sum(acc, scratch);
    if (threadIdx.x == 0) out[0] = acc;
}

__global__ void sk_init_kernel(const float* total, float* alpha, int64_t K, float* beta, int64_t B) {
    const float a = 1.f / total[0];
    const int64_t n = K > B ? K : B;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
        if (i < K) alpha[i] = a;
        if (i < B) beta[i] = 1.f;
    }
}

// cols[slice, k] = Σ_{b in slice} E_bk β_b; grid (column blocks, slices).
template <class T>
__global__ void sk_cols_partial_kernel(const T* s, int64_t B, int64_t K, float inv_eps, const float* shift,
                                       const float* beta, float* cols) {
    const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (k >= K) return;
    const int64_t b0 = int64_t(blockIdx.y) * kSliceRows, b1 = b0 + kSliceRows < B ? b0 + kSliceRows : B;
    float acc = 0.f;
    for (int64_t b = b0; b < b1; ++b) acc += expo(s, b * K + k, inv_eps, shift) * beta[b];
    cols[int64_t(blockIdx.y) * K + k] = acc;
}

__global__ void sk_cols_final_kernel(const float* cols, int64_t slices, int64_t K, const float* alpha,
                                     float* proto_sums) {
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(gridDim.x) * blockDim.x) {
        float acc = 0.f;
        for (int64_t c = 0; c < slices; ++c) acc += cols[c * K + k];
        proto_sums[k] = alpha[k] * acc;
    }
}

__global__ void sk_alpha_kernel(float* alpha, const float* proto_sums, int64_t K) {
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(gridDim.x) * blockDim.x)
        alpha[k] = alpha[k] / proto_sums[k] / float(K);
}

// One warp per sample: β_b ← β_b / (β_b Σ_k E_bk α_k) / B_global.
template <class T>
__global__ void sk_rows_kernel(const T* s, int64_t B, int64_t K, float inv_eps, const float* shift,
                               const float* alpha, float* beta, float Bg) {
    const int64_t b = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= B) return;  // whole warps leave
    float acc = 0.f;
    for (int64_t k = threadIdx.x & 31; k < K; k += 32) acc += expo(s, b * K + k, inv_eps, shift) * alpha[k];
    acc = warp_sum(acc);
    if ((threadIdx.x & 31) == 0) beta[b] = beta[b] / (beta[b] * acc) / Bg;
}

template <class T>
__global__ void sk_write_kernel(const T* s, T* q, int64_t B, int64_t K, float inv_eps, const float* shift,
                                const float* alpha, const float* beta, float Bg) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * K; i += int64_t(gridDim.x) * blockDim.x)
        q[i] = from_f32<T>(expo(s, i, inv_eps, shift) * alpha[i % K] * beta[i / K] * Bg);
}

unsigned partial_blocks(int64_t n) {
    const unsigned g = grid_1d(n, kBlock);
    return g < unsigned(kPartials) ? g : unsigned(kPartials);
}

}  // namespace

size_t sinkhorn_workspace(const SinkhornParams& p) {
    const int64_t slices = (p.B + kSliceRows - 1) / kSliceRows;
    return size_t(kPartials + 1 + p.K + p.B + slices * p.K);
}

template <class T>
void sinkhorn(const SinkhornParams& p, const T* scores, T* q, float* total, float* proto_sums, float* workspace,
              const SinkhornReduce& reduce, Stream s) {
    using D = dev_t<T>;
    const D* sc = dev_ptr(scores);
    const int64_t n = p.B * p.K;
    const float inv_eps = float(1.0 / p.eps), Bg = float(p.global_rows > 0 ? p.global_rows : double(p.B));
    const Work w = carve(p, workspace);
    const float* shift = nullptr;
    if (p.shift_max && n > 0) {
        launch("sk_partial_kernel", sk_partial_kernel<D, true>, partial_blocks(n), kBlock, 0, s, sc, n, inv_eps,
               static_cast<const float*>(nullptr), w.partial);
        launch("sk_reduce_kernel", sk_reduce_kernel<true>, 1, 1024, 0, s, w.partial, int(partial_blocks(n)), w.shift);
        shift = w.shift;
    }
    launch("sk_partial_kernel", sk_partial_kernel<D, false>, partial_blocks(n), kBlock, 0, s, sc, n, inv_eps, shift,
           w.partial);
    launch("sk_reduce_kernel", sk_reduce_kernel<false>, 1, 1024, 0, s, w.partial, int(partial_blocks(n)), total);
    reduce(1);
    launch("sk_init_kernel", sk_init_kernel, grid_1d(p.K > p.B ? p.K : p.B, kBlock), kBlock, 0, s, total, w.alpha,
           p.K, w.beta, p.B);
    const dim3 cols_grid(unsigned((p.K + kBlock - 1) / kBlock), unsigned(w.slices));
    for (int it = 0; it < p.iters; ++it) {
        launch("sk_cols_partial_kernel", sk_cols_partial_kernel<D>, cols_grid, kBlock, 0, s, sc, p.B, p.K, inv_eps,
               shift, w.beta, w.cols);
        launch("sk_cols_final_kernel", sk_cols_final_kernel, grid_1d(p.K, kBlock), kBlock, 0, s, w.cols, w.slices,
               p.K, w.alpha, proto_sums);
        reduce(p.K);
        launch("sk_alpha_kernel", sk_alpha_kernel, grid_1d(p.K, kBlock), kBlock, 0, s, w.alpha, proto_sums, p.K);
        launch("sk_rows_kernel", sk_rows_kernel<D>, unsigned((p.B + 7) / 8), kBlock, 0, s, sc, p.B, p.K, inv_eps,
               shift, w.alpha, w.beta, Bg);
    }
    launch("sk_write_kernel", sk_write_kernel<D>, grid_1d(n, kBlock), kBlock, 0, s, sc, dev_ptr(q), p.B, p.K,
           inv_eps, shift, w.alpha, w.beta, Bg);
}

template void sinkhorn<float>(const SinkhornParams&, const float*, float*, float*, float*, float*,
                              const SinkhornReduce&, Stream);
template void sinkhorn<bf16>(const SinkhornParams&, const bf16*, bf16*, float*, float*, float*,
                             const SinkhornReduce&, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
