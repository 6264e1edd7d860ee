// CUDA fill, cast and axpy: grid-stride loops, one element per thread per iteration, f32 arithmetic.
#include "kernels/basic.h"
#include "kernels/common.cuh"
#include "kernels/saturate.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

template <class T>
__device__ __forceinline__ T conv(float v);
template <>
__device__ __forceinline__ float conv<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 conv<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ int32_t conv<int32_t>(float v) { return saturate_int<int32_t>(v); }
template <>
__device__ __forceinline__ int64_t conv<int64_t>(float v) { return saturate_int<int64_t>(v); }
template <>
__device__ __forceinline__ uint8_t conv<uint8_t>(float v) { return saturate_int<uint8_t>(v); }

__device__ __forceinline__ float as_f32(float v) { return v; }
__device__ __forceinline__ float as_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float as_f32(int32_t v) { return static_cast<float>(v); }
__device__ __forceinline__ float as_f32(int64_t v) { return static_cast<float>(v); }
__device__ __forceinline__ float as_f32(uint8_t v) { return static_cast<float>(v); }

template <class T>
__global__ void fill_kernel(T* out, int64_t n, T v) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = v;
}

// Integer <-> integer casts keep full precision; everything else goes through f32.
template <class S, class D>
__global__ void cast_kernel(const S* src, D* dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = conv<D>(as_f32(src[i]));
}
template <class S, class D>
__global__ void cast_int_kernel(const S* src, D* dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        if constexpr (std::is_integral<S>::value && std::is_integral<D>::value)
            dst[i] = saturate_int<D>(src[i]);
        else
            dst[i] = static_cast<D>(src[i]);  // instantiated by launch_cast for every pair, only launched for ints
}
__global__ void cast_f64_f32_kernel(const double* src, float* dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = static_cast<float>(src[i]);
}
__global__ void cast_f32_f64_kernel(const float* src, double* dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = static_cast<double>(src[i]);
}

template <class T>
__global__ void axpy_kernel(int64_t n, float alpha, const T* x, T* y) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = conv<T>(as_f32(y[i]) + alpha * as_f32(x[i]));
}

constexpr int kBlock = 256;

bool is_int(DType t) { return t == DType::i32 || t == DType::i64 || t == DType::u8; }

template <class S, class D>
void launch_cast(const void* src, void* dst, int64_t n, Stream s, bool integer) {
    auto* sp = reinterpret_cast<const dev_t<S>*>(src);
    auto* dp = reinterpret_cast<dev_t<D>*>(dst);
    if (integer)
        launch("cast_int_kernel", cast_int_kernel<dev_t<S>, dev_t<D>>, grid_1d(n, kBlock), kBlock, 0, s, sp, dp, n);
    else
        launch("cast_kernel", cast_kernel<dev_t<S>, dev_t<D>>, grid_1d(n, kBlock), kBlock, 0, s, sp, dp, n);
}

template <class S>
void cast_from(const void* src, DType src_t, void* dst, DType dst_t, int64_t n, Stream s) {
    const bool integer = is_int(src_t) && is_int(dst_t);
    switch (dst_t) {
        case DType::f32: return launch_cast<S, float>(src, dst, n, s, integer);
        case DType::bf16: return launch_cast<S, bf16>(src, dst, n, s, integer);
        case DType::i32: return launch_cast<S, int32_t>(src, dst, n, s, integer);
        case DType::i64: return launch_cast<S, int64_t>(src, dst, n, s, integer);
        case DType::u8: return launch_cast<S, uint8_t>(src, dst, n, s, integer);
        case DType::f64: break;
    }
    throw std::runtime_error(std::string("GPU cast to f64 is only supported from f32, not from ") + dtype_name(src_t));
}

}  // namespace

template <class T>
void fill(T* out, int64_t n, double value, Stream s) {
    if (n <= 0) return;
    dev_t<T> v = host_convert<dev_t<T>>(value);
    launch("fill_kernel", fill_kernel<dev_t<T>>, grid_1d(n, kBlock), kBlock, 0, s, dev_ptr(out), n, v);
}

void cast(const void* src, DType src_t, void* dst, DType dst_t, int64_t n, Stream s) {
    if (n <= 0) return;
    if (src_t == DType::f64 && dst_t == DType::f32) {
        launch("cast_f64_f32_kernel", cast_f64_f32_kernel, grid_1d(n, kBlock), kBlock, 0, s,
               static_cast<const double*>(src), static_cast<float*>(dst), n);
        return;
    }
    if (src_t == DType::f32 && dst_t == DType::f64) {
        launch("cast_f32_f64_kernel", cast_f32_f64_kernel, grid_1d(n, kBlock), kBlock, 0, s,
               static_cast<const float*>(src), static_cast<double*>(dst), n);
        return;
    }
    switch (src_t) {
        case DType::f32: return cast_from<float>(src, src_t, dst, dst_t, n, s);
        case DType::bf16: return cast_from<bf16>(src, src_t, dst, dst_t, n, s);
        case DType::i32: return cast_from<int32_t>(src, src_t, dst, dst_t, n, s);
        case DType::i64: return cast_from<int64_t>(src, src_t, dst, dst_t, n, s);
        case DType::u8: return cast_from<uint8_t>(src, src_t, dst, dst_t, n, s);
        case DType::f64: break;
    }
    throw std::runtime_error(std::string("GPU cast from f64 is only supported to f32, not to ") + dtype_name(dst_t));
}

template <class T>
void axpy(int64_t n, float alpha, const T* x, T* y, Stream s) {
    if (n <= 0) return;
    launch("axpy_kernel", axpy_kernel<dev_t<T>>, grid_1d(n, kBlock), kBlock, 0, s, n, alpha, dev_ptr(x), dev_ptr(y));
}

template void fill<float>(float*, int64_t, double, Stream);
template void fill<double>(double*, int64_t, double, Stream);
template void fill<bf16>(bf16*, int64_t, double, Stream);
template void fill<int32_t>(int32_t*, int64_t, double, Stream);
template void fill<int64_t>(int64_t*, int64_t, double, Stream);
template void fill<uint8_t>(uint8_t*, int64_t, double, Stream);
template void axpy<float>(int64_t, float, const float*, float*, Stream);
template void axpy<bf16>(int64_t, float, const bf16*, bf16*, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
