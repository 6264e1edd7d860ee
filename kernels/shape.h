// Data-movement kernels behind the shape ops: strided row copies (concat/split along the last dim), permute
// (y[i_perm[0], ..., i_perm[r-1]] = x[i_0, ..., i_{r-1}] for rank <= 6), index_select along dim 0 and its
// deterministic backward (dx[j] = sum over i with index[i] == j of dy[i], summed in increasing i), plus the
// two helpers of linear: column_sum (out[c] = sum_r x[r, c], f32 accumulation) and broadcast_rows
// (out[r, c] = v[c]). Pure copies are type-agnostic and take the element size in bytes (1, 2, 4 or 8).
// Every output here is written (=); nothing accumulates into its destination.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

// dst[r * dst_ld + c] = src[r * src_ld + c] for r < rows, c < cols (strides in elements).
struct RowCopyParams {
    int64_t rows = 0, cols = 0;
    int64_t src_ld = 0, dst_ld = 0;
};

constexpr int kMaxPermuteRank = 6;
// Output dim k is input dim perm[k]; shape is the input shape.
struct PermuteParams {
    int rank = 0;
    int64_t shape[kMaxPermuteRank] = {};
    int perm[kMaxPermuteRank] = {};
};

// x: (rows_in, row_size) rows picked by index: (n_index) into y: (n_index, row_size).
struct IndexSelectParams {
    int64_t rows_in = 0, n_index = 0, row_size = 0;
};

// x: (rows, cols) summed over rows.
struct ColumnSumParams {
    int64_t rows = 0, cols = 0;
};

// Drops size-1 dims and merges runs of input dims that stay adjacent and in order in the output, so that
// e.g. [B, T, C] -> [B, C, T] becomes a batched 2-D transpose and an identity permutation a plain copy.
// The result has rank >= 1 and the same element order semantics as `p`.
inline PermuteParams permute_canonical(const PermuteParams& p) {
    int keep_of[kMaxPermuteRank];  // input dim -> index among the kept dims, or -1
    int n_keep = 0;
    int64_t kept_shape[kMaxPermuteRank];
    for (int d = 0; d < p.rank; ++d) {
        keep_of[d] = p.shape[d] == 1 ? -1 : n_keep;
        if (p.shape[d] != 1) kept_shape[n_keep++] = p.shape[d];
    }
    int order[kMaxPermuteRank], n_order = 0;  // output order over kept dims
    for (int k = 0; k < p.rank; ++k)
        if (keep_of[p.perm[k]] >= 0) order[n_order++] = keep_of[p.perm[k]];
    PermuteParams q;
    if (n_keep == 0) {
        q.rank = 1;
        q.shape[0] = 1;
        q.perm[0] = 0;
        return q;
    }
    // Groups: maximal runs in output order that are consecutive input dims.
    int group_start[kMaxPermuteRank], group_len[kMaxPermuteRank], n_groups = 0;
    for (int k = 0; k < n_order; ++k) {
        if (k > 0 && order[k] == order[k - 1] + 1) {
            ++group_len[n_groups - 1];
        } else {
            group_start[n_groups] = order[k];
            group_len[n_groups++] = 1;
        }
    }
    // The merged input dims are the groups sorted by their first input dim.
    q.rank = n_groups;
    for (int g = 0; g < n_groups; ++g) {
        int rank_in = 0;
        for (int h = 0; h < n_groups; ++h) rank_in += group_start[h] < group_start[g];
        int64_t size = 1;
        for (int d = group_start[g]; d < group_start[g] + group_len[g]; ++d) size *= kept_shape[d];
        q.shape[rank_in] = size;
        q.perm[g] = rank_in;
    }
    return q;
}

// --- CPU (reference). Copies take elem_bytes in {1, 2, 4, 8}. ---
// src: (rows, src_ld) -> dst: (rows, dst_ld), the first `cols` of each row; pointers already offset.
void row_copy_cpu(const RowCopyParams& p, const void* src, void* dst, size_t elem_bytes);
// x: p.shape -> y: (p.shape[p.perm[0]], ..., p.shape[p.perm[rank - 1]])
void permute_cpu(const PermuteParams& p, const void* x, void* y, size_t elem_bytes);
// x: (rows_in, row_size), index: (n_index) of I = int32_t or int64_t, y: (n_index, row_size).
// Throws ShapeError naming the first index outside [0, rows_in).
template <class I>
void index_select_cpu(const IndexSelectParams& p, const void* x, const I* index, void* y, size_t elem_bytes);
// dy: (n_index, row_size), index: (n_index) in range, dx: (rows_in, row_size) written. T = float, double.
template <class T, class I>
void index_select_bwd_cpu(const IndexSelectParams& p, const T* dy, const I* index, T* dx);
// x: (rows, cols) -> out: (cols). T = float, double.
template <class T>
void column_sum_cpu(const ColumnSumParams& p, const T* x, T* out);
// v: (cols) -> out: (rows, cols)
void broadcast_rows_cpu(int64_t rows, int64_t cols, const void* v, void* out, size_t elem_bytes);

// f32 workspace elements the GPU column_sum needs for these sizes (0: a single pass, no workspace).
// Rows are cut into a fixed number of chunks that depends only on the sizes, so the summation order,
// and hence the result, is reproducible run to run.
inline int64_t column_sum_chunks(const ColumnSumParams& p) {
    const int64_t rows_per_chunk = 256, max_chunks = 512;
    const int64_t c = (p.rows + rows_per_chunk - 1) / rows_per_chunk;
    return c < 1 ? 1 : (c > max_chunks ? max_chunks : c);
}
inline int64_t column_sum_workspace(const ColumnSumParams& p) {
    const int64_t c = column_sum_chunks(p);
    return c == 1 ? 0 : c * p.cols;
}

}  // namespace sslight::kernels

// --- GPU launchers (nvcc: kernels::cuda, SIMT emulator: kernels::emu); same shapes as the CPU versions.
// permute uses a 32x32 shared-memory tiled transpose when the canonical permutation is a (batched) swap of
// the last two dims, and index arithmetic otherwise (coalesced whenever the innermost dim is kept).
// index_select on the GPU does not check the range: an out-of-range index yields a zero row, no fault.
// index_select_bwd: one block per row of dx scans the index in tiles (O(rows_in * n_index) compares, no
// atomics, no sort), summing dy rows in increasing i with f32 accumulation. T = float, bf16. ---
SSL_GPU_DECLARE(
    void row_copy(const RowCopyParams& p, const void* src, void* dst, size_t elem_bytes, Stream s);
    void permute(const PermuteParams& p, const void* x, void* y, size_t elem_bytes, Stream s);
    template <class I>
    void index_select(const IndexSelectParams& p, const void* x, const I* index, void* y, size_t elem_bytes,
                      Stream s);
    template <class T, class I>
    void index_select_bwd(const IndexSelectParams& p, const T* dy, const I* index, T* dx, Stream s);
    // workspace: column_sum_workspace(p) floats (may be null when that is 0).
    template <class T>
    void column_sum(const ColumnSumParams& p, const T* x, T* out, float* workspace, Stream s);
    void broadcast_rows(int64_t rows, int64_t cols, const void* v, void* out, size_t elem_bytes, Stream s);
)
