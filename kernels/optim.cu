// CUDA multi-tensor optimizer kernels (math in kernels/optim.h): up to kMtaMaxTensors tensors per launch, their
// pointers, sizes and scalars carried by value in an MtaBatch; block b handles chunk b - block_start[t] of the
// tensor t with block_start[t] <= b < block_start[t + 1]. float4 accesses when a tensor's pointers are 16-byte
// aligned. Sums of squares: per-chunk block sums to a workspace, then one block per tensor sums its chunks in
// order (deterministic, no atomics); the LARS and clipping kernels read those sums from device memory, so a
// whole step runs without a host synchronisation. No gradients: parameters and state update in place.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "kernels/common.cuh"
#include "kernels/optim.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlock = 256;
constexpr uint8_t kAligned = 1, kAdapt = 2, kFirst = 4;

// One launch's tensors. Scalars per kernel: SGD/LARS lr, wd; AdamW lr = lr / bc1, wd = 1 - lr·wd,
// c1 = sqrt(bc2); clipping none.
struct MtaBatch {
    float* p[kMtaMaxTensors];
    const float* g[kMtaMaxTensors];
    float* m[kMtaMaxTensors];
    float* v[kMtaMaxTensors];
    int64_t numel[kMtaMaxTensors];
    float lr[kMtaMaxTensors], wd[kMtaMaxTensors], c1[kMtaMaxTensors];
    int32_t index[kMtaMaxTensors];       // position in the whole list (sum-of-squares arrays)
    int32_t chunk_base[kMtaMaxTensors];  // workspace position of the tensor's first chunk
    int32_t block_start[kMtaMaxTensors + 1];
    uint8_t flags[kMtaMaxTensors];
    int32_t n_tensors, n_blocks;
};
static_assert(sizeof(MtaBatch) <= 4096, "MtaBatch must fit the 4 KiB kernel-parameter space");

// The tensor of block `block`: the last t with block_start[t] <= block (tensors without elements own no block).
__device__ __forceinline__ int find_tensor(const MtaBatch& b, int block) {
    int lo = 0, hi = b.n_tensors - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (b.block_start[mid] <= block)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

struct Chunk {
    int t;
    int64_t chunk, begin, end;
};
__device__ __forceinline__ Chunk this_chunk(const MtaBatch& b) {
    Chunk c;
    c.t = find_tensor(b, blockIdx.x);
    c.chunk = blockIdx.x - b.block_start[c.t];
    c.begin = c.chunk * kMtaChunk;
    c.end = c.begin + kMtaChunk < b.numel[c.t] ? c.begin + kMtaChunk : b.numel[c.t];
    return c;
}

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

// Calls op(p, g, m, v) on this thread's elements of [c.begin, c.end) of tensor c.t; null g/m/v read as 0 and
// are not written; p, m, v are written back when kWrite.
template <bool kWrite, class Op>
__device__ __forceinline__ void visit(const MtaBatch& b, const Chunk& c, Op& op) {
    float* p = b.p[c.t];
    const float* g = b.g[c.t];
    float* m = b.m[c.t];
    float* v = b.v[c.t];
    int64_t vend = c.begin;
    if (b.flags[c.t] & kAligned) {
        const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
        vend = c.begin + ((c.end - c.begin) & ~int64_t(3));
        for (int64_t i = c.begin + 4 * int64_t(threadIdx.x); i < vend; i += 4 * int64_t(blockDim.x)) {
            float4 P = load4(p + i), M = m ? load4(m + i) : zero, V = v ? load4(v + i) : zero;
            const float4 G = g ? load4(g + i) : zero;
            op(P.x, G.x, M.x, V.x);
            op(P.y, G.y, M.y, V.y);
            op(P.z, G.z, M.z, V.z);
            op(P.w, G.w, M.w, V.w);
            if (kWrite) {
                store4(p + i, P);
                if (m) store4(m + i, M);
                if (v) store4(v + i, V);
            }
        }
    }
    for (int64_t i = vend + threadIdx.x; i < c.end; i += blockDim.x) {
        float P = p[i], M = m ? m[i] : 0.f, V = v ? v[i] : 0.f;
        op(P, g ? g[i] : 0.f, M, V);
        if (kWrite) {
            p[i] = P;
            if (m) m[i] = M;
            if (v) v[i] = V;
        }
    }
}

// ---- sums of squares -------------------------------------------------------------------------------------
// kPair: s0 = Σp², s1 = Σ(g + wd·p)² (LARS); otherwise s0 = Σp².
template <bool kPair>
struct SumsqOp {
    float wd, s0 = 0.f, s1 = 0.f;
    __device__ __forceinline__ void operator()(float& p, float g, float&, float&) {
        s0 += p * p;
        if (kPair) {
            const float d = g + wd * p;
            s1 += d * d;
        }
    }
};

template <bool kPair>
__global__ void __launch_bounds__(kBlock) sumsq_partials_kernel(const __grid_constant__ MtaBatch b, float* partials) {
    __shared__ float scratch[32];
    const Chunk c = this_chunk(b);
    SumsqOp<kPair> op{b.wd[c.t]};
    visit<false>(b, c, op);
    const float s0 = block_sum(op.s0, scratch);
    const float s1 = kPair ? block_sum(op.s1, scratch) : 0.f;
    if (threadIdx.x == 0) {
        const int64_t k = b.chunk_base[c.t] + c.chunk;
        if (kPair) {
            partials[2 * k] = s0;
            partials[2 * k + 1] = s1;
        } else {
            partials[k] = s0;
        }
    }
}

// One block per tensor of the batch: out[W·index + w] = Σ over the tensor's chunks, in chunk order per thread.
template <int W>
__global__ void __launch_bounds__(kBlock) sumsq_finalize_kernel(const __grid_constant__ MtaBatch b,
                                                                const float* partials, float* out) {
    __shared__ float scratch[32];
    const int t = blockIdx.x;
    const int64_t first = b.chunk_base[t], count = b.block_start[t + 1] - b.block_start[t];
    for (int w = 0; w < W; ++w) {
        float acc = 0.f;
        for (int64_t k = threadIdx.x; k < count; k += blockDim.x) acc += partials[W * (first + k) + w];
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) out[W * b.index[t] + w] = acc;
    }
}

// ---- updates -----------------------------------------------------------------------------------------------
struct SgdOp {
    float lr, wd, mu;
    bool first, nesterov, has_m;
    __device__ __forceinline__ void operator()(float& p, float g, float& m, float&) const {
        float d = g + wd * p;
        if (has_m) {
            m = first ? d : mu * m + d;
            d = nesterov ? d + mu * m : m;
        }
        p = p - lr * d;
    }
};
__global__ void __launch_bounds__(kBlock) sgd_kernel(const __grid_constant__ MtaBatch b, float mu, int nesterov) {
    const Chunk c = this_chunk(b);
    SgdOp op{b.lr[c.t], b.wd[c.t], mu, (b.flags[c.t] & kFirst) != 0, nesterov != 0, b.m[c.t] != nullptr};
    visit<true>(b, c, op);
}

struct LarsOp {
    float lr, wd, mu, q;
    __device__ __forceinline__ void operator()(float& p, float g, float& m, float&) const {
        m = mu * m + (g + wd * p) * q;
        p = p - lr * m;
    }
};
// sumsq: [Σp², Σd²] per tensor of the whole list, from sumsq_finalize_kernel<2>.
__global__ void __launch_bounds__(kBlock) lars_kernel(const __grid_constant__ MtaBatch b, const float* sumsq,
                                                      float mu, float eta) {
    const Chunk c = this_chunk(b);
    float q = 1.f;
    if (b.flags[c.t] & kAdapt) {
        const float pn = sqrtf(sumsq[2 * b.index[c.t]]), dn = sqrtf(sumsq[2 * b.index[c.t] + 1]);
        if (pn > 0.f && dn > 0.f) q = eta * pn / dn;
    }
    LarsOp op{b.lr[c.t], b.wd[c.t], mu, q};
    visit<true>(b, c, op);
}

struct AdamOp {
    float step_size, decay, bc2_sqrt, b1, b2, c1, c2, eps;
    __device__ __forceinline__ void operator()(float& p, float g, float& m, float& v) const {
        m = b1 * m + c1 * g;
        v = b2 * v + c2 * g * g;
        p = p * decay;
        p = p - step_size * (m / (sqrtf(v) / bc2_sqrt + eps));
    }
};
__global__ void __launch_bounds__(kBlock) adamw_kernel(const __grid_constant__ MtaBatch b, float b1, float b2,
                                                       float eps) {
    const Chunk c = this_chunk(b);
    AdamOp op{b.lr[c.t], b.wd[c.t], b.c1[c.t], b1, b2, 1.f - b1, 1.f - b2, eps};
    visit<true>(b, c, op);
}

struct ScaleOp {
    float coef;
    __device__ __forceinline__ void operator()(float& p, float, float&, float&) const { p *= coef; }
};
// sumsq: Σx² per tensor of the whole list (n_total of them). global: one coefficient from their sum.
__global__ void __launch_bounds__(kBlock) clip_scale_kernel(const __grid_constant__ MtaBatch b, const float* sumsq,
                                                            int n_total, float max_norm, int global) {
    __shared__ float scratch[32];
    const Chunk c = this_chunk(b);
    float s = 0.f;
    if (global) {
        for (int k = threadIdx.x; k < n_total; k += blockDim.x) s += sumsq[k];
        s = block_sum(s, scratch);
    } else {
        s = sumsq[b.index[c.t]];
    }
    const float coef = max_norm / (sqrtf(s) + 1e-6f);
    if (coef >= 1.f) return;
    ScaleOp op{coef};
    visit<true>(b, c, op);
}

// ---- host side: packing ------------------------------------------------------------------------------------
struct Entry {
    float* p = nullptr;
    const float* g = nullptr;
    float* m = nullptr;
    float* v = nullptr;
    int64_t numel = 0;
    float lr = 0, wd = 0, c1 = 0;
    uint8_t flags = 0;
};

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

uint8_t align_flag(const Entry& e) {
    return aligned16(e.p) && aligned16(e.g) && aligned16(e.m) && aligned16(e.v) ? kAligned : 0;
}

// Packs the entries kMtaMaxTensors at a time and calls fn(batch) for each batch.
template <class F>
void for_each_batch(const std::vector<Entry>& entries, const F& fn) {
    MtaBatch b;
    std::memset(&b, 0, sizeof(b));
    int64_t chunk_base = 0;
    for (size_t k = 0; k < entries.size(); ++k) {
        const Entry& e = entries[k];
        const int t = b.n_tensors;
        b.p[t] = e.p, b.g[t] = e.g, b.m[t] = e.m, b.v[t] = e.v, b.numel[t] = e.numel;
        b.lr[t] = e.lr, b.wd[t] = e.wd, b.c1[t] = e.c1;
        b.flags[t] = static_cast<uint8_t>(e.flags | align_flag(e));
        b.index[t] = static_cast<int32_t>(k);
        b.chunk_base[t] = static_cast<int32_t>(chunk_base);
        const int64_t chunks = mta_chunks(e.numel);
        chunk_base += chunks;
        if (chunk_base > INT32_MAX) throw std::runtime_error("multi-tensor apply: more than 2^31 chunks in one list");
        b.block_start[t + 1] = b.block_start[t] + static_cast<int32_t>(chunks);
        b.n_blocks = b.block_start[t + 1];
        b.n_tensors = t + 1;
        if (b.n_tensors == kMtaMaxTensors || k + 1 == entries.size()) {
            fn(b);
            std::memset(&b, 0, sizeof(b));
        }
    }
}

std::vector<Entry> slot_entries(const std::vector<OptimSlot<float>>& slots) {
    std::vector<Entry> out(slots.size());
    for (size_t k = 0; k < slots.size(); ++k) {
        const OptimSlot<float>& s = slots[k];
        Entry& e = out[k];
        e.p = s.param, e.g = s.grad, e.m = s.buf1, e.v = s.buf2, e.numel = s.numel;
        e.lr = static_cast<float>(s.lr), e.wd = static_cast<float>(s.weight_decay);
        e.flags = static_cast<uint8_t>((s.lars_adapt ? kAdapt : 0) | (s.step <= 1 ? kFirst : 0));
    }
    return out;
}

// Per-chunk partials of the batch, then the per-tensor sums: W = 2 for [Σp², Σd²], 1 for Σp².
template <int W>
void launch_sumsq(const MtaBatch& b, float* workspace, float* out, Stream s) {
    if (b.n_blocks > 0)
        launch("sumsq_partials_kernel", sumsq_partials_kernel<W == 2>, dim3(b.n_blocks), dim3(kBlock), 0, s, b,
               workspace);
    launch("sumsq_finalize_kernel", sumsq_finalize_kernel<W>, dim3(b.n_tensors), dim3(kBlock), 0, s, b, workspace,
           out);
}

}  // namespace

size_t mta_workspace(const std::vector<int64_t>& numel) {
    size_t chunks = 0;
    for (int64_t n : numel) chunks += static_cast<size_t>(mta_chunks(n));
    return 2 * chunks;
}

void sgd_step(const std::vector<OptimSlot<float>>& slots, const SgdHyper& h, Stream s) {
    for_each_batch(slot_entries(slots), [&](const MtaBatch& b) {
        if (b.n_blocks > 0)
            launch("sgd_kernel", sgd_kernel, dim3(b.n_blocks), dim3(kBlock), 0, s, b,
                   static_cast<float>(h.momentum), h.nesterov ? 1 : 0);
    });
}

void lars_step(const std::vector<OptimSlot<float>>& slots, const LarsHyper& h, float* workspace, float* sumsq,
               Stream s) {
    for_each_batch(slot_entries(slots), [&](const MtaBatch& b) {
        launch_sumsq<2>(b, workspace, sumsq, s);
        if (b.n_blocks > 0)
            launch("lars_kernel", lars_kernel, dim3(b.n_blocks), dim3(kBlock), 0, s, b,
                   static_cast<const float*>(sumsq), static_cast<float>(h.momentum), static_cast<float>(h.eta));
    });
}

void adamw_step(const std::vector<OptimSlot<float>>& slots, const AdamWHyper& h, Stream s) {
    std::vector<Entry> entries = slot_entries(slots);
    for (size_t k = 0; k < slots.size(); ++k) {
        const double t = static_cast<double>(slots[k].step);
        entries[k].lr = static_cast<float>(slots[k].lr / (1 - std::pow(h.beta1, t)));
        entries[k].wd = static_cast<float>(1 - slots[k].lr * slots[k].weight_decay);
        entries[k].c1 = static_cast<float>(std::sqrt(1 - std::pow(h.beta2, t)));
    }
    for_each_batch(entries, [&](const MtaBatch& b) {
        if (b.n_blocks > 0)
            launch("adamw_kernel", adamw_kernel, dim3(b.n_blocks), dim3(kBlock), 0, s, b,
                   static_cast<float>(h.beta1), static_cast<float>(h.beta2), static_cast<float>(h.eps));
    });
}

void multi_tensor_sumsq(const std::vector<const float*>& x, const std::vector<int64_t>& numel, float* workspace,
                        float* out, Stream s) {
    std::vector<Entry> entries(x.size());
    for (size_t k = 0; k < x.size(); ++k) {
        entries[k].p = const_cast<float*>(x[k]);  // read only: the sum kernels never write p
        entries[k].numel = numel[k];
    }
    for_each_batch(entries, [&](const MtaBatch& b) { launch_sumsq<1>(b, workspace, out, s); });
}

void clip_scale(const std::vector<float*>& x, const std::vector<int64_t>& numel, const float* sumsq, ClipMode mode,
                double max_norm, Stream s) {
    std::vector<Entry> entries(x.size());
    for (size_t k = 0; k < x.size(); ++k) entries[k].p = x[k], entries[k].numel = numel[k];
    const int n_total = static_cast<int>(x.size());
    for_each_batch(entries, [&](const MtaBatch& b) {
        if (b.n_blocks > 0)
            launch("clip_scale_kernel", clip_scale_kernel, dim3(b.n_blocks), dim3(kBlock), 0, s, b, sumsq, n_total,
                   static_cast<float>(max_norm), mode == ClipMode::global ? 1 : 0);
    });
}

}  // namespace sslight::kernels::SSL_GPU_NS
