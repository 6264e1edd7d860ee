// CUDA depthwise convolution (NHWC, k in {3, 5}, stride in {1, 2}), f32 or bf16 storage, f32 arithmetic.
// Threads map to channel vectors (innermost, coalesced; 16-byte float4 / 8 x bf16 accesses when C allows, 4 x
// bf16 at 5x5, scalar otherwise) and each computes kTW outputs along W, reusing the input columns it loads in
// registers; the block's filter taps are staged once through shared memory into registers. Backward input is
// the transposed convolution in gather form (no atomics at stride 2); backward weight writes per-block partial
// sums [chunk, tap, C] that a second kernel sums in chunk order and ADDS (+=) into dw / dbias: deterministic.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/dwconv2d.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlockThreads = 128;  // small blocks pack the SMs better at 110-170 registers per thread
constexpr int kMaxBlockCh = 128;    // channels per block: bounds the shared filter stage and the reduction
constexpr int kReduceThreads = 256;
constexpr int kStripsPerThread = 4;  // forward/backward-input: strips a thread walks (amortises the taps)
constexpr int kTargetBlocks = 1584;  // backward-weight blocks: whole waves at 3 or 4 blocks per SM of a 132-SM
                                     // H200; shape-only, so the summation order (the result) is GPU-independent
constexpr int kRedGroup = 4;         // taps reduced per shared-memory pass in backward-weight
constexpr int kTW = 4;               // outputs per thread along W (even: the stride-2 gather needs it)
constexpr int kBand = 4;             // rows per band of the strip order (see strip_at)

__host__ __device__ constexpr int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__host__ __device__ constexpr int ceil_div(int a, int b) { return -floor_div(-a, b); }
// Resident blocks per SM asked of ptxas: 4 (<= 128 registers) when the V*(K*K+1) filter registers are few,
// else 3 (<= 168 registers, no spills for 8 x bf16 at 3x3 or 4 channels at 5x5).
__host__ __device__ constexpr int min_blocks(int V, int K) { return V * (K * K + 1) > 48 ? 3 : 4; }

// Strip s -> (output row, first column). Strips run down a band of kBand rows, then across the row's tiles,
// then to the next band, so the blockDim.y threads of a block cover a kBand x (blockDim.y / kBand) patch and
// share input rows (vertical halo) as well as halo columns in L1. False for padding strips past `rows`.
__host__ __device__ inline int64_t banded_strips(int64_t rows, int tiles) {
    return (rows + kBand - 1) / kBand * kBand * tiles;
}
__device__ __forceinline__ bool strip_at(int64_t s, int tiles, int64_t rows, int64_t& row, int& col0) {
    const int64_t per_band = static_cast<int64_t>(kBand) * tiles, band = s / per_band;
    const int rem = static_cast<int>(s - band * per_band), tile = rem / kBand;
    row = band * kBand + (rem - tile * kBand);
    col0 = tile * kTW;
    return row < rows;
}

// ---- vector loads/stores of V consecutive channels as f32 -------------------------------------------------
// bf16 -> f32 is the bit pattern shifted into the upper half (exact); f32 -> bf16 rounds to nearest even.
__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16(lo))) |
           (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16(hi))) << 16);
}

template <int V>
__device__ __forceinline__ void load_vec(const float* p, float (&o)[V]) {
    static_assert(V == 4 || V == 1, "f32 vector width is 4 or 1");
    if constexpr (V == 4) {
        const float4 q = *reinterpret_cast<const float4*>(p);
        o[0] = q.x, o[1] = q.y, o[2] = q.z, o[3] = q.w;
    } else {
        o[0] = *p;
    }
}
template <int V>
__device__ __forceinline__ void store_vec(float* p, const float (&v)[V]) {
    if constexpr (V == 4)
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else
        p[0] = v[0];
}
// V = 8 or 4 bf16 move as one uint4 / uint2 of V/2 words, each holding a (low, high) pair.
template <int V>
using Bf16Pack = std::conditional_t<V == 8, uint4, uint2>;
template <int V>
__device__ __forceinline__ void load_vec(const __nv_bfloat16* p, float (&o)[V]) {
    static_assert(V == 8 || V == 4 || V == 1, "bf16 vector width is 8, 4 or 1");
    if constexpr (V == 1) {
        o[0] = __bfloat162float(*p);
    } else {
        const Bf16Pack<V> q = *reinterpret_cast<const Bf16Pack<V>*>(p);
        const uint32_t* u = reinterpret_cast<const uint32_t*>(&q);
#pragma unroll
        for (int i = 0; i < V / 2; ++i) o[2 * i] = bf16_lo(u[i]), o[2 * i + 1] = bf16_hi(u[i]);
    }
}
template <int V>
__device__ __forceinline__ void store_vec(__nv_bfloat16* p, const float (&v)[V]) {
    if constexpr (V == 1) {
        p[0] = __float2bfloat16(v[0]);
    } else {
        Bf16Pack<V> q;
        uint32_t* u = reinterpret_cast<uint32_t*>(&q);
#pragma unroll
        for (int i = 0; i < V / 2; ++i) u[i] = pack_bf16x2(v[2 * i], v[2 * i + 1]);
        *reinterpret_cast<Bf16Pack<V>*>(p) = q;
    }
}
template <int N, int V>
__device__ __forceinline__ void fill(float (&a)[N][V], float value) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int v = 0; v < V; ++v) a[i][v] = value;
}
template <int V, class D>
__device__ __forceinline__ void load_vec_or_zero(const D* p, bool ok, float (&o)[V]) {
    if (ok) {
        load_vec<V>(p, o);
    } else {
#pragma unroll
        for (int v = 0; v < V; ++v) o[v] = 0.f;
    }
}

// Copies the block's channel slice [cb, cb + ctv) of w (C, K*K) and of bias into shared memory as
// (K*K + 1, ctv) f32 (row K*K: bias, 0 without one), then each thread takes its V channels into registers.
template <class D, int K, int V>
__device__ __forceinline__ void stage_taps(const DwConv2dParams& p, const D* w, const D* bias, int cb, int ctv,
                                           float* sw, float (&wr)[K * K + 1][V]) {
    constexpr int KK = K * K;
    const int nch = min(ctv, p.C - cb);
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, nt = blockDim.x * blockDim.y;
    const D* src = w + static_cast<int64_t>(cb) * KK;
    for (int i = tid; i < nch * KK; i += nt) {
        const int c = i / KK;
        sw[(i - c * KK) * ctv + c] = to_f32(src[i]);
    }
    for (int i = tid; i < nch; i += nt) sw[KK * ctv + i] = bias ? to_f32(bias[cb + i]) : 0.f;
    __syncthreads();
    const int cl = threadIdx.x * V;  // threads past C read unused (uninitialised) entries, then return
#pragma unroll
    for (int q = 0; q <= KK; ++q)
#pragma unroll
        for (int v = 0; v < V; ++v) wr[q][v] = sw[q * ctv + cl + v];
}

// ---- forward ----------------------------------------------------------------------------------------------
// One strip: outputs (row = b*Ho + i, columns j0 .. j0+kTW-1, channels c0 .. c0+V-1). Input columns
// j0*S - pad + m, m < (kTW-1)*S + K, are loaded once per filter row and feed every output they touch.
template <class D, int V, int K, int S>
__device__ __forceinline__ void fwd_strip(const DwConv2dParams& p, const D* __restrict__ x, D* __restrict__ y,
                                          const float (&wr)[K * K + 1][V], const float* sbias, int64_t row,
                                          int j0, int c0) {
    constexpr int NC = (kTW - 1) * S + K;
    const int64_t b = row / p.Ho;
    const int i = static_cast<int>(row - b * p.Ho);
    float acc[kTW][V];  // the bias is re-read from shared memory: V registers fewer than keeping wr[K*K]
#pragma unroll
    for (int t = 0; t < kTW; ++t)
#pragma unroll
        for (int v = 0; v < V; ++v) acc[t][v] = sbias[v];
    const int iw0 = j0 * S - p.pad;
#pragma unroll
    for (int u = 0; u < K; ++u) {
        const int ih = i * S - p.pad + u;
        if (ih < 0 || ih >= p.H) continue;
        const D* xrow = x + ((b * p.H + ih) * p.W) * p.C + c0;
#pragma unroll
        for (int m = 0; m < NC; ++m) {
            const int iw = iw0 + m;
            float col[V];
            load_vec_or_zero<V>(xrow + static_cast<int64_t>(iw) * p.C, iw >= 0 && iw < p.W, col);
#pragma unroll
            for (int t = 0; t < kTW; ++t) {
                const int v_tap = m - t * S;
                if (v_tap < 0 || v_tap >= K) continue;
#pragma unroll
                for (int v = 0; v < V; ++v) acc[t][v] = fmaf(wr[u * K + v_tap][v], col[v], acc[t][v]);
            }
        }
    }
    D* yp = y + (row * p.Wo + j0) * p.C + c0;
#pragma unroll
    for (int t = 0; t < kTW; ++t)
        if (j0 + t < p.Wo) store_vec<V>(yp + static_cast<int64_t>(t) * p.C, acc[t]);
}

template <class D, int V, int K, int S>
__global__ void __launch_bounds__(kBlockThreads, min_blocks(V, K))
    dwconv2d_fwd_kernel(DwConv2dParams p, const D* __restrict__ x, const D* __restrict__ w,
                        const D* __restrict__ bias, D* __restrict__ y) {
    __shared__ float sw[(K * K + 1) * kMaxBlockCh];
    const int ctv = blockDim.x * V, cb = blockIdx.x * ctv, c0 = cb + threadIdx.x * V;
    float wr[K * K + 1][V];
    stage_taps<D, K, V>(p, w, bias, cb, ctv, sw, wr);
    if (c0 >= p.C) return;
    const int tiles = (p.Wo + kTW - 1) / kTW;
    const int64_t rows = static_cast<int64_t>(p.B) * p.Ho, strips = banded_strips(rows, tiles);
    const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.y;
    for (int64_t s = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; s < strips; s += step) {
        int64_t row;
        int j0;
        if (strip_at(s, tiles, rows, row, j0))
            fwd_strip<D, V, K, S>(p, x, y, wr, sw + K * K * ctv + threadIdx.x * V, row, j0, c0);
    }
}

// ---- backward input (transposed convolution, gather form) --------------------------------------------------
// dx[b, h, w0+t, c] = sum over taps (u, v) with (h + pad - u) and (w0 + t + pad - v) divisible by S of
// w[c, u, v] * dy[b, (h + pad - u) / S, (w0 + t + pad - v) / S, c]. With w0 a multiple of kTW (even) the
// residue QR = (w0 + pad) mod S is the same for every thread, so the dy columns a strip needs,
// (w0 + pad - QR) / S + m for m in [MLO, MHI], and which (t, v) uses which, are compile-time.
template <class D, int V, int K, int S, int QR>
__device__ __forceinline__ void bwd_input_strip(const DwConv2dParams& p, const D* __restrict__ dy,
                                                D* __restrict__ dx, const float (&wr)[K * K + 1][V], int64_t row,
                                                int w0, int c0) {
    constexpr int MLO = ceil_div(QR - (K - 1), S), MHI = floor_div(QR + kTW - 1, S), NC = MHI - MLO + 1;
    const int64_t b = row / p.H;
    const int h = static_cast<int>(row - b * p.H);
    const int q0 = (w0 + p.pad - QR) / S + MLO;  // dy column of m = 0
    float acc[kTW][V];
    fill(acc, 0.f);
#pragma unroll
    for (int u = 0; u < K; ++u) {
        const int num = h + p.pad - u;
        if (num < 0 || num % S != 0 || num / S >= p.Ho) continue;
        const D* grow = dy + ((b * p.Ho + num / S) * p.Wo) * p.C + c0;
        float cols[NC][V];
#pragma unroll
        for (int m = 0; m < NC; ++m) {
            const int q = q0 + m;
            load_vec_or_zero<V>(grow + static_cast<int64_t>(q) * p.C, q >= 0 && q < p.Wo, cols[m]);
        }
#pragma unroll
        for (int t = 0; t < kTW; ++t)
#pragma unroll
            for (int v_tap = 0; v_tap < K; ++v_tap) {
                const int d = QR + t - v_tap;  // compile-time after unrolling
                if (floor_div(d, S) * S != d) continue;
                const int m = floor_div(d, S) - MLO;
#pragma unroll
                for (int v = 0; v < V; ++v) acc[t][v] = fmaf(wr[u * K + v_tap][v], cols[m][v], acc[t][v]);
            }
    }
    D* xp = dx + (row * p.W + w0) * p.C + c0;
#pragma unroll
    for (int t = 0; t < kTW; ++t)
        if (w0 + t < p.W) store_vec<V>(xp + static_cast<int64_t>(t) * p.C, acc[t]);
}

template <class D, int V, int K, int S>
__global__ void __launch_bounds__(kBlockThreads, min_blocks(V, K))
    dwconv2d_bwd_input_kernel(DwConv2dParams p, const D* __restrict__ dy, const D* __restrict__ w,
                              D* __restrict__ dx) {
    __shared__ float sw[(K * K + 1) * kMaxBlockCh];
    const int ctv = blockDim.x * V, cb = blockIdx.x * ctv, c0 = cb + threadIdx.x * V;
    float wr[K * K + 1][V];
    stage_taps<D, K, V>(p, w, nullptr, cb, ctv, sw, wr);
    if (c0 >= p.C) return;
    const int tiles = (p.W + kTW - 1) / kTW;
    const int64_t rows = static_cast<int64_t>(p.B) * p.H, strips = banded_strips(rows, tiles);
    const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.y;
    const bool odd = (p.pad % S) != 0;
    for (int64_t s = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; s < strips; s += step) {
        int64_t row;
        int w0;
        if (!strip_at(s, tiles, rows, row, w0)) continue;
        if constexpr (S == 2) {
            if (odd) {
                bwd_input_strip<D, V, K, S, 1>(p, dy, dx, wr, row, w0, c0);
                continue;
            }
        }
        bwd_input_strip<D, V, K, S, 0>(p, dy, dx, wr, row, w0, c0);
    }
}

// ---- backward weight and bias -------------------------------------------------------------------------------
// One item: output row `row`, columns j0 .. j0+kTW-1. acc[u*K+v] += dy * x at tap (u, v); acc[K*K] += dy.
template <class D, int V, int K, int S>
__device__ __forceinline__ void bwd_weight_item(const DwConv2dParams& p, const D* __restrict__ x,
                                                const D* __restrict__ dy, int64_t row, int j0, int c0,
                                                float (&acc)[K * K + 1][V]) {
    constexpr int NC = (kTW - 1) * S + K;
    const int64_t b = row / p.Ho;
    const int i = static_cast<int>(row - b * p.Ho);
    float g[kTW][V];
    const D* gp = dy + (row * p.Wo + j0) * p.C + c0;
#pragma unroll
    for (int t = 0; t < kTW; ++t) {
        load_vec_or_zero<V>(gp + static_cast<int64_t>(t) * p.C, j0 + t < p.Wo, g[t]);
#pragma unroll
        for (int v = 0; v < V; ++v) acc[K * K][v] += g[t][v];
    }
    const int iw0 = j0 * S - p.pad;
#pragma unroll
    for (int u = 0; u < K; ++u) {
        const int ih = i * S - p.pad + u;
        if (ih < 0 || ih >= p.H) continue;
        const D* xrow = x + ((b * p.H + ih) * p.W) * p.C + c0;
#pragma unroll
        for (int m = 0; m < NC; ++m) {
            const int iw = iw0 + m;
            float col[V];
            load_vec_or_zero<V>(xrow + static_cast<int64_t>(iw) * p.C, iw >= 0 && iw < p.W, col);
#pragma unroll
            for (int t = 0; t < kTW; ++t) {
                const int v_tap = m - t * S;
                if (v_tap < 0 || v_tap >= K) continue;
#pragma unroll
                for (int v = 0; v < V; ++v) acc[u * K + v_tap][v] = fmaf(g[t][v], col[v], acc[u * K + v_tap][v]);
            }
        }
    }
}

// Sums acc over the block's threadIdx.y rows (fixed order) and writes ws[chunk, tap, c] for the block's
// channels, kRedGroup taps per shared-memory pass. Called by every thread of the block.
template <int V, int NT>
__device__ __forceinline__ void reduce_rows_to_workspace(const float (&acc)[NT][V], float* red, float* ws, int C,
                                                         int cb, int ctv) {
    const int R = blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x, nt = blockDim.x * blockDim.y;
#pragma unroll
    for (int g0 = 0; g0 < NT; g0 += kRedGroup) {
#pragma unroll
        for (int gi = 0; gi < kRedGroup && g0 + gi < NT; ++gi)
#pragma unroll
            for (int v = 0; v < V; ++v) red[(gi * R + threadIdx.y) * ctv + threadIdx.x * V + v] = acc[g0 + gi][v];
        __syncthreads();
        const int ncols = min(kRedGroup, NT - g0) * ctv;
        for (int col = tid; col < ncols; col += nt) {
            const int gi = col / ctv, cl = col - gi * ctv;
            const float* src = red + gi * R * ctv + cl;
            float s = 0.f;
            for (int r = 0; r < R; ++r) s += src[r * ctv];
            if (cb + cl < C) ws[static_cast<int64_t>(g0 + gi) * C + cb + cl] = s;
        }
        __syncthreads();
    }
}

// Block (x: channel vectors, y: items); blockIdx.y is the chunk of output rows [chunk*rpc, +rpc).
template <class D, int V, int K, int S>
__global__ void __launch_bounds__(kBlockThreads, min_blocks(V, K))
    dwconv2d_bwd_weight_kernel(DwConv2dParams p, const D* __restrict__ x, const D* __restrict__ dy,
                               float* __restrict__ ws, int rows_per_chunk) {
    constexpr int NT = K * K + 1;
    __shared__ float red[kRedGroup * kBlockThreads * V];
    const int ctv = blockDim.x * V, cb = blockIdx.x * ctv, c0 = cb + threadIdx.x * V;
    float acc[NT][V];
    fill(acc, 0.f);
    const int tiles = (p.Wo + kTW - 1) / kTW;
    const int64_t rows = static_cast<int64_t>(p.B) * p.Ho, r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
    const int64_t nrows = min(static_cast<int64_t>(rows_per_chunk), rows - r0), items = banded_strips(nrows, tiles);
    for (int64_t it = threadIdx.y; c0 < p.C && it < items; it += blockDim.y) {
        int64_t rl;
        int j0;
        if (strip_at(it, tiles, nrows, rl, j0)) bwd_weight_item<D, V, K, S>(p, x, dy, r0 + rl, j0, c0, acc);
    }
    reduce_rows_to_workspace<V, NT>(acc, red, ws + static_cast<int64_t>(blockIdx.y) * NT * p.C, p.C, cb, ctv);
}

// dw[c, q] += sum over chunks of ws[chunk, q, c] (q < KK), dbias[c] += ... (q == KK), with q = q0 + blockIdx.y
// (q0 = KK when only the bias is wanted). Thread (x, y) sums chunks y, y + blockDim.y, ...; then row 0 adds
// the blockDim.y partial sums in order.
template <class D>
__global__ void __launch_bounds__(kReduceThreads)
    dwconv2d_bwd_weight_reduce_kernel(int C, int KK, int chunks, int q0, const float* __restrict__ ws,
                                      D* __restrict__ dw, D* __restrict__ dbias) {
    __shared__ float red[kReduceThreads];
    const int c = blockIdx.x * blockDim.x + threadIdx.x, q = q0 + blockIdx.y;
    float s = 0.f;
    const float* src = ws + static_cast<int64_t>(q) * C + c;
    if (c < C) {
#pragma unroll 8
        for (int ch = threadIdx.y; ch < chunks; ch += blockDim.y) s += src[static_cast<int64_t>(ch) * (KK + 1) * C];
    }
    red[threadIdx.y * blockDim.x + threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y != 0 || c >= C) return;
    float total = 0.f;
    for (int r = 0; r < static_cast<int>(blockDim.y); ++r) total += red[r * blockDim.x + threadIdx.x];
    D* dst = q < KK ? dw + static_cast<int64_t>(c) * KK + q : dbias + c;
    *dst = from_f32<D>(to_f32(*dst) + total);
}

// ---- host side -----------------------------------------------------------------------------------------------
// Channels per thread: 16-byte accesses (4 x f32, 8 x bf16); bf16 5x5 uses 8 bytes so that its 26 x V filter
// registers stay affordable.
template <class D, int K>
constexpr int vec_width() {
    return sizeof(D) == 4 ? 4 : (K == 3 ? 8 : 4);  // keep in step with min_blocks
}

void check_params(const DwConv2dParams& p, const char* what) {
    if ((p.k != 3 && p.k != 5) || (p.stride != 1 && p.stride != 2) || p.pad < 0)
        throw std::runtime_error(std::string(what) + ": unsupported k=" + std::to_string(p.k) + " stride=" +
                                 std::to_string(p.stride) + " pad=" + std::to_string(p.pad) +
                                 " (supported: k in {3, 5}, stride in {1, 2}, pad >= 0)");
}

bool aligned16(const void* a, const void* b) {
    return (reinterpret_cast<uintptr_t>(a) % 16 == 0) && (reinterpret_cast<uintptr_t>(b) % 16 == 0);
}

// Channel tiling: gx blocks of ct threads, V channels each (at most kMaxBlockCh channels per block, spread
// evenly), and ry = kBlockThreads / ct thread rows.
struct Tiling {
    int ct, gx, ry;
};
Tiling channel_tiling(int C, int V) {
    const int cv = C / V, per = kMaxBlockCh / V;
    Tiling t;
    t.gx = (cv + per - 1) / per;
    t.ct = (cv + t.gx - 1) / t.gx;
    t.ry = kBlockThreads / t.ct;
    return t;
}

dim3 strip_grid(const Tiling& t, int64_t strips) {
    const int64_t gy = (strips + int64_t(t.ry) * kStripsPerThread - 1) / (int64_t(t.ry) * kStripsPerThread);
    return dim3(t.gx, static_cast<unsigned>(gy < 1 ? 1 : (gy > 65535 ? 65535 : gy)));
}

// Row chunks of backward-weight: a function of the shape only (gx = ceil(C / kMaxBlockCh) for every V).
struct Chunks {
    int chunks, rows_per_chunk;
};
Chunks weight_chunks(const DwConv2dParams& p) {
    const int64_t rows = static_cast<int64_t>(p.B) * p.Ho;
    const int gx = (p.C + kMaxBlockCh - 1) / kMaxBlockCh;
    int64_t want = (kTargetBlocks + gx - 1) / gx;
    want = want > rows ? rows : (want < 1 ? 1 : want);
    Chunks c;
    const int64_t per = (rows + want - 1) / want;
    c.rows_per_chunk = static_cast<int>((per + kBand - 1) / kBand * kBand);  // whole bands
    c.chunks = static_cast<int>((rows + c.rows_per_chunk - 1) / c.rows_per_chunk);
    return c;
}

template <int N>
using IC = std::integral_constant<int, N>;

// Calls f(IC<V>, IC<K>, IC<S>) for the runtime (k, stride) and the vector path when C and the two activation
// pointers allow it (scalar V = 1 otherwise).
template <class D, int K, class F>
void dispatch_k(const DwConv2dParams& p, bool vec, F&& f) {
    constexpr int V = vec_width<D, K>();
    if (vec)
        p.stride == 1 ? f(IC<V>{}, IC<K>{}, IC<1>{}) : f(IC<V>{}, IC<K>{}, IC<2>{});
    else
        p.stride == 1 ? f(IC<1>{}, IC<K>{}, IC<1>{}) : f(IC<1>{}, IC<K>{}, IC<2>{});
}
template <class D, class F>
void dispatch(const DwConv2dParams& p, const void* a, const void* b, F&& f) {
    const bool al = aligned16(a, b);
    if (p.k == 3)
        dispatch_k<D, 3>(p, al && p.C % vec_width<D, 3>() == 0, f);
    else
        dispatch_k<D, 5>(p, al && p.C % vec_width<D, 5>() == 0, f);
}

}  // namespace

template <class T>
void dwconv2d_fwd(const DwConv2dParams& p, const T* x, const T* w, const T* bias, T* y, Stream s) {
    check_params(p, "dwconv2d_fwd");
    if (p.B <= 0 || p.C <= 0 || p.Ho <= 0 || p.Wo <= 0) return;
    using D = dev_t<T>;
    const int64_t strips = banded_strips(static_cast<int64_t>(p.B) * p.Ho, (p.Wo + kTW - 1) / kTW);
    dispatch<D>(p, x, y, [&](auto v, auto k, auto st) {
        constexpr int V = decltype(v)::value, K = decltype(k)::value, S = decltype(st)::value;
        const Tiling t = channel_tiling(p.C, V);
        launch("dwconv2d_fwd_kernel", dwconv2d_fwd_kernel<D, V, K, S>, strip_grid(t, strips), dim3(t.ct, t.ry),
               0, s, p, dev_ptr(x), dev_ptr(w), dev_ptr(bias), dev_ptr(y));
    });
}

template <class T>
void dwconv2d_bwd_input(const DwConv2dParams& p, const T* dy, const T* w, T* dx, Stream s) {
    check_params(p, "dwconv2d_bwd_input");
    if (p.B <= 0 || p.C <= 0 || p.H <= 0 || p.W <= 0) return;
    using D = dev_t<T>;
    const int64_t strips = banded_strips(static_cast<int64_t>(p.B) * p.H, (p.W + kTW - 1) / kTW);
    dispatch<D>(p, dy, dx, [&](auto v, auto k, auto st) {
        constexpr int V = decltype(v)::value, K = decltype(k)::value, S = decltype(st)::value;
        const Tiling t = channel_tiling(p.C, V);
        launch("dwconv2d_bwd_input_kernel", dwconv2d_bwd_input_kernel<D, V, K, S>, strip_grid(t, strips),
               dim3(t.ct, t.ry), 0, s, p, dev_ptr(dy), dev_ptr(w), dev_ptr(dx));
    });
}

size_t dwconv2d_bwd_weight_workspace(const DwConv2dParams& p) {
    if (p.B <= 0 || p.C <= 0 || p.Ho <= 0 || p.Wo <= 0) return 0;
    return static_cast<size_t>(weight_chunks(p).chunks) * static_cast<size_t>(p.k * p.k + 1) * p.C;
}

template <class T>
void dwconv2d_bwd_weight(const DwConv2dParams& p, const T* x, const T* dy, T* dw, T* dbias, float* workspace,
                         Stream s) {
    check_params(p, "dwconv2d_bwd_weight");
    const int KK = p.k * p.k, cl = p.C >= 128 ? 32 : 8, q0 = dw ? 0 : KK, q1 = dbias ? KK + 1 : KK;
    if (p.B <= 0 || p.C <= 0 || p.Ho <= 0 || p.Wo <= 0 || q1 <= q0) return;
    using D = dev_t<T>;
    const int chunks = weight_chunks(p).chunks, rows_per_chunk = weight_chunks(p).rows_per_chunk;
    dispatch<D>(p, x, dy, [&](auto v, auto k, auto st) {
        constexpr int V = decltype(v)::value, K = decltype(k)::value, S = decltype(st)::value;
        const Tiling t = channel_tiling(p.C, V);
        launch("dwconv2d_bwd_weight_kernel", dwconv2d_bwd_weight_kernel<D, V, K, S>, dim3(t.gx, chunks),
               dim3(t.ct, t.ry), 0, s, p, dev_ptr(x), dev_ptr(dy), workspace, rows_per_chunk);
    });
    launch("dwconv2d_bwd_weight_reduce_kernel", dwconv2d_bwd_weight_reduce_kernel<D>,
           dim3((p.C + cl - 1) / cl, q1 - q0), dim3(cl, kReduceThreads / cl), 0, s, p.C, KK, chunks, q0,
           static_cast<const float*>(workspace), dev_ptr(dw), dev_ptr(dbias));
}

template void dwconv2d_fwd<float>(const DwConv2dParams&, const float*, const float*, const float*, float*, Stream);
template void dwconv2d_fwd<bf16>(const DwConv2dParams&, const bf16*, const bf16*, const bf16*, bf16*, Stream);
template void dwconv2d_bwd_input<float>(const DwConv2dParams&, const float*, const float*, float*, Stream);
template void dwconv2d_bwd_input<bf16>(const DwConv2dParams&, const bf16*, const bf16*, bf16*, Stream);
template void dwconv2d_bwd_weight<float>(const DwConv2dParams&, const float*, const float*, float*, float*, float*,
                                         Stream);
template void dwconv2d_bwd_weight<bf16>(const DwConv2dParams&, const bf16*, const bf16*, bf16*, bf16*, float*,
                                        Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
