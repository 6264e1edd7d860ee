// CUDA softmax / log-softmax and the fused cross-entropy losses, f32 math on f32 or bf16 storage. A row is
// handled by one warp (C <= 1024, 8 rows per block) or by one block (longer rows, e.g. the 65536-way DINO
// head). The forward makes one online pass for (max, sum exp) — each thread keeps a running max and rescales
// its sum when the max grows, then the (m, s) pairs are merged across the warp/block — and one pass to write.
// Loss means: per-row losses in a workspace, summed by one block in a fixed order (deterministic).
#include "kernels/common.cuh"
#include "kernels/softmax.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kRowsPerBlock = 8;
constexpr int64_t kWarpRowMax = 1024;
constexpr int kBlock = 256;


// Adds element v to the running (max m, sum s = sum exp(x - m)). -inf elements add nothing; NaN poisons s.
__device__ __forceinline__ void online_add(float& m, float& s, float v) {
    if (v > m) {
        s = s * expf(m - v) + 1.f;
        m = v;
    } else if (v != -INFINITY) {
        s += expf(v - m);
    }
}
__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
    const float mn = m > m2 ? m : m2;
    if (mn == -INFINITY) {
        s += s2;
        return;
    }
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}
__device__ __forceinline__ void warp_online(float& m, float& s) {
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        online_merge(m, s, m2, s2);
    }
}

// Log-sum-exp of row x (length C) across the group; every thread of the group receives it.
template <class T, bool BlockRow>
__device__ float group_lse(const T* x, int64_t C, const RowGroup<BlockRow>& g, float* sm, float* ss) {
    float m = -INFINITY, s = 0.f;
    for (int64_t c = g.lane; c < C; c += g.width) online_add(m, s, to_f32(x[c]));
    warp_online(m, s);
    if constexpr (BlockRow) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
        __syncthreads();
        if (lane == 0) sm[warp] = m, ss[warp] = s;
        __syncthreads();
        m = lane < nwarps ? sm[lane] : -INFINITY;
        s = lane < nwarps ? ss[lane] : 0.f;
        warp_online(m, s);
    }
    return m + logf(s);
}

template <class T, bool BlockRow, bool Log>
__global__ void softmax_fwd_kernel(const T* x, T* y, int64_t rows, int64_t C) {
    __shared__ float sm[32], ss[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        const float lse = group_lse(x + r * C, C, g, sm, ss);
        for (int64_t c = g.lane; c < C; c += g.width) {
            const float v = to_f32(x[r * C + c]) - lse;
            y[r * C + c] = from_f32<T>(Log ? v : expf(v));
        }
    }
}

// softmax: dx = y (dy - sum dy y); log-softmax: dx = dy - exp(y) sum dy.
template <class T, bool BlockRow, bool Log>
__global__ void softmax_bwd_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t C) {
    __shared__ float scratch[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        float acc = 0.f;
        for (int64_t c = g.lane; c < C; c += g.width)
            acc += Log ? to_f32(dy[r * C + c]) : to_f32(dy[r * C + c]) * to_f32(y[r * C + c]);
        acc = group_sum<BlockRow>(acc, scratch);
        for (int64_t c = g.lane; c < C; c += g.width) {
            const float yv = to_f32(y[r * C + c]), gv = to_f32(dy[r * C + c]);
            dx[r * C + c] = from_f32<T>(Log ? gv - expf(yv) * acc : yv * (gv - acc));
        }
    }
}

template <class T, class L, bool BlockRow>
__global__ void ce_fwd_kernel(const T* x, const L* labels, float* lse, float* row_loss, int64_t rows, int64_t C) {
    __shared__ float sm[32], ss[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        const float l = group_lse(x + r * C, C, g, sm, ss);
        if (g.lane == 0) {
            const int64_t label = (int64_t)labels[r];
            lse[r] = l;
            row_loss[r] = label >= 0 && label < C ? l - to_f32(x[r * C + label]) : NAN;
        }
    }
}

// Soft targets: the lse pass, then sum t and -sum t (x - lse) in a second pass over the (cached) row.
template <class T, bool BlockRow>
__global__ void ce_soft_fwd_kernel(const T* x, const T* t, float* lse, float* tsum, float* row_loss, int64_t rows,
                                   int64_t C) {
    __shared__ float sm[32], ss[32];
    const RowGroup<BlockRow> g;
    for (int64_t r = g.first; r < rows; r += g.step) {
        const float l = group_lse(x + r * C, C, g, sm, ss);
        float ts = 0.f, acc = 0.f;
        for (int64_t c = g.lane; c < C; c += g.width) {
            const float tv = to_f32(t[r * C + c]);
            ts += tv;
            acc -= tv * (to_f32(x[r * C + c]) - l);
        }
        ts = group_sum<BlockRow>(ts, sm);
        acc = group_sum<BlockRow>(acc, sm);
        if (g.lane == 0) lse[r] = l, tsum[r] = ts, row_loss[r] = acc;
    }
}

// loss = sum(row_loss) / rows, one block, fixed order.
template <class T>
__global__ void mean_kernel(const float* row_loss, T* loss, int64_t rows) {
    __shared__ float scratch[32];
    float acc = 0.f;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) acc += row_loss[r];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) loss[0] = from_f32<T>(rows > 0 ? acc / (float)rows : NAN);
}

template <class T, class L>
__global__ void ce_bwd_kernel(const T* x, const L* labels, const float* lse, const T* dloss, T* dx, int64_t rows,
                              int64_t C) {
    const float scale = to_f32(dloss[0]) / (float)rows;
    const int64_t total = rows * C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / C, c = e % C, label = (int64_t)labels[r];
        const float sm = expf(to_f32(x[e]) - lse[r]) - (c == label ? 1.f : 0.f);
        dx[e] = from_f32<T>(label >= 0 && label < C ? sm * scale : NAN);
    }
}

template <class T>
__global__ void ce_soft_bwd_kernel(const T* x, const T* t, const float* lse, const float* tsum, const T* dloss,
                                   T* dx, T* dt, int64_t rows, int64_t C) {
    const float scale = to_f32(dloss[0]) / (float)rows;
    const int64_t total = rows * C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / C;
        const float xv = to_f32(x[e]);
        if (dx) dx[e] = from_f32<T>((expf(xv - lse[r]) * tsum[r] - to_f32(t[e])) * scale);
        if (dt) dt[e] = from_f32<T>((lse[r] - xv) * scale);
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

template <class T>
void launch_mean(const float* row_loss, T* loss, int64_t rows, Stream s) {
    launch("mean_kernel", mean_kernel<dev_t<T>>, 1, 1024, 0, s, row_loss, dev_ptr(loss), rows);
}

}  // namespace

template <class T>
void softmax_fwd(const SoftmaxParams& p, const T* x, T* y, Stream s) {
    using D = dev_t<T>;
    launch_rows("softmax_fwd_kernel", softmax_fwd_kernel<D, false, false>, softmax_fwd_kernel<D, true, false>,
                p.rows, p.C, s, dev_ptr(x), dev_ptr(y), p.rows, p.C);
}

template <class T>
void softmax_bwd(const SoftmaxParams& p, const T* y, const T* dy, T* dx, Stream s) {
    using D = dev_t<T>;
    launch_rows("softmax_bwd_kernel", softmax_bwd_kernel<D, false, false>, softmax_bwd_kernel<D, true, false>,
                p.rows, p.C, s, dev_ptr(y), dev_ptr(dy), dev_ptr(dx), p.rows, p.C);
}

template <class T>
void log_softmax_fwd(const SoftmaxParams& p, const T* x, T* y, Stream s) {
    using D = dev_t<T>;
    launch_rows("log_softmax_fwd_kernel", softmax_fwd_kernel<D, false, true>, softmax_fwd_kernel<D, true, true>,
                p.rows, p.C, s, dev_ptr(x), dev_ptr(y), p.rows, p.C);
}

template <class T>
void log_softmax_bwd(const SoftmaxParams& p, const T* y, const T* dy, T* dx, Stream s) {
    using D = dev_t<T>;
    launch_rows("log_softmax_bwd_kernel", softmax_bwd_kernel<D, false, true>, softmax_bwd_kernel<D, true, true>,
                p.rows, p.C, s, dev_ptr(y), dev_ptr(dy), dev_ptr(dx), p.rows, p.C);
}

template <class T, class L>
void cross_entropy_fwd(const SoftmaxParams& p, const T* logits, const L* labels, T* loss, float* lse,
                       float* row_loss, Stream s) {
    using D = dev_t<T>;
    launch_rows("ce_fwd_kernel", ce_fwd_kernel<D, L, false>, ce_fwd_kernel<D, L, true>, p.rows, p.C, s,
                dev_ptr(logits), labels, lse, row_loss, p.rows, p.C);
    launch_mean(row_loss, loss, p.rows, s);
}

template <class T, class L>
void cross_entropy_bwd(const SoftmaxParams& p, const T* logits, const L* labels, const float* lse, const T* dloss,
                       T* dlogits, Stream s) {
    const int64_t total = p.rows * p.C;
    if (total == 0) return;
    launch("ce_bwd_kernel", ce_bwd_kernel<dev_t<T>, L>, grid_1d(total, kBlock), kBlock, 0, s, dev_ptr(logits), labels,
           lse, dev_ptr(dloss), dev_ptr(dlogits), p.rows, p.C);
}

template <class T>
void cross_entropy_soft_fwd(const SoftmaxParams& p, const T* logits, const T* targets, T* loss, float* lse,
                            float* tsum, float* row_loss, Stream s) {
    using D = dev_t<T>;
    launch_rows("ce_soft_fwd_kernel", ce_soft_fwd_kernel<D, false>, ce_soft_fwd_kernel<D, true>, p.rows, p.C, s,
                dev_ptr(logits), dev_ptr(targets), lse, tsum, row_loss, p.rows, p.C);
    launch_mean(row_loss, loss, p.rows, s);
}

template <class T>
void cross_entropy_soft_bwd(const SoftmaxParams& p, const T* logits, const T* targets, const float* lse,
                            const float* tsum, const T* dloss, T* dlogits, T* dtargets, Stream s) {
    const int64_t total = p.rows * p.C;
    if (total == 0 || (!dlogits && !dtargets)) return;
    launch("ce_soft_bwd_kernel", ce_soft_bwd_kernel<dev_t<T>>, grid_1d(total, kBlock), kBlock, 0, s, dev_ptr(logits),
           dev_ptr(targets), lse, tsum, dev_ptr(dloss), dev_ptr(dlogits), dev_ptr(dtargets), p.rows, p.C);
}

#define SSL_SOFTMAX_GPU_INSTANTIATE(T)                                                                           \
    template void softmax_fwd<T>(const SoftmaxParams&, const T*, T*, Stream);                                   \
    template void softmax_bwd<T>(const SoftmaxParams&, const T*, const T*, T*, Stream);                         \
    template void log_softmax_fwd<T>(const SoftmaxParams&, const T*, T*, Stream);                               \
    template void log_softmax_bwd<T>(const SoftmaxParams&, const T*, const T*, T*, Stream);                     \
    template void cross_entropy_fwd<T, int32_t>(const SoftmaxParams&, const T*, const int32_t*, T*, float*,     \
                                                float*, Stream);                                                \
    template void cross_entropy_fwd<T, int64_t>(const SoftmaxParams&, const T*, const int64_t*, T*, float*,     \
                                                float*, Stream);                                                \
    template void cross_entropy_bwd<T, int32_t>(const SoftmaxParams&, const T*, const int32_t*, const float*,   \
                                                const T*, T*, Stream);                                          \
    template void cross_entropy_bwd<T, int64_t>(const SoftmaxParams&, const T*, const int64_t*, const float*,   \
                                                const T*, T*, Stream);                                          \
    template void cross_entropy_soft_fwd<T>(const SoftmaxParams&, const T*, const T*, T*, float*, float*,       \
                                            float*, Stream);                                                    \
    template void cross_entropy_soft_bwd<T>(const SoftmaxParams&, const T*, const T*, const float*,             \
                                            const float*, const T*, T*, T*, Stream);
SSL_SOFTMAX_GPU_INSTANTIATE(float)
SSL_SOFTMAX_GPU_INSTANTIATE(bf16)
#undef SSL_SOFTMAX_GPU_INSTANTIATE

}  // namespace sslight::kernels::SSL_GPU_NS
