// CUDA max pooling and global (average) pooling over NHWC images (f32 and bf16 storage, f32 arithmetic).
// Threads run along C, the innermost dimension, so every warp reads and writes 32 consecutive channels.
// Max pool backward gathers, for each input element, dy over the windows whose saved argmax is that
// element: no atomics, deterministic. Global pool sums each column in a fixed order (16 strided partial
// sums, then a sequential sum of the 16), so results do not vary between runs. See kernels/pool.h.
#include "kernels/common.cuh"
#include "kernels/pool.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlock = 256;
constexpr int kPoolRows = 16;  // partial sums per column in global_pool_fwd_kernel

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

template <class T>
__global__ void max_pool2d_fwd_kernel(MaxPoolParams p, const T* x, T* y, int32_t* argmax) {
    const int64_t total = p.N * p.Ho * p.Wo * p.C;
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < total; o += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = o % p.C;
        int64_t t = o / p.C;
        const int64_t ow = t % p.Wo;
        t /= p.Wo;
        const int64_t oh = t % p.Ho, n = t / p.Ho;
        float best = 0.f;
        int best_idx = -1;
        for (int64_t i = 0; i < p.kernel; ++i) {
            const int64_t ih = oh * p.stride - p.pad + i;
            if (ih < 0 || ih >= p.H) continue;
            for (int64_t j = 0; j < p.kernel; ++j) {
                const int64_t iw = ow * p.stride - p.pad + j;
                if (iw < 0 || iw >= p.W) continue;
                const float v = to_f32(x[((n * p.H + ih) * p.W + iw) * p.C + c]);
                // First maximum in scan order; a NaN replaces a number and then stays.
                if (best_idx < 0 || (best == best && (v > best || v != v))) {
                    best = v;
                    best_idx = static_cast<int>(ih * p.W + iw);
                }
            }
        }
        y[o] = from_f32<T>(best);
        if (argmax) argmax[o] = best_idx;
    }
}

template <class T>
__global__ void max_pool2d_bwd_kernel(MaxPoolParams p, const T* dy, const int32_t* argmax, T* dx) {
    const int64_t total = p.N * p.H * p.W * p.C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = e % p.C;
        int64_t t = e / p.C;
        const int64_t iw = t % p.W;
        t /= p.W;
        const int64_t ih = t % p.H, n = t / p.H;
        // Windows oh with oh·s - p <= ih <= oh·s - p + k - 1 (same order as the CPU reference).
        const int64_t lo_h = ih + p.pad - p.kernel + 1, lo_w = iw + p.pad - p.kernel + 1;
        const int64_t oh0 = lo_h <= 0 ? 0 : (lo_h + p.stride - 1) / p.stride;
        const int64_t ow0 = lo_w <= 0 ? 0 : (lo_w + p.stride - 1) / p.stride;
        const int64_t oh1 = imin(p.Ho - 1, (ih + p.pad) / p.stride), ow1 = imin(p.Wo - 1, (iw + p.pad) / p.stride);
        const int self = static_cast<int>(ih * p.W + iw);
        float acc = 0.f;
        for (int64_t oh = oh0; oh <= oh1; ++oh) {
            for (int64_t ow = ow0; ow <= ow1; ++ow) {
                const int64_t o = ((n * p.Ho + oh) * p.Wo + ow) * p.C + c;
                if (argmax[o] == self) acc += to_f32(dy[o]);
            }
        }
        dx[e] = from_f32<T>(acc);
    }
}

// block (32, kPoolRows); blockIdx.x: a tile of 32 channels; images n = blockIdx.y, + gridDim.y, ...
template <class T>
__global__ void global_pool_fwd_kernel(GlobalPoolParams p, const T* x, T* y) {
    __shared__ float partial[kPoolRows][33];
    const int64_t c = blockIdx.x * 32 + threadIdx.x;
    for (int64_t n = blockIdx.y; n < p.N; n += gridDim.y) {
        float acc = 0.f;
        if (c < p.C) {
            for (int64_t hw = threadIdx.y; hw < p.HW; hw += kPoolRows) acc += to_f32(x[(n * p.HW + hw) * p.C + c]);
        }
        partial[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && c < p.C) {
            float s = 0.f;
            for (int r = 0; r < kPoolRows; ++r) s += partial[r][threadIdx.x];
            y[n * p.C + c] = from_f32<T>(s * static_cast<float>(p.scale));
        }
        __syncthreads();  // partial is rewritten by the next image
    }
}

template <class T>
__global__ void global_pool_bwd_kernel(GlobalPoolParams p, const T* dy, T* dx, bool accumulate) {
    const int64_t total = p.N * p.HW * p.C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = e % p.C, n = e / (p.HW * p.C);
        const float g = static_cast<float>(p.scale) * to_f32(dy[n * p.C + c]);
        dx[e] = from_f32<T>(accumulate ? to_f32(dx[e]) + g : g);
    }
}

}  // namespace

template <class T>
void max_pool2d_fwd(const MaxPoolParams& p, const T* x, T* y, int32_t* argmax, Stream s) {
    const int64_t total = p.N * p.Ho * p.Wo * p.C;
    if (total <= 0) return;
    launch("max_pool2d_fwd_kernel", max_pool2d_fwd_kernel<dev_t<T>>, grid_1d(total, kBlock), kBlock, 0, s, p,
           dev_ptr(x), dev_ptr(y), argmax);
}

template <class T>
void max_pool2d_bwd(const MaxPoolParams& p, const T* dy, const int32_t* argmax, T* dx, Stream s) {
    const int64_t total = p.N * p.H * p.W * p.C;
    if (total <= 0) return;
    launch("max_pool2d_bwd_kernel", max_pool2d_bwd_kernel<dev_t<T>>, grid_1d(total, kBlock), kBlock, 0, s, p,
           dev_ptr(dy), argmax, dev_ptr(dx));
}

template <class T>
void global_pool_fwd(const GlobalPoolParams& p, const T* x, T* y, Stream s) {
    if (p.N <= 0 || p.C <= 0) return;
    const dim3 grid(static_cast<unsigned>((p.C + 31) / 32), static_cast<unsigned>(p.N < 65535 ? p.N : 65535));
    launch("global_pool_fwd_kernel", global_pool_fwd_kernel<dev_t<T>>, grid, dim3(32, kPoolRows), 0, s, p,
           dev_ptr(x), dev_ptr(y));
}

template <class T>
void global_pool_bwd(const GlobalPoolParams& p, const T* dy, T* dx, bool accumulate, Stream s) {
    const int64_t total = p.N * p.HW * p.C;
    if (total <= 0) return;
    launch("global_pool_bwd_kernel", global_pool_bwd_kernel<dev_t<T>>, grid_1d(total, kBlock), kBlock, 0, s, p,
           dev_ptr(dy), dev_ptr(dx), accumulate);
}

template void max_pool2d_fwd<float>(const MaxPoolParams&, const float*, float*, int32_t*, Stream);
template void max_pool2d_fwd<bf16>(const MaxPoolParams&, const bf16*, bf16*, int32_t*, Stream);
template void max_pool2d_bwd<float>(const MaxPoolParams&, const float*, const int32_t*, float*, Stream);
template void max_pool2d_bwd<bf16>(const MaxPoolParams&, const bf16*, const int32_t*, bf16*, Stream);
template void global_pool_fwd<float>(const GlobalPoolParams&, const float*, float*, Stream);
template void global_pool_fwd<bf16>(const GlobalPoolParams&, const bf16*, bf16*, Stream);
template void global_pool_bwd<float>(const GlobalPoolParams&, const float*, float*, bool, Stream);
template void global_pool_bwd<bf16>(const GlobalPoolParams&, const bf16*, bf16*, bool, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
