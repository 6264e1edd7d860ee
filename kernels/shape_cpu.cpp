// CPU shape kernels (and the reference for the GPU ones): strided row copies, permute by output rows,
// index_select with a range check, its backward through a counting-sort inverse list (so each dx row is
// summed in increasing i, independent of the thread count), column sums and row broadcasts.
#include <cstring>
#include <vector>

#include "engine/check.h"
#include "kernels/shape.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kParallelBytes = 1 << 16;

template <class U>
void permute_rows(const PermuteParams& q, const U* x, U* y) {
    const int r = q.rank;
    int64_t in_stride[kMaxPermuteRank], out_shape[kMaxPermuteRank], src_stride[kMaxPermuteRank];
    in_stride[r - 1] = 1;
    for (int d = r - 2; d >= 0; --d) in_stride[d] = in_stride[d + 1] * q.shape[d + 1];
    int64_t numel = 1;
    for (int k = 0; k < r; ++k) {
        out_shape[k] = q.shape[q.perm[k]];
        src_stride[k] = in_stride[q.perm[k]];
        numel *= out_shape[k];
    }
    const int64_t inner = out_shape[r - 1], inner_stride = src_stride[r - 1];
    const int64_t rows = inner ? numel / inner : 0;
#pragma omp parallel for schedule(static) if (numel * static_cast<int64_t>(sizeof(U)) > kParallelBytes)
    for (int64_t row = 0; row < rows; ++row) {
        int64_t rem = row, src = 0;
        for (int k = r - 2; k >= 0; --k) {
            src += (rem % out_shape[k]) * src_stride[k];
            rem /= out_shape[k];
        }
        U* out = y + row * inner;
        for (int64_t j = 0; j < inner; ++j) out[j] = x[src + j * inner_stride];
    }
}

template <class U>
void broadcast_rows_typed(int64_t rows, int64_t cols, const U* v, U* out) {
#pragma omp parallel for schedule(static) if (rows * cols * static_cast<int64_t>(sizeof(U)) > kParallelBytes)
    for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * cols, v, static_cast<size_t>(cols) * sizeof(U));
}

}  // namespace

void row_copy_cpu(const RowCopyParams& p, const void* src, void* dst, size_t elem_bytes) {
    const auto* s = static_cast<const char*>(src);
    auto* d = static_cast<char*>(dst);
    const size_t row_bytes = static_cast<size_t>(p.cols) * elem_bytes;
#pragma omp parallel for schedule(static) if (p.rows * static_cast<int64_t>(row_bytes) > kParallelBytes)
    for (int64_t r = 0; r < p.rows; ++r) {
        std::memcpy(d + static_cast<size_t>(r * p.dst_ld) * elem_bytes,
                    s + static_cast<size_t>(r * p.src_ld) * elem_bytes, row_bytes);
    }
}

void permute_cpu(const PermuteParams& p, const void* x, void* y, size_t elem_bytes) {
    SSL_CHECK(p.rank >= 1 && p.rank <= kMaxPermuteRank, "permute: rank ", p.rank, " outside [1, ", kMaxPermuteRank,
              "]");
    const PermuteParams q = permute_canonical(p);
    switch (elem_bytes) {
        case 1: return permute_rows(q, static_cast<const uint8_t*>(x), static_cast<uint8_t*>(y));
        case 2: return permute_rows(q, static_cast<const uint16_t*>(x), static_cast<uint16_t*>(y));
        case 4: return permute_rows(q, static_cast<const uint32_t*>(x), static_cast<uint32_t*>(y));
        case 8: return permute_rows(q, static_cast<const uint64_t*>(x), static_cast<uint64_t*>(y));
        default: SSL_FAIL("permute: unsupported element size ", elem_bytes);
    }
}

template <class I>
void index_select_cpu(const IndexSelectParams& p, const void* x, const I* index, void* y, size_t elem_bytes) {
    for (int64_t i = 0; i < p.n_index; ++i) {
        SSL_CHECK_SHAPE(index[i] >= 0 && index[i] < p.rows_in, "index_select: index[", i, "] = ", index[i],
                        " is out of range for ", p.rows_in, " rows");
    }
    const auto* s = static_cast<const char*>(x);
    auto* d = static_cast<char*>(y);
    const size_t row_bytes = static_cast<size_t>(p.row_size) * elem_bytes;
#pragma omp parallel for schedule(static) if (p.n_index * static_cast<int64_t>(row_bytes) > kParallelBytes)
    for (int64_t i = 0; i < p.n_index; ++i)
        std::memcpy(d + static_cast<size_t>(i) * row_bytes, s + static_cast<size_t>(index[i]) * row_bytes, row_bytes);
}

template <class T, class I>
void index_select_bwd_cpu(const IndexSelectParams& p, const T* dy, const I* index, T* dx) {
    // Inverse list by counting sort: the positions i with index[i] == j, in increasing i.
    std::vector<int64_t> start(static_cast<size_t>(p.rows_in) + 1, 0), pos(static_cast<size_t>(p.n_index));
    for (int64_t i = 0; i < p.n_index; ++i) ++start[static_cast<size_t>(index[i]) + 1];
    for (int64_t j = 0; j < p.rows_in; ++j) start[j + 1] += start[j];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < p.n_index; ++i) pos[fill[static_cast<size_t>(index[i])]++] = i;
    const int64_t D = p.row_size;
#pragma omp parallel for schedule(static) if (p.rows_in * D > kParallelBytes)
    for (int64_t j = 0; j < p.rows_in; ++j) {
        T* out = dx + j * D;
        for (int64_t c = 0; c < D; ++c) out[c] = T(0);
        for (int64_t e = start[j]; e < start[j + 1]; ++e) {
            const T* g = dy + pos[e] * D;
            for (int64_t c = 0; c < D; ++c) out[c] += g[c];
        }
    }
}

template <class T>
void column_sum_cpu(const ColumnSumParams& p, const T* x, T* out) {
    // Rows in order for every column: the same order whatever the thread count.
    const int64_t C = p.cols;
    constexpr int64_t kColBlock = 256;
#pragma omp parallel for schedule(static) if (p.rows * C > kParallelBytes)
    for (int64_t c0 = 0; c0 < C; c0 += kColBlock) {
        const int64_t c1 = c0 + kColBlock < C ? c0 + kColBlock : C;
        for (int64_t c = c0; c < c1; ++c) out[c] = T(0);
        for (int64_t r = 0; r < p.rows; ++r) {
            const T* row = x + r * C;
            for (int64_t c = c0; c < c1; ++c) out[c] += row[c];
        }
    }
}

void broadcast_rows_cpu(int64_t rows, int64_t cols, const void* v, void* out, size_t elem_bytes) {
    switch (elem_bytes) {
        case 1: return broadcast_rows_typed(rows, cols, static_cast<const uint8_t*>(v), static_cast<uint8_t*>(out));
        case 2: return broadcast_rows_typed(rows, cols, static_cast<const uint16_t*>(v), static_cast<uint16_t*>(out));
        case 4: return broadcast_rows_typed(rows, cols, static_cast<const uint32_t*>(v), static_cast<uint32_t*>(out));
        case 8: return broadcast_rows_typed(rows, cols, static_cast<const uint64_t*>(v), static_cast<uint64_t*>(out));
        default: SSL_FAIL("broadcast_rows: unsupported element size ", elem_bytes);
    }
}

template void index_select_cpu<int32_t>(const IndexSelectParams&, const void*, const int32_t*, void*, size_t);
template void index_select_cpu<int64_t>(const IndexSelectParams&, const void*, const int64_t*, void*, size_t);
template void index_select_bwd_cpu<float, int32_t>(const IndexSelectParams&, const float*, const int32_t*, float*);
template void index_select_bwd_cpu<float, int64_t>(const IndexSelectParams&, const float*, const int64_t*, float*);
template void index_select_bwd_cpu<double, int32_t>(const IndexSelectParams&, const double*, const int32_t*, double*);
template void index_select_bwd_cpu<double, int64_t>(const IndexSelectParams&, const double*, const int64_t*, double*);
template void column_sum_cpu<float>(const ColumnSumParams&, const float*, float*);
template void column_sum_cpu<double>(const ColumnSumParams&, const double*, double*);

}  // namespace sslight::kernels
