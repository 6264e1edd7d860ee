// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the float
// transforms built on it: 24-bit uniforms, Box-Muller normals and erfinv. Header-only, usable from host
// code, CUDA kernels and the SIMT emulator. Every float operation is explicitly rounded (no FMA
// contraction on the GPU) and log/sin/cos/erfinv are our own polynomials, so the CPU, the emulator and the
// GPU produce bit-identical values for the same (key, counter). No gradients here.
#pragma once
#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <cmath>
#include <cstring>
#endif

#if defined(__CUDACC__)
#define SSL_HD __host__ __device__ __forceinline__
#else
#define SSL_HD inline
#endif

// Device intrinsics only in real nvcc device code; the emulator and the host use the plain formulas.
#if defined(__CUDA_ARCH__) && !defined(SSLIGHT_EMU)
#define SSL_PHILOX_DEVICE 1
#endif

namespace sslight::philox {

struct U4 {
    uint32_t v[4];
};

constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;    // round multipliers
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule increments

SSL_HD uint32_t mulhi(uint32_t a, uint32_t b) {
#ifdef SSL_PHILOX_DEVICE
    return __umulhi(a, b);
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// The Random123 philox4x32 with 10 rounds: counter (4 words), key (2 words) -> 4 random words.
SSL_HD U4 philox4x32_10(U4 c, uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; ++r) {
        const uint32_t hi0 = mulhi(kMul0, c.v[0]), lo0 = kMul0 * c.v[0];
        const uint32_t hi1 = mulhi(kMul1, c.v[2]), lo1 = kMul1 * c.v[2];
        c = U4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
        k0 += kWeyl0;
        k1 += kWeyl1;
    }
    return c;
}

// Block `block` of the sequence keyed (seed, stream): element g of a fill is lane g % 4 of block g / 4.
SSL_HD U4 block(uint64_t seed, uint64_t stream, uint64_t block_index) {
    const U4 c{{static_cast<uint32_t>(block_index), static_cast<uint32_t>(block_index >> 32),
                static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}};
    return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// ---- explicitly rounded float arithmetic (identical on host, emulator and GPU) ---------------------------
SSL_HD float fmul(float a, float b) {
#ifdef SSL_PHILOX_DEVICE
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
SSL_HD float fadd(float a, float b) {
#ifdef SSL_PHILOX_DEVICE
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
SSL_HD float fsqrt(float a) {
#ifdef SSL_PHILOX_DEVICE
    return __fsqrt_rn(a);
#else
    return std::sqrt(a);
#endif
}
SSL_HD float horner(float acc, float x, float c) { return fadd(fmul(acc, x), c); }  // acc * x + c
SSL_HD uint32_t float_bits(float f) {
#ifdef SSL_PHILOX_DEVICE
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
#endif
}
SSL_HD float bits_float(uint32_t u) {
#ifdef SSL_PHILOX_DEVICE
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}

// ---- uniforms --------------------------------------------------------------------------------------------
constexpr float kTwoM24 = 5.9604644775390625e-08f;  // 2^-24
// [0, 1) with 24 random bits (exact: k * 2^-24).
SSL_HD float uniform01(uint32_t x) { return static_cast<float>(x >> 8) * kTwoM24; }
// (0, 1] with 24 random bits.
SSL_HD float uniform01_open_low(uint32_t x) { return static_cast<float>((x >> 8) + 1u) * kTwoM24; }

// ---- log, sin/cos, erfinv (Cephes-style polynomials, ~1-2 ulp) -----------------------------------------
// Natural log of a positive normal float (our inputs lie in [2^-24, 1]); 0 gives -inf.
SSL_HD float log_f(float v) {
    const uint32_t u = float_bits(v);
    if ((u & 0x7fffffffu) == 0) return -bits_float(0x7f800000u);
    int e = static_cast<int>((u >> 23) & 0xffu) - 126;
    float x = bits_float((u & 0x007fffffu) | 0x3f000000u);  // mantissa in [0.5, 1)
    if (x < 0.707106781186547524f) {
        e -= 1;
        x = fadd(fadd(x, x), -1.0f);
    } else {
        x = fadd(x, -1.0f);
    }
    const float z = fmul(x, x);
    float y = 7.0376836292e-2f;
    y = horner(y, x, -1.1514610310e-1f);
    y = horner(y, x, 1.1676998740e-1f);
    y = horner(y, x, -1.2420140846e-1f);
    y = horner(y, x, 1.4249322787e-1f);
    y = horner(y, x, -1.6668057665e-1f);
    y = horner(y, x, 2.0000714765e-1f);
    y = horner(y, x, -2.4999993993e-1f);
    y = horner(y, x, 3.3333331174e-1f);
    y = fmul(fmul(y, x), z);
    const float fe = static_cast<float>(e);
    y = fadd(y, fmul(-2.12194440e-4f, fe));
    y = fadd(y, fmul(-0.5f, z));
    return fadd(fadd(x, y), fmul(0.693359375f, fe));
}

struct SinCos {
    float s, c;
};
// sin and cos of 2 pi w / 2^32: exact reduction to a quadrant in integers, then polynomials on
// [-pi/4, pi/4].
SSL_HD SinCos sincos_turn(uint32_t w) {
    const uint32_t shifted = w + (1u << 29);
    const uint32_t quadrant = shifted >> 30;
    const int32_t r = static_cast<int32_t>(shifted & ((1u << 30) - 1u)) - (1 << 29);  // [-2^29, 2^29)
    const float x = fmul(static_cast<float>(r), 1.46291807926715968e-09f);            // (pi / 2) / 2^30
    const float z = fmul(x, x);
    float ps = -1.9515295891e-4f;
    ps = horner(ps, z, 8.3321608736e-3f);
    ps = horner(ps, z, -1.6666654611e-1f);
    const float s = fadd(fmul(fmul(ps, z), x), x);
    float pc = 2.443315711809948e-5f;
    pc = horner(pc, z, -1.388731625493765e-3f);
    pc = horner(pc, z, 4.166664568298827e-2f);
    const float c = fadd(fadd(fmul(fmul(pc, z), z), fmul(-0.5f, z)), 1.0f);
    switch (quadrant) {
        case 0: return {s, c};
        case 1: return {c, -s};
        case 2: return {-s, -c};
        default: return {-c, s};
    }
}

// Two independent standard normals from two random words (Box-Muller): {r cos t, r sin t}.
SSL_HD SinCos box_muller(uint32_t a, uint32_t b) {
    const float r = fsqrt(fmul(-2.0f, log_f(uniform01_open_low(a))));
    const SinCos t = sincos_turn(b);
    return {fmul(r, t.c), fmul(r, t.s)};
}

// Lane `lane` (0..3) of the four normals of one Philox block.
SSL_HD float normal_lane(const U4& bits, int lane) {
    const SinCos z = lane < 2 ? box_muller(bits.v[0], bits.v[1]) : box_muller(bits.v[2], bits.v[3]);
    return (lane & 1) ? z.s : z.c;
}

// Inverse error function on (-1, 1) (M. Giles, "Approximating the erfinv function", 2010, single
// precision); the argument is clamped to +-(1 - 2^-24).
SSL_HD float erfinv_f(float x) {
    const float lim = 0.99999994f;
    x = x > lim ? lim : (x < -lim ? -lim : x);
    float w = -log_f(fmul(fadd(1.0f, -x), fadd(1.0f, x)));
    float p;
    if (w < 5.0f) {
        w = fadd(w, -2.5f);
        p = 2.81022636e-08f;
        p = horner(p, w, 3.43273939e-07f);
        p = horner(p, w, -3.5233877e-06f);
        p = horner(p, w, -4.39150654e-06f);
        p = horner(p, w, 0.00021858087f);
        p = horner(p, w, -0.00125372503f);
        p = horner(p, w, -0.00417768164f);
        p = horner(p, w, 0.246640727f);
        p = horner(p, w, 1.50140941f);
    } else {
        w = fadd(fsqrt(w), -3.0f);
        p = -0.000200214257f;
        p = horner(p, w, 0.000100950558f);
        p = horner(p, w, 0.00134934322f);
        p = horner(p, w, -0.00367342844f);
        p = horner(p, w, 0.00573950773f);
        p = horner(p, w, -0.0076224613f);
        p = horner(p, w, 0.00943887047f);
        p = horner(p, w, 1.00167406f);
        p = horner(p, w, 2.83297682f);
    }
    return fmul(p, x);
}

}  // namespace sslight::philox
