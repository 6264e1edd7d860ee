// Device intrinsics for the CPU SIMT emulation (included by emu/emu.h only): fast-math and rounding
// intrinsics mapped to <cmath> (round-to-nearest only), bit reinterpretation and integer intrinsics, the
// min/max overload set of CUDA's math_functions.hpp, atomics (GCC __atomic builtins, so they are also correct
// between blocks running on several OS threads), cache-hinted loads/stores and memory fences.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>

// ---- Fast-math and correctly rounded float intrinsics (the host computes them correctly rounded or at
// libm accuracy, which is within the device's error bounds).
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x), *c = cosf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float fdividef(float x, float y) { return x / y; }
inline float __saturatef(float x) { return x > 0.f ? (x < 1.f ? x : 1.f) : 0.f; }  // NaN -> 0
// C23 gives <math.h> some of these names (sinpi, cospi, rsqrt; glibc 2.41+). Templates never conflict with a
// C declaration, and overload resolution prefers libm's non-template function where it exists.
template <class = void>
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
template <class = void>
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
template <class = void>
inline float sinpif(float x) { return sinf(3.14159265358979323846f * x); }
template <class = void>
inline float cospif(float x) { return cosf(3.14159265358979323846f * x); }
template <class = void>
inline double sinpi(double x) { return sin(3.14159265358979323846 * x); }
template <class = void>
inline double cospi(double x) { return cos(3.14159265358979323846 * x); }
inline float rcbrtf(float x) { return 1.f / cbrtf(x); }
inline double rcbrt(double x) { return 1.0 / cbrt(x); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
inline float rhypotf(float x, float y) { return 1.f / hypotf(x, y); }
inline float norm3df(float a, float b, float c) { return sqrtf(a * a + b * b + c * c); }
inline float rnorm3df(float a, float b, float c) { return 1.f / sqrtf(a * a + b * b + c * c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __frcp_rn(float a) { return 1.f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __frsqrt_rn(float a) { return 1.f / sqrtf(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline double __drcp_rn(double a) { return 1.0 / a; }
inline double __dsqrt_rn(double a) { return sqrt(a); }

// ---- Reinterpretation and conversion.
inline int __float_as_int(float x) { return ::sslight::emu::detail::from_bits<int>(::sslight::emu::detail::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return static_cast<unsigned>(__float_as_int(x)); }
inline float __int_as_float(int x) { return ::sslight::emu::detail::from_bits<float>(static_cast<uint32_t>(x)); }
inline float __uint_as_float(unsigned x) { return ::sslight::emu::detail::from_bits<float>(x); }
inline long long __double_as_longlong(double x) {
    return ::sslight::emu::detail::from_bits<long long>(::sslight::emu::detail::to_bits(x));
}
inline double __longlong_as_double(long long x) {
    return ::sslight::emu::detail::from_bits<double>(static_cast<uint64_t>(x));
}
inline int __double2hiint(double x) { return static_cast<int>(__double_as_longlong(x) >> 32); }
inline int __double2loint(double x) { return static_cast<int>(__double_as_longlong(x)); }
inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double(static_cast<long long>((static_cast<uint64_t>(static_cast<uint32_t>(hi)) << 32) |
                                                       static_cast<uint32_t>(lo)));
}
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(nearbyintf(x)); }
inline unsigned __float2uint_rz(float x) { return static_cast<unsigned>(x); }
inline long long __float2ll_rn(float x) { return static_cast<long long>(nearbyintf(x)); }
inline long long __float2ll_rz(float x) { return static_cast<long long>(x); }
inline int __double2int_rn(double x) { return static_cast<int>(nearbyint(x)); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }
inline double __int2double_rn(int x) { return static_cast<double>(x); }
// bf16 / half intrinsics whose host path the CUDA headers do not provide.
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __float2bfloat16(fmaf(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c)));
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
    return __nv_bfloat162(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}
inline int __bfloat162int_rn(__nv_bfloat16 h) { return __float2int_rn(__bfloat162float(h)); }
inline __half __hfma(__half a, __half b, __half c) {
    return __float2half(fmaf(__half2float(a), __half2float(b), __half2float(c)));
}

// ---- Integer intrinsics.
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
    return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) | __brev(static_cast<unsigned>(x >> 32));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<int64_t>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32); }
inline long long __mul64hi(long long a, long long b) { return static_cast<long long>((static_cast<__int128>(a) * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) { return ((a << 8) >> 8) * ((b << 8) >> 8); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline unsigned __sad(int x, int y, unsigned z) { return z + static_cast<unsigned>(x > y ? x - y : y - x); }
inline unsigned __usad(unsigned x, unsigned y, unsigned z) { return z + (x > y ? x - y : y - x); }
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
    return static_cast<unsigned>(((static_cast<uint64_t>(hi) << 32 | lo) << (s & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
    return static_cast<unsigned>((static_cast<uint64_t>(hi) << 32 | lo) >> (s & 31));
}

// ---- min/max: the overload set CUDA declares for device code (mixed signedness promotes to unsigned).
#define SSLIGHT_EMU_MINMAX(R, A, B)                             \
    inline R min(A a, B b) { return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); } \
    inline R max(A a, B b) { return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); }
SSLIGHT_EMU_MINMAX(int, int, int)
SSLIGHT_EMU_MINMAX(unsigned, unsigned, unsigned)
SSLIGHT_EMU_MINMAX(unsigned, int, unsigned)
SSLIGHT_EMU_MINMAX(unsigned, unsigned, int)
SSLIGHT_EMU_MINMAX(long, long, long)
SSLIGHT_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
SSLIGHT_EMU_MINMAX(unsigned long, long, unsigned long)
SSLIGHT_EMU_MINMAX(unsigned long, unsigned long, long)
SSLIGHT_EMU_MINMAX(long long, long long, long long)
SSLIGHT_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
SSLIGHT_EMU_MINMAX(unsigned long long, long long, unsigned long long)
SSLIGHT_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef SSLIGHT_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(double a, float b) { return fmax(a, b); }
inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long llmin(long long a, long long b) { return a < b ? a : b; }
inline long long llmax(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// ---- Cache-hinted loads and stores, fences, clocks.
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }
template <class T>
inline T __ldca(const T* p) { return *p; }
template <class T>
inline T __ldcs(const T* p) { return *p; }
template <class T>
inline T __ldlu(const T* p) { return *p; }
template <class T>
inline T __ldcv(const T* p) { return *p; }
template <class T>
inline void __stcg(T* p, T v) { *p = v; }
template <class T>
inline void __stcs(T* p, T v) { *p = v; }
template <class T>
inline void __stwb(T* p, T v) { *p = v; }
template <class T>
inline void __stwt(T* p, T v) { *p = v; }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) {}
#if defined(__x86_64__) || defined(__i386__)
inline long long clock64() { return static_cast<long long>(__builtin_ia32_rdtsc()); }
#else
inline long long clock64() { return std::chrono::steady_clock::now().time_since_epoch().count(); }
#endif

// ---- Atomics. Relaxed order, as on the device; float/double/bf16/half go through compare-and-swap.
namespace sslight::emu::detail {
template <class T, class U, class F>
inline T atomic_cas_loop(T* addr, F f) {
    using Alias __attribute__((may_alias)) = U;
    Alias* p = reinterpret_cast<Alias*>(addr);
    U old = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        T o;
        std::memcpy(static_cast<void*>(&o), &old, sizeof(T));
        T n = f(o);
        U nb;
        std::memcpy(&nb, static_cast<const void*>(&n), sizeof(T));
        if (__atomic_compare_exchange_n(p, &old, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return o;
    }
}
}  // namespace sslight::emu::detail

#define SSLIGHT_EMU_ATOMIC_INT(T)                                                                                \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }                         \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }                       \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }                         \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }                           \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }                         \
    inline T atomicCAS(T* p, T compare, T v) {                                                                   \
        __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                  \
        return compare;                                                                                          \
    }                                                                                                            \
    inline T atomicMin(T* p, T v) {                                                                              \
        return ::sslight::emu::detail::atomic_cas_loop<T, T>(p, [v](T o) { return v < o ? v : o; });            \
    }                                                                                                            \
    inline T atomicMax(T* p, T v) {                                                                              \
        return ::sslight::emu::detail::atomic_cas_loop<T, T>(p, [v](T o) { return v > o ? v : o; });            \
    }
SSLIGHT_EMU_ATOMIC_INT(int)
SSLIGHT_EMU_ATOMIC_INT(unsigned)
SSLIGHT_EMU_ATOMIC_INT(unsigned long long)
SSLIGHT_EMU_ATOMIC_INT(long long)
#undef SSLIGHT_EMU_ATOMIC_INT
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline unsigned short atomicCAS(unsigned short* p, unsigned short compare, unsigned short v) {
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return compare;
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
    return ::sslight::emu::detail::atomic_cas_loop<unsigned, unsigned>(p, [limit](unsigned o) { return o >= limit ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
    return ::sslight::emu::detail::atomic_cas_loop<unsigned, unsigned>(
        p, [limit](unsigned o) { return (o == 0 || o > limit) ? limit : o - 1; });
}
inline float atomicAdd(float* p, float v) {
    return ::sslight::emu::detail::atomic_cas_loop<float, uint32_t>(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
    return ::sslight::emu::detail::atomic_cas_loop<double, uint64_t>(p, [v](double o) { return o + v; });
}
inline float atomicExch(float* p, float v) {
    return ::sslight::emu::detail::atomic_cas_loop<float, uint32_t>(p, [v](float) { return v; });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
    return ::sslight::emu::detail::atomic_cas_loop<__nv_bfloat16, uint16_t>(
        p, [v](__nv_bfloat16 o) { return __float2bfloat16(__bfloat162float(o) + __bfloat162float(v)); });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
    return ::sslight::emu::detail::atomic_cas_loop<__nv_bfloat162, uint32_t>(p, [v](__nv_bfloat162 o) {
        return __nv_bfloat162(__float2bfloat16(__bfloat162float(o.x) + __bfloat162float(v.x)),
                              __float2bfloat16(__bfloat162float(o.y) + __bfloat162float(v.y)));
    });
}
inline __half atomicAdd(__half* p, __half v) {
    return ::sslight::emu::detail::atomic_cas_loop<__half, uint16_t>(
        p, [v](__half o) { return __float2half(__half2float(o) + __half2float(v)); });
}
// The _block and _system scopes are the same operations here.
#define SSLIGHT_EMU_SCOPED(name)                                          \
    template <class... A>                                                 \
    inline auto name##_block(A... a) -> decltype(name(a...)) { return name(a...); } \
    template <class... A>                                                 \
    inline auto name##_system(A... a) -> decltype(name(a...)) { return name(a...); }
SSLIGHT_EMU_SCOPED(atomicAdd)
SSLIGHT_EMU_SCOPED(atomicSub)
SSLIGHT_EMU_SCOPED(atomicExch)
SSLIGHT_EMU_SCOPED(atomicMin)
SSLIGHT_EMU_SCOPED(atomicMax)
SSLIGHT_EMU_SCOPED(atomicCAS)
SSLIGHT_EMU_SCOPED(atomicAnd)
SSLIGHT_EMU_SCOPED(atomicOr)
SSLIGHT_EMU_SCOPED(atomicXor)
#undef SSLIGHT_EMU_SCOPED
