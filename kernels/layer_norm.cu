// CUDA layer normalisation over the last dim, f32 math on f32 or bf16 storage. Forward and the dx backward:
// one warp per row (C <= 1024, e.g. ViT widths 192/384) or one block per row, two-pass mean/variance over
// the (cached) row. dw/db: 32x8 blocks over (row chunk, 32-column tile) write partial sums to a workspace —
// lanes read 32 consecutive columns (coalesced), the 8 warps stride over rows — and a second kernel sums
// the partials over chunks in order and adds them to dw/db (deterministic, no atomics).
#include "kernels/common.cuh"
#include "kernels/layer_norm.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kRowsPerBlock = 8;
constexpr int64_t kWarpRowMax = 1024;
constexpr int kColX = 32, kColY = 8;
constexpr int kBlock = 256;


template <class T>
__device__ __forceinline__ float load_or(const T* p, int64_t i, float dflt) {
    return p ? to_f32(p[i]) : dflt;
}

template <class T, bool BlockRow>
__global__ void layer_norm_fwd_kernel(const T* x, const T* w, const T* b, T* y, float* mean, float* rstd,
                                      int64_t rows, int64_t C, float eps) {
    __shared__ float scratch[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        const T* xr = x + r * C;
        float s = 0.f;
        for (int64_t c = g.lane; c < C; c += g.width) s += to_f32(xr[c]);
        const float m = group_sum<BlockRow>(s, scratch) / (float)C;
        float v = 0.f;
        for (int64_t c = g.lane; c < C; c += g.width) {
            const float d = to_f32(xr[c]) - m;
            v += d * d;
        }
        const float rs = 1.f / sqrtf(group_sum<BlockRow>(v, scratch) / (float)C + eps);
        for (int64_t c = g.lane; c < C; c += g.width)
            y[r * C + c] = from_f32<T>((to_f32(xr[c]) - m) * rs * load_or(w, c, 1.f) + load_or(b, c, 0.f));
        if (g.lane == 0) mean[r] = m, rstd[r] = rs;
    }
}

template <class T, bool BlockRow>
__global__ void layer_norm_dx_kernel(const T* x, const T* w, const float* mean, const float* rstd, const T* dy,
                                     T* dx, int64_t rows, int64_t C) {
    __shared__ float scratch[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        const float m = mean[r], rs = rstd[r];
        float a = 0.f, bs = 0.f;
        for (int64_t c = g.lane; c < C; c += g.width) {
            const float gv = to_f32(dy[r * C + c]) * load_or(w, c, 1.f);
            a += gv;
            bs += gv * (to_f32(x[r * C + c]) - m) * rs;
        }
        a = group_sum<BlockRow>(a, scratch) / (float)C;
        bs = group_sum<BlockRow>(bs, scratch) / (float)C;
        for (int64_t c = g.lane; c < C; c += g.width) {
            const float gv = to_f32(dy[r * C + c]) * load_or(w, c, 1.f);
            const float xh = (to_f32(x[r * C + c]) - m) * rs;
            dx[r * C + c] = from_f32<T>(rs * (gv - a - xh * bs));
        }
    }
}

// Partial dw/db over rows [sp*chunk, (sp+1)*chunk) of one 32-column tile. work: dw partials (splits, C)
// followed by db partials (splits, C).
template <class T>
__global__ void layer_norm_dparams_kernel(const T* x, const float* mean, const float* rstd, const T* dy, float* work,
                                          int64_t rows, int64_t C, int64_t splits, int64_t chunk) {
    __shared__ float pw[kColY][kColX + 1], pb[kColY][kColX + 1];
    const int64_t tiles = (C + kColX - 1) / kColX, jobs = splits * tiles;
    for (int64_t j = blockIdx.x; j < jobs; j += gridDim.x) {
        const int64_t tile = j % tiles, sp = j / tiles, c = tile * kColX + threadIdx.x;
        const int64_t r1 = (sp + 1) * chunk < rows ? (sp + 1) * chunk : rows;
        float aw = 0.f, ab = 0.f;
        if (c < C) {
            for (int64_t r = sp * chunk + threadIdx.y; r < r1; r += kColY) {
                const float gv = to_f32(dy[r * C + c]);
                aw += gv * (to_f32(x[r * C + c]) - mean[r]) * rstd[r];
                ab += gv;
            }
        }
        pw[threadIdx.y][threadIdx.x] = aw, pb[threadIdx.y][threadIdx.x] = ab;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float tw = 0.f, tb = 0.f;
            for (int k = 0; k < kColY; ++k) tw += pw[k][threadIdx.x], tb += pb[k][threadIdx.x];
            work[sp * C + c] = tw;
            work[(splits + sp) * C + c] = tb;
        }
        __syncthreads();
    }
}

// dw[c] += sum_sp work[sp, c]; db[c] += sum_sp work[splits + sp, c].
template <class T>
__global__ void layer_norm_dparams_final_kernel(const float* work, T* dw, T* db, int64_t C, int64_t splits) {
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x) {
        float tw = 0.f, tb = 0.f;
        for (int64_t sp = 0; sp < splits; ++sp) tw += work[sp * C + c], tb += work[(splits + sp) * C + c];
        if (dw) dw[c] = from_f32<T>(to_f32(dw[c]) + tw);
        if (db) db[c] = from_f32<T>(to_f32(db[c]) + tb);
    }
}

template <class KW, class KB, class... Args>
void launch_rows(const char* name, KW warp_kernel, KB block_kernel, int64_t rows, int64_t len, Stream s,
                 Args... args) {
    if (rows <= 0) return;
    if (len <= kWarpRowMax)
        launch(name, warp_kernel, grid_1d(rows, kRowsPerBlock), kRowsPerBlock * 32, 0, s, args...);
    else
        launch(name, block_kernel, grid_1d(rows, 1), len <= 8192 ? 256 : 1024, 0, s, args...);
}

}  // namespace

template <class T>
void layer_norm_fwd(const LayerNormParams& p, const T* x, const T* w, const T* b, T* y, float* mean, float* rstd,
                    Stream s) {
    using D = dev_t<T>;
    launch_rows("layer_norm_fwd_kernel", layer_norm_fwd_kernel<D, false>, layer_norm_fwd_kernel<D, true>, p.rows,
                p.C, s, dev_ptr(x), dev_ptr(w), dev_ptr(b), dev_ptr(y), mean, rstd, p.rows, p.C, (float)p.eps);
}

template <class T>
void layer_norm_bwd(const LayerNormParams& p, const T* x, const T* w, const float* mean, const float* rstd,
                    const T* dy, T* dx, T* dw, T* db, float* work, Stream s) {
    using D = dev_t<T>;
    if (dx)
        launch_rows("layer_norm_dx_kernel", layer_norm_dx_kernel<D, false>, layer_norm_dx_kernel<D, true>, p.rows,
                    p.C, s, dev_ptr(x), dev_ptr(w), mean, rstd, dev_ptr(dy), dev_ptr(dx), p.rows, p.C);
    if ((!dw && !db) || p.C == 0) return;
    const int64_t splits = layer_norm_bwd_splits(p), chunk = (p.rows + splits - 1) / splits;
    const int64_t jobs = splits * ((p.C + kColX - 1) / kColX);
    launch("layer_norm_dparams_kernel", layer_norm_dparams_kernel<D>, grid_1d(jobs, 1), dim3(kColX, kColY), 0, s,
           dev_ptr(x), mean, rstd, dev_ptr(dy), work, p.rows, p.C, splits, chunk);
    launch("layer_norm_dparams_final_kernel", layer_norm_dparams_final_kernel<D>, grid_1d(p.C, kBlock), kBlock, 0, s,
           (const float*)work, dev_ptr(dw), dev_ptr(db), p.C, splits);
}

template void layer_norm_fwd<float>(const LayerNormParams&, const float*, const float*, const float*, float*, float*,
                                    float*, Stream);
template void layer_norm_fwd<bf16>(const LayerNormParams&, const bf16*, const bf16*, const bf16*, bf16*, float*,
                                   float*, Stream);
template void layer_norm_bwd<float>(const LayerNormParams&, const float*, const float*, const float*, const float*,
                                    const float*, float*, float*, float*, float*, Stream);
template void layer_norm_bwd<bf16>(const LayerNormParams&, const bf16*, const bf16*, const float*, const float*,
                                   const bf16*, bf16*, bf16*, bf16*, float*, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
