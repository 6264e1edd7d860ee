// Device-side helpers shared by every kernels/*.cu file: the launch helper (the only way a kernel is
// launched), the namespace of the current GPU target, storage-type mapping for bf16 and warp/block
// reductions. Built two ways (see kernels/common.h): with nvcc (SSL_GPU_NS = cuda) and with the host
// compiler plus the SIMT emulator (SSLIGHT_EMU defined, SSL_GPU_NS = emu).
#pragma once
#include "kernels/common.h"
#include "kernels/saturate.h"

#ifdef SSLIGHT_EMU
#include "emu/emu.h"
#define SSL_GPU_NS emu
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#define SSL_GPU_NS cuda
#endif

#include <type_traits>
#include <utility>

namespace sslight::kernels::SSL_GPU_NS {

// Launch `kernel` on (grid, block) with `smem` bytes of dynamic shared memory on `stream`. Native build:
// <<<>>> followed by a launch-error check naming the kernel. Emulated build: runs the kernel's threads as
// fibers on the CPU, synchronously, with the same arguments.
template <typename... KArgs, typename... Args>
inline void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Stream stream,
                   Args&&... args) {
#ifdef SSLIGHT_EMU
    (void)stream;
    ::sslight::emu::launch(name, kernel, grid, block, smem, std::forward<Args>(args)...);
#else
    kernel<<<grid, block, smem, reinterpret_cast<cudaStream_t>(stream)>>>(static_cast<KArgs>(args)...);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
        throw std::runtime_error(std::string("CUDA launch of ") + name + " failed: " + cudaGetErrorString(err));
    }
#endif
}

// Storage type on the device for a host-side storage type (sslight::bf16 -> __nv_bfloat16).
template <class T>
struct DevType {
    using type = T;
};
template <>
struct DevType<::sslight::bf16> {
    using type = __nv_bfloat16;
};
template <class T>
using dev_t = typename DevType<T>::type;

template <class T>
inline dev_t<T>* dev_ptr(T* p) {
    return reinterpret_cast<dev_t<T>*>(p);
}
template <class T>
inline const dev_t<T>* dev_ptr(const T* p) {
    return reinterpret_cast<const dev_t<T>*>(p);
}

// Host-side conversion of a launch argument to a device storage type.
template <class D>
inline D host_convert(double v) {
    if constexpr (std::is_integral<D>::value)
        return saturate_int<D>(v);
    else
        return static_cast<D>(v);
}
template <>
inline __nv_bfloat16 host_convert<__nv_bfloat16>(double v) {
    return __float2bfloat16(static_cast<float>(v));
}

// f32 <-> storage conversions usable in kernels.
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block whose size is a multiple of 32 (at most 1024). `scratch` is >= 32 floats of shared
// memory. Every thread receives the total. Contains barriers: call from all threads of the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// The threads that reduce one row: a warp (BlockRow = false; blockDim.x / 32 rows per block) or the whole
// block (BlockRow = true), walking rows first, first + step, ... Used by the row kernels of reduce, softmax and
// layer norm; group_sum contains barriers when BlockRow, so every thread of the block must call it.
template <bool BlockRow>
struct RowGroup {
    int64_t first, step;
    int lane, width;
    __device__ RowGroup() {
        if (BlockRow) {
            first = blockIdx.x, step = gridDim.x, lane = threadIdx.x, width = blockDim.x;
        } else {
            const int per_block = blockDim.x / 32;
            first = (int64_t)blockIdx.x * per_block + threadIdx.x / 32;
            step = (int64_t)gridDim.x * per_block, lane = threadIdx.x & 31, width = 32;
        }
    }
};
template <bool BlockRow>
__device__ __forceinline__ float group_sum(float v, float* scratch) {
    if constexpr (BlockRow) return block_sum(v, scratch);
    else return warp_sum(v);
}

// Dynamic shared memory (the launch's `smem` bytes) as T*. Kernels use this instead of declaring
// `extern __shared__ T name[]`, which the host compiler cannot give per-block storage under emulation.
#ifdef SSLIGHT_EMU
template <class T>
inline T* dynamic_smem() {
    return ::sslight::emu::dynamic_smem<T>();
}
#else
template <class T>
__device__ __forceinline__ T* dynamic_smem() {
    extern __shared__ __align__(16) unsigned char ssl_dynamic_smem[];
    return reinterpret_cast<T*>(ssl_dynamic_smem);
}
#endif

inline unsigned grid_1d(int64_t n, int block) {
    int64_t g = (n + block - 1) / block;
    return static_cast<unsigned>(g < 65535 * 16 ? (g < 1 ? 1 : g) : 65535 * 16);
}

}  // namespace sslight::kernels::SSL_GPU_NS
