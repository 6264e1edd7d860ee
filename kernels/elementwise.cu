// CUDA element-wise kernels: grid-stride loops over 16-byte packets (4 x f32, 8 x bf16) when every pointer
// is 16-byte aligned, then a scalar tail (or the scalar loop alone), all math in f32. Binary backward writes
// da (and a same-shape db) in one pass; a broadcast db is reduced deterministically: per (column block, row
// chunk) partial sums in a fixed order into an f32 workspace, then one thread per column adds the chunks.
#include <cstdint>
#include <initializer_list>

#include "kernels/common.cuh"
#include "kernels/elementwise.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlock = 256;
constexpr int kColLanes = 32;                  // columns per block of the column reduction
constexpr int kRowLanes = kBlock / kColLanes;  // rows a column-reduction block reads at once

struct UArgs {
    UnaryOp op;
    float s0, s1;
};
struct BArgs {
    BinaryOp op;
    float alpha;
};

// One 16-byte packet of storage elements.
template <class D>
struct alignas(16) Pack {
    static constexpr int N = 16 / static_cast<int>(sizeof(D));
    D v[N];
};

// x^p that stays defined for negative x when p is an integer (fast-math powf is exp2(p log2 x)).
__device__ __forceinline__ float pow_f(float x, float p) {
    if (p == 2.f) return x * x;
    if (p == 1.f) return x;
    if (p == 0.5f) return sqrtf(x);
    if (x >= 0.f || p != floorf(p)) return powf(x, p);
    const float r = powf(-x, p);
    return fmodf(p, 2.f) != 0.f ? -r : r;
}

__device__ __forceinline__ float unary_f(const UArgs& a, float x) {
    switch (a.op) {
        case UnaryOp::affine: return a.s0 * x + a.s1;
        case UnaryOp::rdiv: return a.s0 / x;
        case UnaryOp::exp: return expf(x);
        case UnaryOp::log: return logf(x);
        case UnaryOp::sqrt: return sqrtf(x);
        case UnaryOp::pow: return pow_f(x, a.s0);
        case UnaryOp::abs: return fabsf(x);
        case UnaryOp::clamp: return x < a.s0 ? a.s0 : (x > a.s1 ? a.s1 : x);
        case UnaryOp::relu: return x > 0.f ? x : 0.f;
        case UnaryOp::relu6: return x < 0.f ? 0.f : (x > 6.f ? 6.f : x);
        case UnaryOp::gelu: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
        case UnaryOp::sigmoid: return 1.f / (1.f + expf(-x));
        case UnaryOp::tanh: return tanhf(x);
    }
    return x;
}

// dx for saved s (x, or y where unary_saves_output) and upstream g.
__device__ __forceinline__ float unary_df(const UArgs& a, float s, float g) {
    switch (a.op) {
        case UnaryOp::affine: return a.s0 * g;
        case UnaryOp::rdiv: return -a.s0 * g / (s * s);
        case UnaryOp::exp: return g * s;
        case UnaryOp::log: return g / s;
        case UnaryOp::sqrt: return 0.5f * g / s;
        case UnaryOp::pow: return a.s0 == 0.f ? 0.f : g * a.s0 * pow_f(s, a.s0 - 1.f);
        case UnaryOp::abs: return s > 0.f ? g : (s < 0.f ? -g : 0.f);
        case UnaryOp::clamp: return s >= a.s0 && s <= a.s1 ? g : 0.f;
        case UnaryOp::relu: return s > 0.f ? g : 0.f;
        case UnaryOp::relu6: return s > 0.f && s < 6.f ? g : 0.f;
        case UnaryOp::gelu: {
            const float cdf = 0.5f * (1.f + erff(s * 0.70710678118654752f));
            const float pdf = expf(-0.5f * s * s) * 0.39894228040143268f;
            return g * (cdf + s * pdf);
        }
        case UnaryOp::sigmoid: return g * s * (1.f - s);
        case UnaryOp::tanh: return g * (1.f - s * s);
    }
    return g;
}

__device__ __forceinline__ float binary_f(const BArgs& o, float a, float b) {
    switch (o.op) {
        case BinaryOp::add: return a + o.alpha * b;
        case BinaryOp::mul: return a * b;
        case BinaryOp::div: return a / b;
    }
    return a;
}
__device__ __forceinline__ float grad_a(const BArgs& o, float b, float g) {
    return o.op == BinaryOp::add ? g : (o.op == BinaryOp::mul ? g * b : g / b);
}
__device__ __forceinline__ float grad_b(const BArgs& o, float a, float b, float g) {
    return o.op == BinaryOp::add ? o.alpha * g : (o.op == BinaryOp::mul ? g * a : -g * a / (b * b));
}

__device__ __forceinline__ int64_t b_index(int64_t i, int64_t c, int64_t n) {
    return c == n ? i : (c == 1 ? 0 : i % c);
}
__device__ __forceinline__ int64_t thread_index() { return blockIdx.x * (int64_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t thread_stride() { return (int64_t)gridDim.x * blockDim.x; }

// Packets [0, nvec) vectorised, then elements [nvec * N, n) one by one.
template <class D>
__global__ void unary_fwd_kernel(UArgs a, const D* x, D* y, int64_t n, int64_t nvec) {
    constexpr int N = Pack<D>::N;
    for (int64_t v = thread_index(); v < nvec; v += thread_stride()) {
        Pack<D> px = reinterpret_cast<const Pack<D>*>(x)[v], py;
        for (int k = 0; k < N; ++k) py.v[k] = from_f32<D>(unary_f(a, to_f32(px.v[k])));
        reinterpret_cast<Pack<D>*>(y)[v] = py;
    }
    for (int64_t i = nvec * N + thread_index(); i < n; i += thread_stride())
        y[i] = from_f32<D>(unary_f(a, to_f32(x[i])));
}

template <class D>
__global__ void unary_bwd_kernel(UArgs a, const D* s, const D* dy, D* dx, int64_t n, int64_t nvec) {
    constexpr int N = Pack<D>::N;
    for (int64_t v = thread_index(); v < nvec; v += thread_stride()) {
        Pack<D> ps, pg = reinterpret_cast<const Pack<D>*>(dy)[v], pd;
        if (s) ps = reinterpret_cast<const Pack<D>*>(s)[v];
        for (int k = 0; k < N; ++k)
            pd.v[k] = from_f32<D>(unary_df(a, s ? to_f32(ps.v[k]) : 0.f, to_f32(pg.v[k])));
        reinterpret_cast<Pack<D>*>(dx)[v] = pd;
    }
    for (int64_t i = nvec * N + thread_index(); i < n; i += thread_stride())
        dx[i] = from_f32<D>(unary_df(a, s ? to_f32(s[i]) : 0.f, to_f32(dy[i])));
}

// Loads the N values of b that packet v of a meets: b[0] broadcast when c == 1, else the aligned packet at
// (v * N) % c (c == n or c % N == 0, so a packet never straddles a row of b).
template <class D>
__device__ __forceinline__ void load_b(const D* b, int64_t v, int64_t c, float* out) {
    constexpr int N = Pack<D>::N;
    if (c == 1) {
        const float b0 = to_f32(b[0]);
        for (int k = 0; k < N; ++k) out[k] = b0;
        return;
    }
    const Pack<D> pb = *reinterpret_cast<const Pack<D>*>(b + (v * N) % c);
    for (int k = 0; k < N; ++k) out[k] = to_f32(pb.v[k]);
}

template <class D>
__global__ void binary_fwd_kernel(BArgs o, const D* a, const D* b, D* out, int64_t n, int64_t c, int64_t nvec) {
    constexpr int N = Pack<D>::N;
    for (int64_t v = thread_index(); v < nvec; v += thread_stride()) {
        float bv[N];
        load_b(b, v, c, bv);
        Pack<D> pa = reinterpret_cast<const Pack<D>*>(a)[v], po;
        for (int k = 0; k < N; ++k) po.v[k] = from_f32<D>(binary_f(o, to_f32(pa.v[k]), bv[k]));
        reinterpret_cast<Pack<D>*>(out)[v] = po;
    }
    for (int64_t i = nvec * N + thread_index(); i < n; i += thread_stride())
        out[i] = from_f32<D>(binary_f(o, to_f32(a[i]), to_f32(b[b_index(i, c, n)])));
}

// da[i] (when da) and, for a same-shape b, db[i] (when db). a and b may be null where the op does not read
// them (add; a for da of mul/div).
template <class D>
__global__ void binary_bwd_kernel(BArgs o, const D* a, const D* b, const D* dy, D* da, D* db, int64_t n,
                                  int64_t c, int64_t nvec) {
    constexpr int N = Pack<D>::N;
    for (int64_t v = thread_index(); v < nvec; v += thread_stride()) {
        float bv[N] = {}, av[N] = {};
        if (b) load_b(b, v, c, bv);
        if (a && db) {
            const Pack<D> pa = reinterpret_cast<const Pack<D>*>(a)[v];
            for (int k = 0; k < N; ++k) av[k] = to_f32(pa.v[k]);
        }
        const Pack<D> pg = reinterpret_cast<const Pack<D>*>(dy)[v];
        Pack<D> pda, pdb;
        for (int k = 0; k < N; ++k) {
            const float g = to_f32(pg.v[k]);
            pda.v[k] = from_f32<D>(grad_a(o, bv[k], g));
            pdb.v[k] = from_f32<D>(grad_b(o, av[k], bv[k], g));
        }
        if (da) reinterpret_cast<Pack<D>*>(da)[v] = pda;
        if (db) reinterpret_cast<Pack<D>*>(db)[v] = pdb;
    }
    for (int64_t i = nvec * N + thread_index(); i < n; i += thread_stride()) {
        const float g = to_f32(dy[i]);
        const float bv = b ? to_f32(b[b_index(i, c, n)]) : 0.f;
        if (da) da[i] = from_f32<D>(grad_a(o, bv, g));
        if (db) db[i] = from_f32<D>(grad_b(o, a ? to_f32(a[i]) : 0.f, bv, g));
    }
}

// Broadcast over rows (c >= 2): block (x = column block, y = row chunk); lane (tx, ty) sums rows ty, ty + 8, ...
// of its column in the chunk, then lane ty == 0 adds the 8 row lanes in order: partial[chunk * c + col].
template <class D>
__global__ void colsum_partial_kernel(BArgs o, const D* a, const D* b, const D* dy, float* partial, int64_t rows,
                                     int64_t c, int64_t rows_per_chunk) {
    __shared__ float tile[kRowLanes][kColLanes + 1];
    const int tx = threadIdx.x % kColLanes, ty = threadIdx.x / kColLanes;
    const int64_t j = blockIdx.x * (int64_t)kColLanes + tx;
    const int64_t r0 = blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    float acc = 0.f;
    if (j < c) {
        const float bv = b ? to_f32(b[j]) : 0.f;
        for (int64_t r = r0 + ty; r < r1; r += kRowLanes) {
            const int64_t i = r * c + j;
            acc += grad_b(o, a ? to_f32(a[i]) : 0.f, bv, to_f32(dy[i]));
        }
    }
    tile[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && j < c) {
        float s = 0.f;
        for (int k = 0; k < kRowLanes; ++k) s += tile[k][tx];
        partial[blockIdx.y * c + j] = s;
    }
}

// Scalar b (c == 1): block k sums elements [k * per_chunk, (k + 1) * per_chunk) with a block reduction.
template <class D>
__global__ void sum_partial_kernel(BArgs o, const D* a, const D* b, const D* dy, float* partial, int64_t n,
                                   int64_t per_chunk) {
    __shared__ float scratch[32];
    const int64_t i0 = blockIdx.x * per_chunk;
    const int64_t i1 = i0 + per_chunk < n ? i0 + per_chunk : n;
    const float bv = b ? to_f32(b[0]) : 0.f;
    float acc = 0.f;
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
        acc += grad_b(o, a ? to_f32(a[i]) : 0.f, bv, to_f32(dy[i]));
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <class D>
__global__ void colsum_final_kernel(const float* partial, D* db, int64_t c, int64_t chunks) {
    for (int64_t j = thread_index(); j < c; j += thread_stride()) {
        float s = 0.f;
        for (int64_t k = 0; k < chunks; ++k) s += partial[k * c + j];
        db[j] = from_f32<D>(s);
    }
}

template <class T>
bool aligned(const T* p) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

UArgs uargs(const UnaryParams& p) { return {p.op, static_cast<float>(p.s0), static_cast<float>(p.s1)}; }
BArgs bargs(const BinaryParams& p) { return {p.op, static_cast<float>(p.alpha)}; }

// Packets the binary kernels may use: every pointer given is aligned and, when b is read, its packets fit
// inside its rows (b scalar, same shape, or a row length that is a multiple of the packet).
template <class D>
int64_t binary_packets(const BinaryParams& p, bool reads_b, std::initializer_list<const D*> ptrs) {
    for (const D* q : ptrs)
        if (q && !aligned(q)) return 0;
    if (reads_b && p.c != 1 && p.c != p.n && p.c % Pack<D>::N != 0) return 0;
    return p.n / Pack<D>::N;
}

unsigned grid_for(int64_t n, int64_t nvec) { return grid_1d(nvec > 0 ? nvec : n, kBlock); }

template <class D>
void reduce_db(const BinaryParams& p, const D* a, const D* b, const D* dy, D* db, float* ws, Stream s) {
    const int64_t chunks = binary_reduce_chunks(p);
    if (p.c == 1) {
        const int64_t per_chunk = (p.n + chunks - 1) / chunks;
        launch("sum_partial_kernel", sum_partial_kernel<D>, dim3(static_cast<unsigned>(chunks)), kBlock, 0, s,
               bargs(p), a, b, dy, ws, p.n, per_chunk);
    } else {
        const int64_t rows = p.n / p.c;
        const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
        const dim3 grid(static_cast<unsigned>((p.c + kColLanes - 1) / kColLanes), static_cast<unsigned>(chunks));
        launch("colsum_partial_kernel", colsum_partial_kernel<D>, grid, kBlock, 0, s, bargs(p), a, b, dy, ws, rows,
               p.c, rows_per_chunk);
    }
    launch("colsum_final_kernel", colsum_final_kernel<D>, grid_1d(p.c, kBlock), kBlock, 0, s,
           static_cast<const float*>(ws), db, p.c, chunks);
}

}  // namespace

template <class T>
void unary_fwd(const UnaryParams& p, const T* x, T* y, Stream s) {
    using D = dev_t<T>;
    if (p.n <= 0) return;
    const int64_t nvec = aligned(x) && aligned(y) ? p.n / Pack<D>::N : 0;
    launch("unary_fwd_kernel", unary_fwd_kernel<D>, grid_for(p.n, nvec), kBlock, 0, s, uargs(p), dev_ptr(x),
           dev_ptr(y), p.n, nvec);
}

template <class T>
void unary_bwd(const UnaryParams& p, const T* saved, const T* dy, T* dx, Stream s) {
    using D = dev_t<T>;
    if (p.n <= 0) return;
    const T* sv = unary_needs_saved(p.op) ? saved : nullptr;
    const bool ok = (!sv || aligned(sv)) && aligned(dy) && aligned(dx);
    const int64_t nvec = ok ? p.n / Pack<D>::N : 0;
    launch("unary_bwd_kernel", unary_bwd_kernel<D>, grid_for(p.n, nvec), kBlock, 0, s, uargs(p), dev_ptr(sv),
           dev_ptr(dy), dev_ptr(dx), p.n, nvec);
}

template <class T>
void binary_fwd(const BinaryParams& p, const T* a, const T* b, T* out, Stream s) {
    using D = dev_t<T>;
    if (p.n <= 0) return;
    const int64_t nvec = binary_packets<D>(p, true, {dev_ptr(a), p.c == 1 ? nullptr : dev_ptr(b), dev_ptr(out)});
    launch("binary_fwd_kernel", binary_fwd_kernel<D>, grid_for(p.n, nvec), kBlock, 0, s, bargs(p), dev_ptr(a),
           dev_ptr(b), dev_ptr(out), p.n, p.c, nvec);
}

template <class T>
void binary_bwd(const BinaryParams& p, const T* a, const T* b, const T* dy, T* da, T* db, float* workspace,
                Stream s) {
    using D = dev_t<T>;
    const bool bcast = binary_broadcast(p);
    if (p.op == BinaryOp::add) a = b = nullptr;
    if (!db) a = nullptr;
    D* db_elem = bcast ? nullptr : dev_ptr(db);
    if (p.n > 0 && (da || db_elem)) {
        const D* bp = dev_ptr(b);
        const D* b_packed = p.c == 1 ? nullptr : bp;  // a scalar b is read once, not in packets
        const int64_t nvec =
            binary_packets<D>(p, bp != nullptr, {dev_ptr(a), b_packed, dev_ptr(dy), dev_ptr(da), db_elem});
        launch("binary_bwd_kernel", binary_bwd_kernel<D>, grid_for(p.n, nvec), kBlock, 0, s, bargs(p), dev_ptr(a),
               bp, dev_ptr(dy), dev_ptr(da), db_elem, p.n, p.c, nvec);
    }
    if (db && bcast && p.c > 0) reduce_db<D>(p, dev_ptr(a), dev_ptr(b), dev_ptr(dy), dev_ptr(db), workspace, s);
}

template void unary_fwd<float>(const UnaryParams&, const float*, float*, Stream);
template void unary_fwd<bf16>(const UnaryParams&, const bf16*, bf16*, Stream);
template void unary_bwd<float>(const UnaryParams&, const float*, const float*, float*, Stream);
template void unary_bwd<bf16>(const UnaryParams&, const bf16*, const bf16*, bf16*, Stream);
template void binary_fwd<float>(const BinaryParams&, const float*, const float*, float*, Stream);
template void binary_fwd<bf16>(const BinaryParams&, const bf16*, const bf16*, bf16*, Stream);
template void binary_bwd<float>(const BinaryParams&, const float*, const float*, const float*, float*, float*,
                                float*, Stream);
template void binary_bwd<bf16>(const BinaryParams&, const bf16*, const bf16*, const bf16*, bf16*, bf16*, float*,
                               Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
