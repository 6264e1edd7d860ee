// Shape ops that copy data: concat and split (along dim 0 or the last dim), permute (any rank up to 6) and
// index_select (rows along dim 0). All are differentiable: concat <-> split are each other's backward
// (an unused split output counts as a zero gradient), permute's backward permutes back, index_select's
// scatter-adds rows into zeros in a fixed order (deterministic on CPU and GPU). Gradients are written (=).
// Forward works for every dtype (the copies move raw bits); gradients exist for floating dtypes.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace sslight {

// Joins tensors of one dtype and device whose shapes agree except along `dim`, which must be 0 or the last
// dim (-1 or dim() - 1); any other dim throws ShapeError saying which are supported.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);

// Cuts x along `dim` (0 or the last) into pieces of the given sizes, which must sum to x.size(dim).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

// y.shape[k] = x.shape[dims[k]]; a copy in the new order. dims is a permutation of 0..dim()-1 (negative
// values count from the end); rank at most 6.
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);

// y[i, ...] = x[index[i], ...]: index is 1-D i32 or i64 on x's device. The CPU throws ShapeError on an index
// outside [0, x.size(0)); the GPU does not check (such rows come out as zeros).
Tensor index_select(const Tensor& x, const Tensor& index);

}  // namespace sslight
