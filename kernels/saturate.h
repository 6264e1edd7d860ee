// Conversion to an integer type with defined results for every input, shared by the CPU kernels and the CUDA /
// emulated kernels so both follow the same rules: NaN -> 0, values beyond the integer's range -> its min or max,
// everything else truncated toward zero (a C cast). Integer -> integer narrowing clamps the same way (the CPU cast
// goes through double, so wrapping on the GPU would give different bits). A plain C++ cast of an out-of-range float
// is undefined behaviour; a corrupt checkpoint or a diverged run can hand one to a cast, so no cast in the engine
// may use it.
#pragma once
#include <cstdint>
#include <limits>
#include <type_traits>

#if defined(__CUDACC__)
#define SSL_HOST_DEVICE __host__ __device__
#else
#define SSL_HOST_DEVICE
#endif

namespace sslight::kernels {

template <class I, class F>
SSL_HOST_DEVICE inline I saturate_int(F v) {
    static_assert(std::is_integral<I>::value, "integer destinations only");
    if constexpr (std::is_integral<F>::value) {
        // Integer -> integer (the engine's integers are u8, i32 and i64: all fit in int64_t).
        const int64_t w = static_cast<int64_t>(v);
        if (w < static_cast<int64_t>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
        if (w > static_cast<int64_t>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
        return static_cast<I>(w);
    } else {
        if (!(v == v)) return I(0);
        // The limits as F are exact powers of two (min) or round up to the next one (max), so `>=` catches exactly
        // the values a cast could not represent.
        if (v <= static_cast<F>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
        if (v >= static_cast<F>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
        return static_cast<I>(v);
    }
}

}  // namespace sslight::kernels
