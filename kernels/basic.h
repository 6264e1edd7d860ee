// Basic tensor kernels the engine itself needs: fill with a constant, cast between dtypes, and
// y += alpha * x (gradient accumulation). Element-wise over n contiguous elements; no gradients here.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

// out[i] = value, out: (n)
template <class T>
void fill_cpu(T* out, int64_t n, double value);
// dst[i] = (DstT) src[i]: (n). To an integer type: truncation toward zero, NaN -> 0, out-of-range values clamped
// to the type's min / max (kernels/saturate.h; the CUDA cast follows the same rules).
void cast_cpu(const void* src, DType src_t, void* dst, DType dst_t, int64_t n);
// y[i] += alpha * x[i]: (n)
template <class T>
void axpy_cpu(int64_t n, float alpha, const T* x, T* y);

}  // namespace sslight::kernels

SSL_GPU_DECLARE(
    template <class T> void fill(T* out, int64_t n, double value, Stream s);
    // Supported pairs: any of {f32, bf16, i32, i64, u8} to any other, plus f64<->f32.
    void cast(const void* src, DType src_t, void* dst, DType dst_t, int64_t n, Stream s);
    template <class T> void axpy(int64_t n, float alpha, const T* x, T* y, Stream s);
)
