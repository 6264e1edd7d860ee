// CUDA InfoNCE kernels around the queue GEMM (math in kernels/infonce.h), f32 math on f32 or bf16 storage.
// Forward: one block per query row reads the Kq negative dot products once (scaled by 1/T as read) with a
// per-thread online (max, Σexp) that rescales its sum when the max grows, merges the pairs across the block and
// adds the positive logit q·k/T (a block dot product over D); the loss mean is one block summing the rows in
// order. Backward: the dot products become g/(B·T)·softmax in place (element-wise), and dq gets the
// positive-key term.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/infonce.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlock = 256;

__device__ __forceinline__ void online_add(float& m, float& z, float v) {
    if (v > m) {
        z = z * expf(m - v) + 1.f;
        m = v;
    } else if (v != -INFINITY) {
        z += expf(v - m);
    }
}
__device__ __forceinline__ void online_merge(float& m, float& z, float m2, float z2) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;  // both empty
    z = (m == -INFINITY ? 0.f : z * expf(m - mn)) + (m2 == -INFINITY ? 0.f : z2 * expf(m2 - mn));
    m = mn;
}

// Merges every thread's (m, z) across the block; all threads receive the result.
__device__ void block_online(float& m, float& z, float* sm, float* sz) {
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), z2 = __shfl_xor_sync(0xffffffffu, z, o);
        online_merge(m, z, m2, z2);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) sm[warp] = m, sz[warp] = z;
    __syncthreads();
    m = lane < nwarps ? sm[lane] : -INFINITY;
    z = lane < nwarps ? sz[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), z2 = __shfl_xor_sync(0xffffffffu, z, o);
        online_merge(m, z, m2, z2);
    }
}

template <class T>
__global__ void infonce_fwd_kernel(const T* q, const T* k, const T* logits, int64_t B, int64_t D, int64_t Kq,
                                   float inv_t, float* lpos, float* lse, float* row_loss) {
    __shared__ float sm[32], sz[32];
    for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
        float dot = 0.f;
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) dot += to_f32(q[b * D + d]) * to_f32(k[b * D + d]);
        dot = block_sum(dot, sm) * inv_t;
        float m = threadIdx.x == 0 ? dot : -INFINITY, z = threadIdx.x == 0 ? 1.f : 0.f;
        for (int64_t j = threadIdx.x; j < Kq; j += blockDim.x)
            online_add(m, z, to_f32(logits[b * Kq + j]) * inv_t);
        block_online(m, z, sm, sz);
        if (threadIdx.x == 0) {
            const float l = m + logf(z);
            lpos[b] = dot, lse[b] = l, row_loss[b] = l - dot;
        }
    }
}

template <class T>
__global__ void infonce_mean_kernel(const float* row_loss, int64_t B, T* loss) {
    __shared__ float scratch[32];
    float acc = 0.f;
    for (int64_t b = threadIdx.x; b < B; b += blockDim.x) acc += row_loss[b];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) loss[0] = from_f32<T>(acc / float(B));
}

template <class T>
__global__ void infonce_softmax_kernel(const float* lse, const T* dloss, T* logits, int64_t B, int64_t Kq,
                                       float inv_t, float inv_bt) {
    const float scale = to_f32(dloss[0]) * inv_bt;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * Kq; i += int64_t(gridDim.x) * blockDim.x)
        logits[i] = from_f32<T>(expf(to_f32(logits[i]) * inv_t - lse[i / Kq]) * scale);
}

template <class T>
__global__ void infonce_dq_pos_kernel(const T* k, const float* lpos, const float* lse, const T* dloss, T* dq,
                                      int64_t B, int64_t D, float inv_bt) {
    const float scale = to_f32(dloss[0]) * inv_bt;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * D; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t b = i / D;
        dq[i] = from_f32<T>((expf(lpos[b] - lse[b]) - 1.f) * scale * to_f32(k[i]));
    }
}

}  // namespace

template <class T>
void infonce_fwd(const InfoNceParams& p, const T* q, const T* k, const T* logits, float* lpos, float* lse,
                 float* row_loss, T* loss, Stream s) {
    if (p.B <= 0) return;
    using D = dev_t<T>;
    launch("infonce_fwd_kernel", infonce_fwd_kernel<D>, grid_1d(p.B, 1), kBlock, 0, s, dev_ptr(q), dev_ptr(k),
           dev_ptr(logits), p.B, p.D, p.Kq, float(1.0 / p.temp), lpos, lse, row_loss);
    launch("infonce_mean_kernel", infonce_mean_kernel<D>, 1, 1024, 0, s, row_loss, p.B, dev_ptr(loss));
}

template <class T>
void infonce_bwd(const InfoNceParams& p, const T* k, const float* lpos, const float* lse, const T* dloss, T* logits,
                 T* dq, Stream s) {
    if (p.B <= 0) return;
    using D = dev_t<T>;
    const float inv_bt = float(1.0 / (double(p.B) * p.temp));
    if (p.Kq > 0)
        launch("infonce_softmax_kernel", infonce_softmax_kernel<D>, grid_1d(p.B * p.Kq, kBlock), kBlock, 0, s, lse,
               dev_ptr(dloss), dev_ptr(logits), p.B, p.Kq, float(1.0 / p.temp), inv_bt);
    if (p.D > 0)
        launch("infonce_dq_pos_kernel", infonce_dq_pos_kernel<D>, grid_1d(p.B * p.D, kBlock), kBlock, 0, s, dev_ptr(k),
               lpos, lse, dev_ptr(dloss), dev_ptr(dq), p.B, p.D, inv_bt);
}

#define SSL_INFONCE_GPU_INSTANTIATE(T)                                                                             \
    template void infonce_fwd<T>(const InfoNceParams&, const T*, const T*, const T*, float*, float*, float*, T*,  \
                                 Stream);                                                                          \
    template void infonce_bwd<T>(const InfoNceParams&, const T*, const float*, const float*, const T*, T*, T*,    \
                                 Stream);
SSL_INFONCE_GPU_INSTANTIATE(float)
SSL_INFONCE_GPU_INSTANTIATE(bf16)
#undef SSL_INFONCE_GPU_INSTANTIATE

}  // namespace sslight::kernels::SSL_GPU_NS
