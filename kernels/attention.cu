// CUDA fused self-attention (kernels/attention.h), flash-style, f32 or bf16 storage with f32 arithmetic, plain SIMT
// code (no tensor cores: the emulator runs it). Forward: a block owns BQ queries of one (batch, head), walks the keys
// in BK tiles staged in shared memory and keeps the online softmax (max m, sum l, rescaled output) in registers; only
// O and lse reach memory. Backward: Dsum = rowsum(dO ∘ O); dk/dv with one block per key tile looping over all
// queries (P recomputed from lse); dq with one block per query tile looping over all keys. No atomics. Products are
// register-tiled GEMMs on k-major shared-memory operands; head dims are zero-padded to DP in {32, 64, 128}.
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/attention.h"
#include "kernels/common.cuh"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

// ---- 4-element global loads/stores as f32 (f32: one float4; bf16: one uint2 of two bf16 pairs) ----------------
__device__ __forceinline__ void load4(const float* p, float (&o)[4]) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
}
__device__ __forceinline__ void load4(const __nv_bfloat16* p, float (&o)[4]) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    o[0] = __uint_as_float(u.x << 16), o[1] = __uint_as_float(u.x & 0xffff0000u);
    o[2] = __uint_as_float(u.y << 16), o[3] = __uint_as_float(u.y & 0xffff0000u);
}
__device__ __forceinline__ void store4(float* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16(lo))) |
           (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16(hi))) << 16);
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, const float (&v)[4]) {
    *reinterpret_cast<uint2*>(p) = make_uint2(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]));
}

// ---- shared-memory vectors of V in {1, 2, 4} floats -----------------------------------------------------------
template <int V>
__device__ __forceinline__ void lds(const float* p, float* o) {
    if constexpr (V == 4) {
        const float4 v = *reinterpret_cast<const float4*>(p);
        o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
    } else if constexpr (V == 2) {
        const float2 v = *reinterpret_cast<const float2*>(p);
        o[0] = v.x, o[1] = v.y;
    } else {
        o[0] = *p;
    }
}
template <int V>
__device__ __forceinline__ void sts(float* p, const float* v) {
    if constexpr (V == 4) *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else if constexpr (V == 2) *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
    else *p = v[0];
}

// ---- register tiles -------------------------------------------------------------------------------------------
// An M x N product tile over NT threads: thread t is (rg, cg) = (t / G, t % G), so the G column groups of a row
// group are consecutive lanes. It owns rows rg*TM .. rg*TM + TM-1 and columns q*G*V + cg*V + e (q < TN/V, e < V):
// neighbouring lanes read neighbouring column vectors, so shared-memory row reads are conflict-free.
template <int M, int N, int NT, int G_>
struct Tile {
    static constexpr int G = G_, R = NT / G, TM = M / R, TN = N / G, V = TN < 4 ? TN : 4, VA = TM < 4 ? TM : 4;
    static_assert(NT % G == 0 && 32 % G == 0 && M % R == 0 && N % G == 0 && TN % V == 0 && TM % VA == 0,
                  "the tile does not divide among the threads");
    __device__ static int col(int cg, int c) { return (c / V) * G * V + cg * V + c % V; }
};

// acc[i][c] += sum_{k < K} A[k * lda + rg*TM + i] * B[k * ldb + col(cg, c)]: both operands k-major in shared memory.
template <class Tl>
__device__ __forceinline__ void mma(float (&acc)[Tl::TM][Tl::TN], const float* A, int lda, const float* B, int ldb,
                                    int K, int rg, int cg) {
    const float* a = A + rg * Tl::TM;
    const float* b = B + cg * Tl::V;
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
        float av[Tl::TM], bv[Tl::TN];
#pragma unroll
        for (int i = 0; i < Tl::TM; i += Tl::VA) lds<Tl::VA>(a + k * lda + i, av + i);
#pragma unroll
        for (int c = 0; c < Tl::TN; c += Tl::V) lds<Tl::V>(b + k * ldb + (c / Tl::V) * Tl::G * Tl::V, bv + c);
#pragma unroll
        for (int i = 0; i < Tl::TM; ++i)
#pragma unroll
            for (int c = 0; c < Tl::TN; ++c) acc[i][c] = fmaf(av[i], bv[c], acc[i][c]);
    }
}

// Writes the tile transposed into shared memory: dst[col * ld + row] (the k-major operand of the next product).
template <class Tl>
__device__ __forceinline__ void store_t(const float (&x)[Tl::TM][Tl::TN], float* dst, int ld, int rg, int cg) {
#pragma unroll
    for (int c = 0; c < Tl::TN; ++c)
#pragma unroll
        for (int i = 0; i < Tl::TM; i += Tl::VA) {
            float v[Tl::VA];
#pragma unroll
            for (int e = 0; e < Tl::VA; ++e) v[e] = x[i + e][c];
            sts<Tl::VA>(dst + Tl::col(cg, c) * ld + rg * Tl::TM + i, v);
        }
}

// Rows r0 + rg*TM + i < T of the tile times mul[i] to global memory: dst[row * st + col] for columns col < D.
template <class Tl, class D_>
__device__ __forceinline__ void write_rows(const float (&x)[Tl::TM][Tl::TN], const float (&mul)[Tl::TM], D_* dst,
                                           int64_t st, int r0, int T, int D, int rg, int cg) {
    static_assert(Tl::V == 4, "rows are written in vectors of 4");
#pragma unroll
    for (int i = 0; i < Tl::TM; ++i) {
        const int row = r0 + rg * Tl::TM + i;
        if (row >= T) continue;
#pragma unroll
        for (int c = 0; c < Tl::TN; c += 4) {
            const int d = Tl::col(cg, c);
            if (d >= D) continue;
            float v[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) v[e] = x[i][c + e] * mul[i];
            store4(dst + row * st + d, v);
        }
    }
}

template <int G>
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---- shared-memory staging of (rows, D) slices ---------------------------------------------------------------
// Leading dimension of a transposed tile of R rows: consecutive threads store consecutive rows, conflict-free
// for R >= 32; shorter tiles get 4 floats of padding (16-byte rows for the vector reads).
constexpr int ldt(int R) { return R >= 32 ? R : R + 4; }

// dst[d * ld + r] = mul * src[(r0 + r) * st + d] for r < R, d < DP; rows past T and columns past D are zero.
template <int DP, int R, int NT, class D_>
__device__ __forceinline__ void load_t(const D_* src, int64_t st, int r0, int T, int D, float mul, float* dst,
                                       int ld) {
    constexpr int total = R * DP / 4;
#pragma unroll
    for (int n = 0; n < (total + NT - 1) / NT; ++n) {
        const int idx = static_cast<int>(threadIdx.x) + n * NT;
        if (total % NT != 0 && idx >= total) break;
        const int r = idx % R, d = idx / R * 4;
        float v[4] = {0.f, 0.f, 0.f, 0.f};
        if (r0 + r < T && d < D) load4(src + (r0 + r) * st + d, v);
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[(d + e) * ld + r] = v[e] * mul;
    }
}

// dst[r * DP + d] = src[(r0 + r) * st + d], zero outside the T x D slice.
template <int DP, int R, int NT, class D_>
__device__ __forceinline__ void load_rows(const D_* src, int64_t st, int r0, int T, int D, float* dst) {
    constexpr int total = R * DP / 4;
#pragma unroll
    for (int n = 0; n < (total + NT - 1) / NT; ++n) {
        const int idx = static_cast<int>(threadIdx.x) + n * NT;
        if (total % NT != 0 && idx >= total) break;
        const int r = idx / (DP / 4), d = idx % (DP / 4) * 4;
        float v[4] = {0.f, 0.f, 0.f, 0.f};
        if (r0 + r < T && d < D) load4(src + (r0 + r) * st + d, v);
        sts<4>(dst + r * DP + d, v);
    }
}

// Per-row lse and Dsum of queries [r0, r0 + R) into shared memory.
template <int R>
__device__ __forceinline__ void load_row_stats(const float* lse, const float* dsum, int64_t bh, int r0, int T,
                                               float* slse, float* sdsum) {
    for (int r = static_cast<int>(threadIdx.x); r < R; r += static_cast<int>(blockDim.x)) {
        const bool ok = r0 + r < T;
        slse[r] = ok ? lse[bh * T + r0 + r] : 0.f;
        sdsum[r] = ok ? dsum[bh * T + r0 + r] : 0.f;
    }
}

// ---- forward ---------------------------------------------------------------------------------------------------
// Tiles per padded head dim: BQ queries per block, BK keys per step, NT threads, G column groups (static shared
// memory: 26 / 28.5 / 36 KB).
template <int DP>
struct FwdCfg;
template <>
struct FwdCfg<32> { static constexpr int BQ = 64, BK = 32, NT = 128, G = 8; };
template <>
struct FwdCfg<64> { static constexpr int BQ = 32, BK = 32, NT = 64, G = 8; };
template <>
struct FwdCfg<128> { static constexpr int BQ = 32, BK = 16, NT = 64, G = 8; };

// One key tile of the online softmax on scores s (keys >= nk masked): the running max m and the thread's partial
// row sums l are updated, the output rows rescaled, and s turned into p = exp(s - m). Differences are taken before
// the base-2 conversion, so a large score keeps its accuracy (the backward recomputes the same bits of s).
template <class TS, class TO>
__device__ __forceinline__ void online_softmax(float (&s)[TS::TM][TS::TN], float (&m)[TS::TM], float (&l)[TS::TM],
                                               float (&acc)[TO::TM][TO::TN], int nk, int cg) {
#pragma unroll
    for (int i = 0; i < TS::TM; ++i) {
        float mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < TS::TN; ++c) {
            if (TS::col(cg, c) >= nk) s[i][c] = -INFINITY;
            mx = fmaxf(mx, s[i][c]);
        }
        const float mn = fmaxf(m[i], group_max<TS::G>(mx)), alpha = exp2f((m[i] - mn) * kLog2e);
        m[i] = mn;
        float sum = 0.f;
#pragma unroll
        for (int c = 0; c < TS::TN; ++c) {
            s[i][c] = exp2f((s[i][c] - mn) * kLog2e);
            sum += s[i][c];
        }
        l[i] = l[i] * alpha + sum;
#pragma unroll
        for (int c = 0; c < TO::TN; ++c) acc[i][c] *= alpha;
    }
}

// Block = BQ queries of one (b, h) (blockIdx.x = bh * tiles + tile). qscale = scale is folded into Q.
template <class D_, int DP>
__global__ void __launch_bounds__(FwdCfg<DP>::NT)
    attn_fwd_kernel(AttentionParams p, float qscale, int tiles, const D_* __restrict__ q, const D_* __restrict__ k,
                    const D_* __restrict__ v, D_* __restrict__ o, float* __restrict__ lse) {
    using C = FwdCfg<DP>;
    using TS = Tile<C::BQ, C::BK, C::NT, C::G>;
    using TO = Tile<C::BQ, DP, C::NT, C::G>;
    static_assert(TS::TM == TO::TM, "scores and output rows must coincide");
    constexpr int LQ = ldt(C::BQ), LK = ldt(C::BK), LP = C::BQ + 4;
    __shared__ __align__(16) float sQt[DP * LQ];
    __shared__ __align__(16) float sKt[DP * LK];
    __shared__ __align__(16) float sV[C::BK * DP];
    __shared__ __align__(16) float sPt[C::BK * LP];
    const int rg = static_cast<int>(threadIdx.x) / C::G, cg = static_cast<int>(threadIdx.x) % C::G;
    const int64_t bh = blockIdx.x / tiles;
    const int q0 = static_cast<int>(blockIdx.x % tiles) * C::BQ;
    const int64_t in_off = bh / p.H * p.in_sb + bh % p.H * p.in_sh;
    load_t<DP, C::BQ, C::NT>(q + in_off, p.in_st, q0, p.T, p.D, qscale, sQt, LQ);
    float m[TS::TM], l[TS::TM], acc[TO::TM][TO::TN] = {};
#pragma unroll
    for (int i = 0; i < TS::TM; ++i) m[i] = -INFINITY, l[i] = 0.f;
    for (int k0 = 0; k0 < p.T; k0 += C::BK) {
        __syncthreads();  // the previous step's reads of sKt, sV and sPt are done
        load_t<DP, C::BK, C::NT>(k + in_off, p.in_st, k0, p.T, p.D, 1.f, sKt, LK);
        load_rows<DP, C::BK, C::NT>(v + in_off, p.in_st, k0, p.T, p.D, sV);
        __syncthreads();
        float s[TS::TM][TS::TN] = {};
        mma<TS>(s, sQt, LQ, sKt, LK, DP, rg, cg);
        const int nk = min(C::BK, p.T - k0);
        online_softmax<TS, TO>(s, m, l, acc, nk, cg);
        store_t<TS>(s, sPt, LP, rg, cg);
        __syncthreads();
        mma<TO>(acc, sPt, LP, sV, DP, nk, rg, cg);
    }
    float inv[TO::TM];
#pragma unroll
    for (int i = 0; i < TO::TM; ++i) {
        l[i] = group_sum<C::G>(l[i]);
        inv[i] = 1.f / l[i];
        const int row = q0 + rg * TO::TM + i;
        if (cg == 0 && row < p.T) lse[bh * p.T + row] = m[i] + logf(l[i]);
    }
    write_rows<TO>(acc, inv, o + bh / p.H * p.out_sb + bh % p.H * p.out_sh, p.out_st, q0, p.T, p.D, rg, cg);
}

// ---- backward --------------------------------------------------------------------------------------------------
// Dsum[row] = sum_d dout[row, d] * o[row, d]: one warp per (b, h, t) row.
template <class D_>
__global__ void attn_dsum_kernel(AttentionParams p, const D_* __restrict__ o, const D_* __restrict__ dout,
                                 float* __restrict__ dsum) {
    const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= int64_t(p.B) * p.H * p.T) return;
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int64_t bh = row / p.T, t = row % p.T;
    const int64_t off = bh / p.H * p.out_sb + bh % p.H * p.out_sh + t * p.out_st;
    float acc = 0.f;
    for (int d = lane * 4; d < p.D; d += 128) {
        float a[4], b[4];
        load4(o + off + d, a);
        load4(dout + off + d, b);
        acc += a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
    }
    acc = warp_sum(acc);
    if (lane == 0) dsum[row] = acc;
}

// dk/dv: BKV keys per block, BQ queries per step; GS / GKV column groups of the score and gradient tiles
// (static shared memory: 33 / 38.6 / 41.3 KB).
template <int DP>
struct KvCfg;
template <>
struct KvCfg<32> { static constexpr int BKV = 32, BQ = 32, NT = 128, GS = 8, GKV = 8; };
template <>
struct KvCfg<64> { static constexpr int BKV = 32, BQ = 16, NT = 128, GS = 8, GKV = 16; };
template <>
struct KvCfg<128> { static constexpr int BKV = 16, BQ = 8, NT = 64, GS = 8, GKV = 16; };

// In place: s (scores) -> P = exp(s - lse), dp (dO·v) -> dS = P (dp - Dsum). The queries are the tile's
// rows in the dq kernel and its columns in the dk/dv kernel.
template <class TS, bool QueriesAreRows>
__device__ __forceinline__ void probs_and_grads(float (&s)[TS::TM][TS::TN], float (&dp)[TS::TM][TS::TN],
                                                const float* slse, const float* sdsum, int rg, int cg) {
#pragma unroll
    for (int i = 0; i < TS::TM; ++i)
#pragma unroll
        for (int c = 0; c < TS::TN; ++c) {
            const int qi = QueriesAreRows ? rg * TS::TM + i : TS::col(cg, c);
            const float pv = exp2f((s[i][c] - slse[qi]) * kLog2e);
            s[i][c] = pv;
            dp[i][c] = pv * (dp[i][c] - sdsum[qi]);
        }
}

// Block = BKV keys of one (b, h); loops over all queries: dV += Pᵀ dO and dK += dSᵀ Q, written once at the end.
template <class D_, int DP>
__global__ void __launch_bounds__(KvCfg<DP>::NT)
    attn_bwd_kv_kernel(AttentionParams p, float qscale, int tiles, const D_* __restrict__ q,
                       const D_* __restrict__ k, const D_* __restrict__ v, const D_* __restrict__ dout,
                       const float* __restrict__ lse, const float* __restrict__ dsum, D_* __restrict__ dk,
                       D_* __restrict__ dv) {
    using C = KvCfg<DP>;
    using TS = Tile<C::BKV, C::BQ, C::NT, C::GS>;   // scores transposed: keys x queries
    using TG = Tile<C::BKV, DP, C::NT, C::GKV>;     // dK, dV: keys x head dim
    constexpr int LK = ldt(C::BKV), LQ = ldt(C::BQ), LP = C::BKV + 4;
    __shared__ __align__(16) float sKt[DP * LK], sVt[DP * LK];
    __shared__ __align__(16) float sQt[DP * LQ], sdOt[DP * LQ];
    __shared__ __align__(16) float sQ[C::BQ * DP], sdO[C::BQ * DP];
    __shared__ __align__(16) float sP[C::BQ * LP], sdS[C::BQ * LP];
    __shared__ float slse[C::BQ], sdsum[C::BQ];
    const int t = static_cast<int>(threadIdx.x);
    const int rs = t / C::GS, cs = t % C::GS, rk = t / C::GKV, ck = t % C::GKV;
    const int64_t bh = blockIdx.x / tiles;
    const int j0 = static_cast<int>(blockIdx.x % tiles) * C::BKV;
    const int64_t in_off = bh / p.H * p.in_sb + bh % p.H * p.in_sh;
    const int64_t out_off = bh / p.H * p.out_sb + bh % p.H * p.out_sh;
    load_t<DP, C::BKV, C::NT>(k + in_off, p.in_st, j0, p.T, p.D, 1.f, sKt, LK);
    load_t<DP, C::BKV, C::NT>(v + in_off, p.in_st, j0, p.T, p.D, 1.f, sVt, LK);
    float gk[TG::TM][TG::TN] = {}, gv[TG::TM][TG::TN] = {};
    for (int i0 = 0; i0 < p.T; i0 += C::BQ) {
        __syncthreads();  // the previous step's reads are done
        load_t<DP, C::BQ, C::NT>(q + in_off, p.in_st, i0, p.T, p.D, qscale, sQt, LQ);
        load_t<DP, C::BQ, C::NT>(dout + out_off, p.out_st, i0, p.T, p.D, 1.f, sdOt, LQ);
        load_rows<DP, C::BQ, C::NT>(q + in_off, p.in_st, i0, p.T, p.D, sQ);
        load_rows<DP, C::BQ, C::NT>(dout + out_off, p.out_st, i0, p.T, p.D, sdO);
        load_row_stats<C::BQ>(lse, dsum, bh, i0, p.T, slse, sdsum);
        __syncthreads();
        float s[TS::TM][TS::TN] = {}, dp[TS::TM][TS::TN] = {};
        mma<TS>(s, sKt, LK, sQt, LQ, DP, rs, cs);
        mma<TS>(dp, sVt, LK, sdOt, LQ, DP, rs, cs);
        probs_and_grads<TS, false>(s, dp, slse, sdsum, rs, cs);
        store_t<TS>(s, sP, LP, rs, cs);
        store_t<TS>(dp, sdS, LP, rs, cs);
        __syncthreads();
        const int nq = min(C::BQ, p.T - i0);
        mma<TG>(gv, sP, LP, sdO, DP, nq, rk, ck);
        mma<TG>(gk, sdS, LP, sQ, DP, nq, rk, ck);
    }
    float one[TG::TM], sc[TG::TM];
#pragma unroll
    for (int i = 0; i < TG::TM; ++i) one[i] = 1.f, sc[i] = static_cast<float>(p.scale);
    if (dk) write_rows<TG>(gk, sc, dk + in_off, p.in_st, j0, p.T, p.D, rk, ck);
    if (dv) write_rows<TG>(gv, one, dv + in_off, p.in_st, j0, p.T, p.D, rk, ck);
}

// dq: BQ queries per block, BKV keys per step (static shared memory: 37 / 44.8 / 36.8 KB).
template <int DP>
struct QCfg;
template <>
struct QCfg<32> { static constexpr int BQ = 64, BKV = 32, NT = 128, GS = 8, GQ = 8; };
template <>
struct QCfg<64> { static constexpr int BQ = 32, BKV = 32, NT = 128, GS = 8, GQ = 16; };
template <>
struct QCfg<128> { static constexpr int BQ = 16, BKV = 8, NT = 64, GS = 8, GQ = 16; };

// Block = BQ queries of one (b, h); loops over all keys: dQ += dS K, written once (times scale) at the end.
template <class D_, int DP>
__global__ void __launch_bounds__(QCfg<DP>::NT)
    attn_bwd_q_kernel(AttentionParams p, float qscale, int tiles, const D_* __restrict__ q,
                      const D_* __restrict__ k, const D_* __restrict__ v, const D_* __restrict__ dout,
                      const float* __restrict__ lse, const float* __restrict__ dsum, D_* __restrict__ dq) {
    using C = QCfg<DP>;
    using TS = Tile<C::BQ, C::BKV, C::NT, C::GS>;  // scores: queries x keys
    using TG = Tile<C::BQ, DP, C::NT, C::GQ>;      // dQ: queries x head dim
    constexpr int LQ = ldt(C::BQ), LK = ldt(C::BKV), LP = C::BQ + 4;
    __shared__ __align__(16) float sQt[DP * LQ], sdOt[DP * LQ];
    __shared__ __align__(16) float sKt[DP * LK], sVt[DP * LK];
    __shared__ __align__(16) float sK[C::BKV * DP], sdSt[C::BKV * LP];
    __shared__ float slse[C::BQ], sdsum[C::BQ];
    const int t = static_cast<int>(threadIdx.x);
    const int rs = t / C::GS, cs = t % C::GS, rq = t / C::GQ, cq = t % C::GQ;
    const int64_t bh = blockIdx.x / tiles;
    const int i0 = static_cast<int>(blockIdx.x % tiles) * C::BQ;
    const int64_t in_off = bh / p.H * p.in_sb + bh % p.H * p.in_sh;
    load_t<DP, C::BQ, C::NT>(q + in_off, p.in_st, i0, p.T, p.D, qscale, sQt, LQ);
    load_t<DP, C::BQ, C::NT>(dout + bh / p.H * p.out_sb + bh % p.H * p.out_sh, p.out_st, i0, p.T, p.D, 1.f, sdOt, LQ);
    load_row_stats<C::BQ>(lse, dsum, bh, i0, p.T, slse, sdsum);
    float g[TG::TM][TG::TN] = {};
    for (int j0 = 0; j0 < p.T; j0 += C::BKV) {
        __syncthreads();  // the previous step's reads are done
        load_t<DP, C::BKV, C::NT>(k + in_off, p.in_st, j0, p.T, p.D, 1.f, sKt, LK);
        load_t<DP, C::BKV, C::NT>(v + in_off, p.in_st, j0, p.T, p.D, 1.f, sVt, LK);
        load_rows<DP, C::BKV, C::NT>(k + in_off, p.in_st, j0, p.T, p.D, sK);
        __syncthreads();
        float s[TS::TM][TS::TN] = {}, dp[TS::TM][TS::TN] = {};
        mma<TS>(s, sQt, LQ, sKt, LK, DP, rs, cs);
        mma<TS>(dp, sdOt, LQ, sVt, LK, DP, rs, cs);
        probs_and_grads<TS, true>(s, dp, slse, sdsum, rs, cs);
        store_t<TS>(dp, sdSt, LP, rs, cs);
        __syncthreads();
        mma<TG>(g, sdSt, LP, sK, DP, min(C::BKV, p.T - j0), rq, cq);
    }
    float sc[TG::TM];
#pragma unroll
    for (int i = 0; i < TG::TM; ++i) sc[i] = static_cast<float>(p.scale);
    write_rows<TG>(g, sc, dq + in_off, p.in_st, i0, p.T, p.D, rq, cq);
}

// ---- host side -------------------------------------------------------------------------------------------------
int padded_dim(int D) { return D <= 32 ? 32 : (D <= 64 ? 64 : 128); }

template <class T>
void check_args(const AttentionParams& p, const char* what, std::initializer_list<const void*> ptrs) {
    auto fail = [&](const std::string& why) { throw std::invalid_argument(std::string(what) + ": " + why); };
    if (p.D < 8 || p.D > 128 || p.D % 8 != 0)
        fail("head dim D = " + std::to_string(p.D) + " is not supported (a multiple of 8, at most 128)");
    for (int64_t st : {p.in_sb, p.in_sh, p.in_st, p.out_sb, p.out_sh, p.out_st})
        if (st % 4 != 0) fail("strides must be multiples of 4 elements");
    for (const void* ptr : ptrs)
        if (reinterpret_cast<uintptr_t>(ptr) % (4 * sizeof(T)) != 0)
            fail("pointers must be aligned to " + std::to_string(4 * sizeof(T)) + " bytes");
    if (int64_t(p.B) * p.H * ((p.T + 7) / 8) > (int64_t(1) << 31) - 1) fail("too many (batch, head, tile) blocks");
}

template <class T, int DP>
void fwd_dp(const AttentionParams& p, const T* q, const T* k, const T* v, T* o, float* lse, Stream s) {
    using C = FwdCfg<DP>;
    const int tiles = (p.T + C::BQ - 1) / C::BQ;
    launch("attention_fwd", attn_fwd_kernel<dev_t<T>, DP>, dim3(unsigned(int64_t(p.B) * p.H * tiles)), dim3(C::NT),
           0, s, p, float(p.scale), tiles, dev_ptr(q), dev_ptr(k), dev_ptr(v), dev_ptr(o), lse);
}

template <class T, int DP>
void bwd_dp(const AttentionParams& p, const T* q, const T* k, const T* v, const T* dout, const float* lse,
            const float* dsum, T* dq, T* dk, T* dv, Stream s) {
    const float qscale = float(p.scale);
    if (dk || dv) {
        using C = KvCfg<DP>;
        const int tiles = (p.T + C::BKV - 1) / C::BKV;
        launch("attention_bwd_dkdv", attn_bwd_kv_kernel<dev_t<T>, DP>, dim3(unsigned(int64_t(p.B) * p.H * tiles)),
               dim3(C::NT), 0, s, p, qscale, tiles, dev_ptr(q), dev_ptr(k), dev_ptr(v), dev_ptr(dout), lse, dsum,
               dev_ptr(dk), dev_ptr(dv));
    }
    if (dq) {
        using C = QCfg<DP>;
        const int tiles = (p.T + C::BQ - 1) / C::BQ;
        launch("attention_bwd_dq", attn_bwd_q_kernel<dev_t<T>, DP>, dim3(unsigned(int64_t(p.B) * p.H * tiles)),
               dim3(C::NT), 0, s, p, qscale, tiles, dev_ptr(q), dev_ptr(k), dev_ptr(v), dev_ptr(dout), lse, dsum,
               dev_ptr(dq));
    }
}

}  // namespace

template <class T>
void attention_fwd(const AttentionParams& p, const T* q, const T* k, const T* v, T* o, float* lse, Stream s) {
    if (int64_t(p.B) * p.H * p.T == 0) return;
    check_args<T>(p, "attention_fwd", {q, k, v, o});
    switch (padded_dim(p.D)) {
        case 32: return fwd_dp<T, 32>(p, q, k, v, o, lse, s);
        case 64: return fwd_dp<T, 64>(p, q, k, v, o, lse, s);
        default: return fwd_dp<T, 128>(p, q, k, v, o, lse, s);
    }
}

size_t attention_bwd_workspace(const AttentionParams& p) { return size_t(p.B) * size_t(p.H) * size_t(p.T); }

template <class T>
void attention_bwd(const AttentionParams& p, const T* q, const T* k, const T* v, const T* o, const T* dout,
                   const float* lse, T* dq, T* dk, T* dv, float* workspace, Stream s) {
    const int64_t rows = int64_t(p.B) * p.H * p.T;
    if (rows == 0 || (!dq && !dk && !dv)) return;
    check_args<T>(p, "attention_bwd", {q, k, v, o, dout, dq, dk, dv});
    constexpr int kRowsPerBlock = 8;
    launch("attention_bwd_dsum", attn_dsum_kernel<dev_t<T>>, dim3(unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock)),
           dim3(32 * kRowsPerBlock), 0, s, p, dev_ptr(o), dev_ptr(dout), workspace);
    switch (padded_dim(p.D)) {
        case 32: return bwd_dp<T, 32>(p, q, k, v, dout, lse, workspace, dq, dk, dv, s);
        case 64: return bwd_dp<T, 64>(p, q, k, v, dout, lse, workspace, dq, dk, dv, s);
        default: return bwd_dp<T, 128>(p, q, k, v, dout, lse, workspace, dq, dk, dv, s);
    }
}

template void attention_fwd<float>(const AttentionParams&, const float*, const float*, const float*, float*, float*,
                                   Stream);
template void attention_fwd<bf16>(const AttentionParams&, const bf16*, const bf16*, const bf16*, bf16*, float*,
                                  Stream);
template void attention_bwd<float>(const AttentionParams&, const float*, const float*, const float*, const float*,
                                   const float*, const float*, float*, float*, float*, float*, Stream);
template void attention_bwd<bf16>(const AttentionParams&, const bf16*, const bf16*, const bf16*, const bf16*,
                                  const bf16*, const float*, bf16*, bf16*, bf16*, float*, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
