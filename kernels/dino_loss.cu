// CUDA multi-crop soft cross-entropy (DINO / SwAV swapped prediction; math in kernels/dino_loss.h), f32 math on
// f32 or bf16 logits. Forward, one read of the logits: block (chunk c, sample group g) has W warps; warp w owns
// the 256 columns c·256W + 256w + [0, 256) of every row of its samples, 8 per lane in registers. Per sample it
// turns the G target segments into exp(u − m_warp) (DINO) or the codes (SwAV), then for each view v reduces
// (max x, Σ exp(x − max), Σ_k e_i x) over the warp, x = s_v/τ_s. The warps' states are merged in shared memory
// and written per (sample, chunk); a finalize kernel (one warp per sample) merges the chunks, giving the
// log-sum-exps, the dots Σ P x and the sample's loss. The raw teacher columns are summed per group on the way
// (DINO's centre update). Backward: a thread owns 4 columns of a sample, computes P^i once, writes all views.
#include <cmath>
#include <stdexcept>

#include "kernels/common.cuh"
#include "kernels/dino_loss.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kElems = 8;              // columns per lane per row
constexpr int kSegment = 32 * kElems;  // columns per warp
constexpr int kMaxWarps = 8;
constexpr int kMaxSlots = 2 * kDinoMaxGlobal + (2 + kDinoMaxGlobal) * kDinoMaxViews;
constexpr int kTargetBlocks = 1024;  // stats blocks wanted: samples per block grow until about this many remain
constexpr int kBlock = 256;
constexpr int kBwdElems = 4;  // columns per thread in the backward kernel

// Launch geometry and workspace layout, a function of the params only. States per (sample, chunk): slots
// [0, 2G) target (max, sum) pairs, [2G, 2G + 2V) student (max, sum) pairs, then d_iv = Σ e_i x_v at
// 2G + 2V + i·V + v. Workspace: the states, then one row of K teacher column sums per sample group (DINO),
// then the per-sample losses.
struct Layout {
    int warps = 1, chunks = 1, slots = 0, group = 1, groups = 1;
    int64_t chunk_len = kSegment;
    size_t states = 0, colpart = 0, rowloss = 0;
};
Layout make_layout(const DinoLossParams& p) {
    Layout L;
    const int64_t segs = (p.K + kSegment - 1) / kSegment;
    L.warps = int(segs < kMaxWarps ? (segs < 1 ? 1 : segs) : kMaxWarps);
    L.chunk_len = int64_t(L.warps) * kSegment;
    L.chunks = int((p.K + L.chunk_len - 1) / L.chunk_len);
    L.slots = 2 * p.n_global + (2 + p.n_global) * p.views;
    if (p.softmax_targets) {
        const int64_t g = p.B * L.chunks / kTargetBlocks;
        L.group = int(g < 1 ? 1 : g > p.B ? p.B : g);
    }
    if ((p.B + L.group - 1) / L.group > 65535) L.group = int((p.B + 65534) / 65535);  // gridDim.y limit
    L.groups = int((p.B + L.group - 1) / L.group);
    L.states = size_t(p.B) * L.chunks * L.slots;
    L.colpart = p.softmax_targets ? size_t(L.groups) * p.K : 0;
    L.rowloss = size_t(p.B);
    return L;
}

struct DevParams {
    int64_t B, K, chunk_len;
    int V, G, slots, chunks, group;
    float inv_ts, inv_tt, w_gg, w_gl;
};

// The (max) slot a sum slot is relative to; -1 for a max slot.
__device__ __forceinline__ int slot_ref(const DevParams& d, int sl) {
    const int stud = 2 * d.G + 2 * d.V;
    if (sl < stud) return (sl & 1) ? sl - 1 : -1;  // 2G is even: pairs stay aligned
    return 2 * ((sl - stud) / d.V);
}

// Merges slot `sl` over `count` states at base[c·stride]: a max slot takes the max; a sum slot rescales each
// state by exp(m_c − M) of its reference max (states whose max is -inf hold zeros and are skipped).
__device__ float merge_slot(const float* base, int64_t stride, int count, int sl, int ref) {
    float M = -INFINITY;
    for (int c = 0; c < count; ++c) M = fmaxf(M, base[c * stride + (ref < 0 ? sl : ref)]);
    if (ref < 0) return M;
    float acc = 0.f;
    for (int c = 0; c < count; ++c) {
        const float mc = base[c * stride + ref];
        if (mc != -INFINITY) acc += base[c * stride + sl] * expf(mc - M);
    }
    return acc;
}

// The same across a warp: lane l merges states l, l + 32, ..., then the lanes combine. Every lane gets it.
__device__ float warp_merge(const float* base, int64_t stride, int count, int sl, int ref) {
    const int lane = threadIdx.x & 31;
    float M = -INFINITY;
    for (int c = lane; c < count; c += 32) M = fmaxf(M, base[c * stride + (ref < 0 ? sl : ref)]);
    M = warp_max(M);
    if (ref < 0) return M;
    float acc = 0.f;
    for (int c = lane; c < count; c += 32) {
        const float mc = base[c * stride + ref];
        if (mc != -INFINITY) acc += base[c * stride + sl] * expf(mc - M);
    }
    return warp_sum(acc);
}

// This lane's kElems columns (stride 32) of a row segment as f32; 0 outside the row or when !active.
template <class T>
__device__ __forceinline__ void load_segment(const T* seg, const bool* ok, bool active, float* out) {
    for (int j = 0; j < kElems; ++j) out[j] = active && ok[j] ? to_f32(seg[32 * j]) : 0.f;
}

template <class T, bool Softmax>
__global__ void __launch_bounds__(kMaxWarps * 32)
    dino_stats_kernel(const DevParams d, const T* s, const T* t, const float* center, float* states, float* colpart) {
    __shared__ float sh[kMaxWarps * kMaxSlots];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
    const int64_t chunk = blockIdx.x, col0 = chunk * d.chunk_len + warp * kSegment + lane;
    const int64_t b0 = int64_t(blockIdx.y) * d.group, b1 = b0 + d.group < d.B ? b0 + d.group : d.B;
    bool ok[kElems];
    float cen[kElems], colsum[kElems];
    for (int j = 0; j < kElems; ++j) {
        ok[j] = col0 + 32 * j < d.K;
        cen[j] = Softmax && center && ok[j] ? center[col0 + 32 * j] : 0.f;
        colsum[j] = 0.f;
    }
    float* st = sh + warp * kMaxSlots;
    const int dbase = 2 * d.G + 2 * d.V;
    for (int64_t b = b0; b < b1; ++b) {
        float e[kDinoMaxGlobal][kElems];
#pragma unroll
        for (int i = 0; i < kDinoMaxGlobal; ++i) {
            if (i >= d.G) break;
            const T* row = t + (i * d.B + b) * d.K + col0;
            float m = Softmax ? -INFINITY : 0.f, z = 0.f;
            for (int j = 0; j < kElems; ++j) {
                const float raw = ok[j] ? to_f32(row[32 * j]) : 0.f;
                colsum[j] += raw;
                e[i][j] = Softmax ? (ok[j] ? (raw - cen[j]) * d.inv_tt : -INFINITY) : raw;
                m = fmaxf(m, e[i][j]);
            }
            if (Softmax) {
                m = warp_max(m);
                for (int j = 0; j < kElems; ++j) e[i][j] = ok[j] ? expf(e[i][j] - m) : 0.f;
            }
            for (int j = 0; j < kElems; ++j) z += e[i][j];
            z = warp_sum(z);
            if (lane == 0) st[2 * i] = Softmax ? m : 0.f, st[2 * i + 1] = z;
        }
        float x[kElems];
        load_segment(s + b * d.K + col0, ok, true, x);
        for (int v = 0; v < d.V; ++v) {
            // The next view's loads are issued before this view's reductions, so two rows are in flight.
            float next[kElems];
            load_segment(s + ((v + 1) * d.B + b) * d.K + col0, ok, v + 1 < d.V, next);
            float m = -INFINITY, z = 0.f;
            for (int j = 0; j < kElems; ++j) {
                x[j] = ok[j] ? x[j] * d.inv_ts : -INFINITY;
                m = fmaxf(m, x[j]);
            }
            m = warp_max(m);
            for (int j = 0; j < kElems; ++j) z += ok[j] ? expf(x[j] - m) : 0.f;
            z = warp_sum(z);
            if (lane == 0) st[2 * d.G + 2 * v] = m, st[2 * d.G + 2 * v + 1] = z;
#pragma unroll
            for (int i = 0; i < kDinoMaxGlobal; ++i) {
                if (i >= d.G) break;
                float dot = 0.f;
                if (i != v) {
                    for (int j = 0; j < kElems; ++j) dot += ok[j] ? e[i][j] * x[j] : 0.f;
                    dot = warp_sum(dot);
                }
                if (lane == 0) st[dbase + i * d.V + v] = dot;
            }
            for (int j = 0; j < kElems; ++j) x[j] = next[j];
        }
        __syncthreads();
        for (int sl = threadIdx.x; sl < d.slots; sl += blockDim.x)
            states[(b * d.chunks + chunk) * d.slots + sl] = merge_slot(sh, kMaxSlots, nwarps, sl, slot_ref(d, sl));
        __syncthreads();  // sh is rewritten by the next sample
    }
    if (Softmax && colpart)
        for (int j = 0; j < kElems; ++j)
            if (ok[j]) colpart[int64_t(blockIdx.y) * d.K + col0 + 32 * j] = colsum[j];
}

// One warp per sample: merges its chunk states into lse_s, tstat and the sample's weighted loss.
template <bool Softmax>
__global__ void dino_finalize_kernel(const DevParams d, const float* states, float* lse_s, float* tstat,
                                     float* row_loss) {
    const int64_t b = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= d.B) return;  // whole warps leave; no block barrier follows
    const bool lead = (threadIdx.x & 31) == 0;
    const float* base = states + b * d.chunks * d.slots;
    const int dbase = 2 * d.G + 2 * d.V;
    float tm[kDinoMaxGlobal], tz[kDinoMaxGlobal];
#pragma unroll
    for (int i = 0; i < kDinoMaxGlobal; ++i) {
        if (i >= d.G) break;
        tm[i] = warp_merge(base, d.slots, d.chunks, 2 * i, -1);
        tz[i] = warp_merge(base, d.slots, d.chunks, 2 * i + 1, 2 * i);
        if (lead) tstat[i * d.B + b] = Softmax ? tm[i] + logf(tz[i]) : tz[i];
    }
    float acc = 0.f;
    for (int v = 0; v < d.V; ++v) {
        const float m = warp_merge(base, d.slots, d.chunks, 2 * d.G + 2 * v, -1);
        const float lse = m + logf(warp_merge(base, d.slots, d.chunks, 2 * d.G + 2 * v + 1, 2 * d.G + 2 * v));
        if (lead) lse_s[v * d.B + b] = lse;
#pragma unroll
        for (int i = 0; i < kDinoMaxGlobal; ++i) {
            if (i >= d.G) break;
            if (i == v) continue;
            const float dsum = warp_merge(base, d.slots, d.chunks, dbase + i * d.V + v, 2 * i);
            const float w = v < d.G ? d.w_gg : d.w_gl;
            acc += Softmax ? w * (lse - dsum / tz[i]) : w * (tz[i] * lse - dsum);
        }
    }
    if (lead) row_loss[b] = acc;
}

template <class T>
__global__ void dino_mean_kernel(const float* row_loss, int64_t B, T* loss) {
    __shared__ float scratch[32];
    float acc = 0.f;
    for (int64_t b = threadIdx.x; b < B; b += blockDim.x) acc += row_loss[b];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) loss[0] = from_f32<T>(acc / float(B));
}

__global__ void dino_colmean_kernel(const float* colpart, int groups, int64_t K, float inv_rows, float* out) {
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(gridDim.x) * blockDim.x) {
        float acc = 0.f;
        for (int g = 0; g < groups; ++g) acc += colpart[g * K + k];
        out[k] = acc * inv_rows;
    }
}

// Thread (sample b, tile) owns kBwdElems columns (stride blockDim.x) of sample b: the targets once, then every
// view's gradient, the next view's loads issued before this one's math.
template <class T, bool Softmax>
__global__ void dino_bwd_kernel(const DevParams d, const T* s, const T* t, const float* center, const float* lse_s,
                                const float* tstat, const T* dloss, T* ds) {
    const float scale = to_f32(dloss[0]) * d.inv_ts / float(d.B);
    const int64_t span = int64_t(blockDim.x) * kBwdElems, tiles = (d.K + span - 1) / span;
    for (int64_t tile = blockIdx.x; tile < d.B * tiles; tile += gridDim.x) {
        const int64_t b = tile / tiles, col0 = (tile - b * tiles) * span + threadIdx.x;
        bool ok[kBwdElems];
        float P[kDinoMaxGlobal][kBwdElems], tsum[kDinoMaxGlobal];
        for (int j = 0; j < kBwdElems; ++j) ok[j] = col0 + j * int64_t(blockDim.x) < d.K;
#pragma unroll
        for (int i = 0; i < kDinoMaxGlobal; ++i) {
            if (i >= d.G) break;
            const float st = tstat[i * d.B + b];
            tsum[i] = Softmax ? 1.f : st;
            for (int j = 0; j < kBwdElems; ++j) {
                const int64_t k = col0 + j * int64_t(blockDim.x);
                const float raw = ok[j] ? to_f32(t[(i * d.B + b) * d.K + k]) : 0.f;
                P[i][j] = Softmax ? expf((raw - (center && ok[j] ? center[k] : 0.f)) * d.inv_tt - st) : raw;
            }
        }
        float x[kBwdElems], next[kBwdElems];
        for (int j = 0; j < kBwdElems; ++j) x[j] = ok[j] ? to_f32(s[b * d.K + col0 + j * int64_t(blockDim.x)]) : 0.f;
        for (int v = 0; v < d.V; ++v) {
            const int64_t r = v * d.B + b, rn = r + d.B;
            for (int j = 0; j < kBwdElems; ++j)
                next[j] = v + 1 < d.V && ok[j] ? to_f32(s[rn * d.K + col0 + j * int64_t(blockDim.x)]) : 0.f;
            const float w = v < d.G ? d.w_gg : d.w_gl, lse = lse_s[r];
            float wsum = 0.f;
#pragma unroll
            for (int i = 0; i < kDinoMaxGlobal; ++i)
                if (i < d.G && i != v) wsum += w * tsum[i];
            for (int j = 0; j < kBwdElems; ++j) {
                float tgt = 0.f;
#pragma unroll
                for (int i = 0; i < kDinoMaxGlobal; ++i)
                    if (i < d.G && i != v) tgt += w * P[i][j];
                const float p = expf(x[j] * d.inv_ts - lse);
                if (ok[j]) ds[r * d.K + col0 + j * int64_t(blockDim.x)] = from_f32<T>((wsum * p - tgt) * scale);
                x[j] = next[j];
            }
        }
    }
}

DevParams dev_params(const DinoLossParams& p, const Layout& L) {
    if (p.n_global < 1 || p.n_global > kDinoMaxGlobal || p.views > kDinoMaxViews || p.views < p.n_global)
        throw std::runtime_error("dino_loss: the GPU kernels take 1..4 global crops and at most 32 views");
    DevParams d;
    d.B = p.B, d.K = p.K, d.chunk_len = L.chunk_len;
    d.V = p.views, d.G = p.n_global, d.slots = L.slots, d.chunks = L.chunks, d.group = L.group;
    d.inv_ts = float(1.0 / p.student_temp), d.inv_tt = float(1.0 / p.teacher_temp);
    d.w_gg = float(p.w_gg), d.w_gl = float(p.w_gl);
    return d;
}

}  // namespace

size_t dino_loss_workspace(const DinoLossParams& p) {
    const Layout L = make_layout(p);
    return L.states + L.colpart + L.rowloss;
}

template <class T>
void dino_loss_fwd(const DinoLossParams& p, const T* student, const T* target, const float* center, T* loss,
                   float* lse_s, float* tstat, float* teacher_mean, float* workspace, Stream s) {
    if (p.B <= 0 || p.K <= 0) return;
    using D = dev_t<T>;
    const Layout L = make_layout(p);
    const DevParams d = dev_params(p, L);
    float *states = workspace, *colpart = states + L.states, *row_loss = colpart + L.colpart;
    const dim3 grid(unsigned(L.chunks), unsigned(L.groups));
    if (p.softmax_targets)
        launch("dino_stats_kernel", dino_stats_kernel<D, true>, grid, dim3(32 * L.warps), 0, s, d, dev_ptr(student),
               dev_ptr(target), center, states, teacher_mean ? colpart : nullptr);
    else
        launch("dino_stats_kernel", dino_stats_kernel<D, false>, grid, dim3(32 * L.warps), 0, s, d, dev_ptr(student),
               dev_ptr(target), center, states, static_cast<float*>(nullptr));
    const unsigned fin_blocks = unsigned((p.B + 3) / 4);
    if (p.softmax_targets)
        launch("dino_finalize_kernel", dino_finalize_kernel<true>, fin_blocks, 128, 0, s, d, states, lse_s, tstat,
               row_loss);
    else
        launch("dino_finalize_kernel", dino_finalize_kernel<false>, fin_blocks, 128, 0, s, d, states, lse_s, tstat,
               row_loss);
    launch("dino_mean_kernel", dino_mean_kernel<D>, 1, 1024, 0, s, row_loss, p.B, dev_ptr(loss));
    if (teacher_mean && p.softmax_targets)
        launch("dino_colmean_kernel", dino_colmean_kernel, grid_1d(p.K, kBlock), kBlock, 0, s, colpart, L.groups, p.K,
               float(1.0 / double(p.n_global * p.B)), teacher_mean);
}

template <class T>
void dino_loss_bwd(const DinoLossParams& p, const T* student, const T* target, const float* center,
                   const float* lse_s, const float* tstat, const T* dloss, T* dstudent, Stream s) {
    if (p.B <= 0 || p.K <= 0) return;
    using D = dev_t<T>;
    const DevParams d = dev_params(p, make_layout(p));
    const int64_t tiles = (p.K + kBlock * kBwdElems - 1) / (kBlock * kBwdElems);
    const unsigned grid = grid_1d(p.B * tiles, 1);
    if (p.softmax_targets)
        launch("dino_bwd_kernel", dino_bwd_kernel<D, true>, grid, kBlock, 0, s, d, dev_ptr(student), dev_ptr(target),
               center, lse_s, tstat, dev_ptr(dloss), dev_ptr(dstudent));
    else
        launch("dino_bwd_kernel", dino_bwd_kernel<D, false>, grid, kBlock, 0, s, d, dev_ptr(student), dev_ptr(target),
               center, lse_s, tstat, dev_ptr(dloss), dev_ptr(dstudent));
}

#define SSL_DINO_GPU_INSTANTIATE(T)                                                                               \
    template void dino_loss_fwd<T>(const DinoLossParams&, const T*, const T*, const float*, T*, float*, float*,  \
                                   float*, float*, Stream);                                                       \
    template void dino_loss_bwd<T>(const DinoLossParams&, const T*, const T*, const float*, const float*,        \
                                   const float*, const T*, T*, Stream);
SSL_DINO_GPU_INSTANTIATE(float)
SSL_DINO_GPU_INSTANTIATE(bf16)
#undef SSL_DINO_GPU_INSTANTIATE

}  // namespace sslight::kernels::SSL_GPU_NS
