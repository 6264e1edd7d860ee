// CPU implementation (and reference) of the basic kernels: fill, cast, axpy.
#include <cmath>
#include <type_traits>

#include "engine/check.h"
#include "kernels/basic.h"
#include "kernels/saturate.h"

namespace sslight::kernels {
namespace {

template <class T>
T from_double(double v) {
    if constexpr (std::is_integral<T>::value)
        return saturate_int<T>(v);
    else
        return static_cast<T>(v);
}
template <>
bf16 from_double<bf16>(double v) {
    return bf16(static_cast<float>(v));
}
template <class T>
double to_double(T v) {
    return static_cast<double>(v);
}
template <>
double to_double<bf16>(bf16 v) {
    return static_cast<float>(v);
}

template <class S, class D>
void cast_loop(const S* s, D* d, int64_t n) {
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_integral<S>::value && std::is_integral<D>::value)
            d[i] = saturate_int<D>(s[i]);  // exact for i64 beyond 2^53
        else
            d[i] = from_double<D>(to_double(s[i]));
    }
}

template <class S>
void cast_from(const S* s, void* dst, DType dst_t, int64_t n) {
    switch (dst_t) {
        case DType::f32: return cast_loop(s, static_cast<float*>(dst), n);
        case DType::f64: return cast_loop(s, static_cast<double*>(dst), n);
        case DType::bf16: return cast_loop(s, static_cast<bf16*>(dst), n);
        case DType::i32: return cast_loop(s, static_cast<int32_t*>(dst), n);
        case DType::i64: return cast_loop(s, static_cast<int64_t*>(dst), n);
        case DType::u8: return cast_loop(s, static_cast<uint8_t*>(dst), n);
    }
}

}  // namespace

template <class T>
void fill_cpu(T* out, int64_t n, double value) {
    const T v = from_double<T>(value);
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) out[i] = v;
}

void cast_cpu(const void* src, DType src_t, void* dst, DType dst_t, int64_t n) {
    switch (src_t) {
        case DType::f32: return cast_from(static_cast<const float*>(src), dst, dst_t, n);
        case DType::f64: return cast_from(static_cast<const double*>(src), dst, dst_t, n);
        case DType::bf16: return cast_from(static_cast<const bf16*>(src), dst, dst_t, n);
        case DType::i32: return cast_from(static_cast<const int32_t*>(src), dst, dst_t, n);
        case DType::i64: return cast_from(static_cast<const int64_t*>(src), dst, dst_t, n);
        case DType::u8: return cast_from(static_cast<const uint8_t*>(src), dst, dst_t, n);
    }
}

template <class T>
void axpy_cpu(int64_t n, float alpha, const T* x, T* y) {
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) y[i] = from_double<T>(to_double(y[i]) + alpha * to_double(x[i]));
}

template void fill_cpu<float>(float*, int64_t, double);
template void fill_cpu<double>(double*, int64_t, double);
template void fill_cpu<bf16>(bf16*, int64_t, double);
template void fill_cpu<int32_t>(int32_t*, int64_t, double);
template void fill_cpu<int64_t>(int64_t*, int64_t, double);
template void fill_cpu<uint8_t>(uint8_t*, int64_t, double);
template void axpy_cpu<float>(int64_t, float, const float*, float*);
template void axpy_cpu<double>(int64_t, float, const double*, double*);
template void axpy_cpu<bf16>(int64_t, float, const bf16*, bf16*);

}  // namespace sslight::kernels
