// CUDA shape kernels: grid-stride strided row copies, permute (32x32 shared-memory tiled transpose for a
// batched swap of the last two dims, index arithmetic otherwise), index_select and its sort-free
// deterministic backward (one block per dx row scans the index in shared-memory tiles), a two-pass
// deterministic column sum (fixed row chunks, then a fixed-order sum over chunks) and a row broadcast.
// Copies move raw bits (uint8/16/32/64 by element size); sums accumulate in f32.
#include <stdexcept>
#include <string>

#include "kernels/common.cuh"
#include "kernels/shape.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlock = 256;
constexpr int kTile = 32;     // transpose / column-sum tile width (one warp)
constexpr int kTileRows = 8;  // rows of threads per tile: 256 threads per block

#define SSL_GRID_STRIDE(e, n) \
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < (n); e += (int64_t)gridDim.x * blockDim.x)

template <class U>
__global__ void row_copy_kernel(RowCopyParams p, const U* src, U* dst) {
    SSL_GRID_STRIDE(e, p.rows * p.cols) {
        const int64_t r = e / p.cols, c = e - r * p.cols;
        dst[r * p.dst_ld + c] = src[r * p.src_ld + c];
    }
}

// Output element e in row-major output order reads input offset sum_k coord_k(e) * src_stride[k].
struct PermuteIndex {
    int rank;
    int64_t out_shape[kMaxPermuteRank];
    int64_t src_stride[kMaxPermuteRank];
};

template <class U>
__global__ void permute_kernel(PermuteIndex q, int64_t n, const U* x, U* y) {
    SSL_GRID_STRIDE(e, n) {
        int64_t rem = e, src = 0;
#pragma unroll
        for (int k = kMaxPermuteRank - 1; k >= 0; --k) {
            if (k < q.rank) {
                const int64_t i = rem % q.out_shape[k];
                rem /= q.out_shape[k];
                src += i * q.src_stride[k];
            }
        }
        y[e] = x[src];
    }
}

// x: (B, X, Y) -> y: (B, Y, X). A block reads a 32x32 tile with coalesced rows of x into shared memory
// (padded by one column against bank conflicts) and writes it back as coalesced rows of y.
template <class U>
__global__ void transpose_kernel(int64_t B, int64_t X, int64_t Y, const U* x, U* y) {
    __shared__ U tile[kTile][kTile + 1];
    const int64_t ty0 = blockIdx.x * (int64_t)kTile;  // grid.x covers every tile along Y
    for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
        const U* xb = x + b * X * Y;
        U* yb = y + b * X * Y;
        for (int64_t tx0 = blockIdx.y * (int64_t)kTile; tx0 < X; tx0 += (int64_t)gridDim.y * kTile) {
            for (int j = threadIdx.y; j < kTile; j += kTileRows) {
                const int64_t r = tx0 + j, c = ty0 + threadIdx.x;
                if (r < X && c < Y) tile[j][threadIdx.x] = xb[r * Y + c];
            }
            __syncthreads();
            for (int j = threadIdx.y; j < kTile; j += kTileRows) {
                const int64_t r = ty0 + j, c = tx0 + threadIdx.x;
                if (r < Y && c < X) yb[r * X + c] = tile[threadIdx.x][j];
            }
            __syncthreads();  // the tile is overwritten by the next iteration
        }
    }
}

template <class U, class I>
__global__ void index_select_kernel(IndexSelectParams p, const U* x, const I* index, U* y) {
    SSL_GRID_STRIDE(e, p.n_index * p.row_size) {
        const int64_t i = e / p.row_size, c = e - i * p.row_size;
        const int64_t j = static_cast<int64_t>(index[i]);
        y[e] = (j >= 0 && j < p.rows_in) ? x[j * p.row_size + c] : U(0);
    }
}

// dx row j = sum of dy rows i with index[i] == j, in increasing i. Each thread owns one column of the row;
// the block stages kBlock index entries at a time in shared memory. All loop bounds are block-uniform.
template <class T, class I>
__global__ void index_select_bwd_kernel(IndexSelectParams p, const T* dy, const I* index, T* dx) {
    __shared__ int64_t tile[kBlock];
    for (int64_t j = blockIdx.x; j < p.rows_in; j += gridDim.x) {
        for (int64_t c0 = 0; c0 < p.row_size; c0 += kBlock) {
            const int64_t c = c0 + threadIdx.x;
            float acc = 0.f;
            for (int64_t t0 = 0; t0 < p.n_index; t0 += kBlock) {
                const int64_t t = t0 + threadIdx.x;
                __syncthreads();  // the previous tile has been read by every thread
                tile[threadIdx.x] = t < p.n_index ? static_cast<int64_t>(index[t]) : -1;
                __syncthreads();
                const int len = p.n_index - t0 < kBlock ? static_cast<int>(p.n_index - t0) : kBlock;
                if (c < p.row_size) {
                    for (int k = 0; k < len; ++k)
                        if (tile[k] == j) acc += to_f32(dy[(t0 + k) * p.row_size + c]);
                }
            }
            if (c < p.row_size) dx[j * p.row_size + c] = from_f32<T>(acc);
        }
    }
}

// Pass 1: block (blockIdx.x, blockIdx.y) sums 32 columns over one chunk of rows; threadIdx.y strides the
// rows, then thread row 0 adds the 8 partial sums in a fixed order. O = float (workspace) or the output type.
template <class T, class O>
__global__ void column_sum_kernel(ColumnSumParams p, int64_t rows_per_chunk, const T* x, O* out) {
    __shared__ float part[kTileRows][kTile];
    const int64_t c = blockIdx.x * (int64_t)kTile + threadIdx.x;
    const int64_t r0 = blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < p.rows ? r0 + rows_per_chunk : p.rows;
    float acc = 0.f;
    if (c < p.cols)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += kTileRows) acc += to_f32(x[r * p.cols + c]);
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < p.cols) {
        float s = 0.f;
        for (int k = 0; k < kTileRows; ++k) s += part[k][threadIdx.x];
        out[blockIdx.y * p.cols + c] = from_f32<O>(s);
    }
}

// Pass 2: out[c] = sum over chunks k (in order) of ws[k, c].
template <class T>
__global__ void column_sum_final_kernel(int64_t chunks, int64_t cols, const float* ws, T* out) {
    SSL_GRID_STRIDE(c, cols) {
        float s = 0.f;
        for (int64_t k = 0; k < chunks; ++k) s += ws[k * cols + c];
        out[c] = from_f32<T>(s);
    }
}

template <class U>
__global__ void broadcast_rows_kernel(int64_t rows, int64_t cols, const U* v, U* out) {
    SSL_GRID_STRIDE(e, rows * cols) { out[e] = v[e % cols]; }
}

#undef SSL_GRID_STRIDE

unsigned grid_cap(int64_t n) { return static_cast<unsigned>(n < 1 ? 1 : (n > 65535 ? 65535 : n)); }

template <class U>
void permute_typed(const PermuteParams& q, const void* xv, void* yv, Stream s) {
    const U* x = static_cast<const U*>(xv);
    U* y = static_cast<U*>(yv);
    int64_t n = 1;
    for (int d = 0; d < q.rank; ++d) n *= q.shape[d];
    if (n == 0) return;
    const bool swap2 = q.rank == 2 && q.perm[0] == 1;
    const bool swap3 = q.rank == 3 && q.perm[0] == 0 && q.perm[1] == 2;
    if (swap2 || swap3) {
        const int64_t B = swap3 ? q.shape[0] : 1, X = q.shape[q.rank - 2], Y = q.shape[q.rank - 1];
        const dim3 grid(static_cast<unsigned>((Y + kTile - 1) / kTile), grid_cap((X + kTile - 1) / kTile), grid_cap(B));
        launch("transpose_kernel", transpose_kernel<U>, grid, dim3(kTile, kTileRows), 0, s, B, X, Y, x, y);
        return;
    }
    PermuteIndex pi{};
    pi.rank = q.rank;
    int64_t in_stride[kMaxPermuteRank];
    in_stride[q.rank - 1] = 1;
    for (int d = q.rank - 2; d >= 0; --d) in_stride[d] = in_stride[d + 1] * q.shape[d + 1];
    for (int k = 0; k < q.rank; ++k) {
        pi.out_shape[k] = q.shape[q.perm[k]];
        pi.src_stride[k] = in_stride[q.perm[k]];
    }
    launch("permute_kernel", permute_kernel<U>, grid_1d(n, kBlock), kBlock, 0, s, pi, n, x, y);
}

}  // namespace

void row_copy(const RowCopyParams& p, const void* src, void* dst, size_t elem_bytes, Stream s) {
    const int64_t n = p.rows * p.cols;
    if (n <= 0) return;
    const unsigned g = grid_1d(n, kBlock);
    switch (elem_bytes) {
        case 1: return launch("row_copy_kernel", row_copy_kernel<uint8_t>, g, kBlock, 0, s, p,
                              static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst));
        case 2: return launch("row_copy_kernel", row_copy_kernel<uint16_t>, g, kBlock, 0, s, p,
                              static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst));
        case 4: return launch("row_copy_kernel", row_copy_kernel<uint32_t>, g, kBlock, 0, s, p,
                              static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst));
        case 8: return launch("row_copy_kernel", row_copy_kernel<uint64_t>, g, kBlock, 0, s, p,
                              static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst));
    }
    throw std::runtime_error("row_copy: unsupported element size " + std::to_string(elem_bytes));
}

void permute(const PermuteParams& p, const void* x, void* y, size_t elem_bytes, Stream s) {
    if (p.rank < 1 || p.rank > kMaxPermuteRank) throw std::runtime_error("permute: rank outside [1, 6]");
    const PermuteParams q = permute_canonical(p);
    switch (elem_bytes) {
        case 1: return permute_typed<uint8_t>(q, x, y, s);
        case 2: return permute_typed<uint16_t>(q, x, y, s);
        case 4: return permute_typed<uint32_t>(q, x, y, s);
        case 8: return permute_typed<uint64_t>(q, x, y, s);
    }
    throw std::runtime_error("permute: unsupported element size " + std::to_string(elem_bytes));
}

template <class I>
void index_select(const IndexSelectParams& p, const void* x, const I* index, void* y, size_t elem_bytes, Stream s) {
    const int64_t n = p.n_index * p.row_size;
    if (n <= 0) return;
    const unsigned g = grid_1d(n, kBlock);
    switch (elem_bytes) {
        case 1: return launch("index_select_kernel", index_select_kernel<uint8_t, I>, g, kBlock, 0, s, p,
                              static_cast<const uint8_t*>(x), index, static_cast<uint8_t*>(y));
        case 2: return launch("index_select_kernel", index_select_kernel<uint16_t, I>, g, kBlock, 0, s, p,
                              static_cast<const uint16_t*>(x), index, static_cast<uint16_t*>(y));
        case 4: return launch("index_select_kernel", index_select_kernel<uint32_t, I>, g, kBlock, 0, s, p,
                              static_cast<const uint32_t*>(x), index, static_cast<uint32_t*>(y));
        case 8: return launch("index_select_kernel", index_select_kernel<uint64_t, I>, g, kBlock, 0, s, p,
                              static_cast<const uint64_t*>(x), index, static_cast<uint64_t*>(y));
    }
    throw std::runtime_error("index_select: unsupported element size " + std::to_string(elem_bytes));
}

template <class T, class I>
void index_select_bwd(const IndexSelectParams& p, const T* dy, const I* index, T* dx, Stream s) {
    if (p.rows_in <= 0 || p.row_size <= 0) return;
    launch("index_select_bwd_kernel", index_select_bwd_kernel<dev_t<T>, I>, grid_cap(p.rows_in), kBlock, 0, s, p,
           dev_ptr(dy), index, dev_ptr(dx));
}

template <class T>
void column_sum(const ColumnSumParams& p, const T* x, T* out, float* workspace, Stream s) {
    if (p.cols <= 0) return;
    const int64_t chunks = column_sum_chunks(p);
    const int64_t rows_per_chunk = (p.rows + chunks - 1) / chunks;
    const unsigned gx = static_cast<unsigned>((p.cols + kTile - 1) / kTile);
    const dim3 block(kTile, kTileRows);
    if (chunks == 1) {
        launch("column_sum_kernel", column_sum_kernel<dev_t<T>, dev_t<T>>, dim3(gx, 1), block, 0, s, p,
               rows_per_chunk, dev_ptr(x), dev_ptr(out));
        return;
    }
    if (!workspace) throw std::runtime_error("column_sum: this size needs a workspace (column_sum_workspace)");
    launch("column_sum_kernel", column_sum_kernel<dev_t<T>, float>, dim3(gx, static_cast<unsigned>(chunks)), block,
           0, s, p, rows_per_chunk, dev_ptr(x), workspace);
    launch("column_sum_final_kernel", column_sum_final_kernel<dev_t<T>>, grid_1d(p.cols, kBlock), kBlock, 0, s,
           chunks, p.cols, static_cast<const float*>(workspace), dev_ptr(out));
}

void broadcast_rows(int64_t rows, int64_t cols, const void* v, void* out, size_t elem_bytes, Stream s) {
    const int64_t n = rows * cols;
    if (n <= 0) return;
    const unsigned g = grid_1d(n, kBlock);
    switch (elem_bytes) {
        case 1: return launch("broadcast_rows_kernel", broadcast_rows_kernel<uint8_t>, g, kBlock, 0, s, rows, cols,
                              static_cast<const uint8_t*>(v), static_cast<uint8_t*>(out));
        case 2: return launch("broadcast_rows_kernel", broadcast_rows_kernel<uint16_t>, g, kBlock, 0, s, rows, cols,
                              static_cast<const uint16_t*>(v), static_cast<uint16_t*>(out));
        case 4: return launch("broadcast_rows_kernel", broadcast_rows_kernel<uint32_t>, g, kBlock, 0, s, rows, cols,
                              static_cast<const uint32_t*>(v), static_cast<uint32_t*>(out));
        case 8: return launch("broadcast_rows_kernel", broadcast_rows_kernel<uint64_t>, g, kBlock, 0, s, rows, cols,
                              static_cast<const uint64_t*>(v), static_cast<uint64_t*>(out));
    }
    throw std::runtime_error("broadcast_rows: unsupported element size " + std::to_string(elem_bytes));
}

template void index_select<int32_t>(const IndexSelectParams&, const void*, const int32_t*, void*, size_t, Stream);
template void index_select<int64_t>(const IndexSelectParams&, const void*, const int64_t*, void*, size_t, Stream);
template void index_select_bwd<float, int32_t>(const IndexSelectParams&, const float*, const int32_t*, float*, Stream);
template void index_select_bwd<float, int64_t>(const IndexSelectParams&, const float*, const int64_t*, float*, Stream);
template void index_select_bwd<bf16, int32_t>(const IndexSelectParams&, const bf16*, const int32_t*, bf16*, Stream);
template void index_select_bwd<bf16, int64_t>(const IndexSelectParams&, const bf16*, const int64_t*, bf16*, Stream);
template void column_sum<float>(const ColumnSumParams&, const float*, float*, float*, Stream);
template void column_sum<bf16>(const ColumnSumParams&, const bf16*, bf16*, float*, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
