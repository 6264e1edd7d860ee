// concat, split, permute and index_select: validation, allocation, CPU/CUDA dispatch and backward.
// Along dim 0 the pieces of concat/split are contiguous byte ranges (runtime::copy per piece); along the
// last dim they are strided row copies (kernels/shape.h row_copy). Backward: concat -> copy the slices of dy
// out; split -> assemble dy from the output gradients (zeros where an output got none); permute -> the
// inverse permutation; index_select -> scatter-add of dy rows into zeros in increasing index position.
#include "engine/ops/shape_ops.h"

#include <type_traits>

#include "engine/autograd.h"
#include "engine/profiler.h"
#include "kernels/shape.h"

namespace sslight {
namespace {

// Gradients arrive in the output's dtype; a cast here keeps the raw copies safe if one ever does not.
Tensor in_dtype(const Tensor& g, DType t) { return g.defined() && g.dtype() != t ? g.to(t) : g; }

// True for the last dim of a tensor of rank >= 2, false for dim 0 (rank 1's only dim counts as dim 0).
bool resolve_cat_dim(const char* op, const Shape& s, int64_t dim) {
    const int64_t r = static_cast<int64_t>(s.size());
    SSL_CHECK_SHAPE(r >= 1, op, ": needs tensors of at least 1 dim, got ", shape_str(s));
    const int64_t d = dim < 0 ? dim + r : dim;
    SSL_CHECK_SHAPE(d == 0 || d == r - 1, op, ": dim ", dim, " of the ", r, "-D shape ", shape_str(s),
                    " is not supported: only dim 0 and the last dim (-1 or ", r - 1, ")");
    return d == r - 1 && r > 1;
}

void copy_cols(const void* src, int64_t src_ld, void* dst, int64_t dst_ld, int64_t rows, int64_t cols, size_t esz,
               Device dev) {
    const kernels::RowCopyParams p{rows, cols, src_ld, dst_ld};
    if (dev.is_cpu()) {
        kernels::row_copy_cpu(p, src, dst, esz);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::cuda::row_copy(p, src, dst, esz, runtime::stream(dev));
    runtime::after_op(dev, "row_copy");
#endif
}

// Copies between `joined` and its pieces (sizes along dim 0 or the last dim). to_joined: pieces -> joined,
// else joined -> pieces. Undefined pieces are skipped.
void move_pieces(const Tensor& joined, const std::vector<Tensor>& pieces, const std::vector<int64_t>& sizes,
                 bool last, bool to_joined) {
    const size_t esz = dtype_size(joined.dtype());
    const Device dev = joined.device();
    const Shape& s = joined.shape();
    const int64_t total = last ? s.back() : s.front();
    const int64_t rows = shape_numel(Shape(s.begin(), s.end() - 1));  // last dim: rows of the row copies
    const int64_t slab = shape_numel(Shape(s.begin() + 1, s.end()));  // dim 0: elements per index
    auto* jp = static_cast<char*>(joined.raw_data());
    int64_t off = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
        if (pieces[i].defined() && sizes[i] > 0) {
            auto* pp = static_cast<char*>(pieces[i].raw_data());
            if (!last) {
                char* at = jp + static_cast<size_t>(off * slab) * esz;
                const size_t bytes = static_cast<size_t>(sizes[i] * slab) * esz;
                if (to_joined)
                    runtime::copy(at, dev, pp, dev, bytes);
                else
                    runtime::copy(pp, dev, at, dev, bytes);
            } else if (to_joined) {
                copy_cols(pp, sizes[i], jp + static_cast<size_t>(off) * esz, total, rows, sizes[i], esz, dev);
            } else {
                copy_cols(jp + static_cast<size_t>(off) * esz, total, pp, sizes[i], rows, sizes[i], esz, dev);
            }
        }
        off += sizes[i];
    }
}

struct ConcatNode : Node {
    std::vector<Shape> shapes;
    std::vector<int64_t> sizes;
    DType dtype = DType::f32;
    Device device;
    bool last = false;
    const char* name() const override { return "concat"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        std::vector<Tensor> out(shapes.size());
        if (!grads[0].defined()) return out;
        for (size_t i = 0; i < shapes.size(); ++i)
            if (needs[i]) out[i] = empty(shapes[i], dtype, device);
        move_pieces(in_dtype(grads[0], dtype), out, sizes, last, false);
        return out;
    }
};

struct SplitNode : Node {
    Shape in_shape;
    std::vector<int64_t> sizes;
    DType dtype = DType::f32;
    Device device;
    bool last = false;
    const char* name() const override { return "split"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>&) override {
        bool any = false, all = true;
        std::vector<Tensor> gs;
        for (const Tensor& g : grads) {
            any |= g.defined();
            all &= g.defined();
            gs.push_back(in_dtype(g, dtype));
        }
        if (!any) return {Tensor()};
        Tensor dx = all ? empty(in_shape, dtype, device) : zeros(in_shape, dtype, device);
        move_pieces(dx, gs, sizes, last, true);
        return {dx};
    }
};

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
    SSL_PROFILE_OP("concat");
    SSL_CHECK_SHAPE(!xs.empty(), "concat: no tensors given");
    for (const Tensor& x : xs) check_defined("concat", x, "an input");
    const Tensor& x0 = xs[0];
    const bool last = resolve_cat_dim("concat", x0.shape(), dim);
    const size_t axis = last ? x0.shape().size() - 1 : 0;
    Shape out_shape = x0.shape();
    out_shape[axis] = 0;
    std::vector<int64_t> sizes;
    for (const Tensor& x : xs) {
        check_same_dtype("concat", x0, x);
        check_same_device("concat", x0, x);
        Shape a = x0.shape(), b = x.shape();
        bool ok = a.size() == b.size();
        if (ok) {
            a[axis] = b[axis] = 0;
            ok = a == b;
        }
        SSL_CHECK_SHAPE(ok, "concat: shapes ", shape_str(x0.shape()), " and ", shape_str(x.shape()),
                        " differ outside dim ", axis);
        sizes.push_back(x.shape()[axis]);
        out_shape[axis] += sizes.back();
    }
    Tensor out = empty(out_shape, x0.dtype(), x0.device());
    move_pieces(out, xs, sizes, last, true);
    if (needs_record(xs)) {
        auto n = std::make_shared<ConcatNode>();
        for (const Tensor& x : xs) n->shapes.push_back(x.shape());
        n->sizes = sizes;
        n->dtype = x0.dtype();
        n->device = x0.device();
        n->last = last;
        record(n, xs, {out});
    }
    return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
    SSL_PROFILE_OP("split");
    check_defined("split", x, "x");
    const bool last = resolve_cat_dim("split", x.shape(), dim);
    const size_t axis = last ? x.shape().size() - 1 : 0;
    SSL_CHECK_SHAPE(!sizes.empty(), "split: no sizes given for ", x.str());
    int64_t total = 0;
    for (int64_t s : sizes) {
        SSL_CHECK_SHAPE(s >= 0, "split: negative size in ", shape_str(sizes));
        total += s;
    }
    SSL_CHECK_SHAPE(total == x.shape()[axis], "split: sizes ", shape_str(sizes), " sum to ", total, " but ",
                    shape_str(x.shape()), " has ", x.shape()[axis], " along dim ", axis);
    std::vector<Tensor> outs;
    for (int64_t s : sizes) {
        Shape piece = x.shape();
        piece[axis] = s;
        outs.push_back(empty(piece, x.dtype(), x.device()));
    }
    move_pieces(x, outs, sizes, last, false);
    if (needs_record({x})) {
        auto n = std::make_shared<SplitNode>();
        n->in_shape = x.shape();
        n->sizes = sizes;
        n->dtype = x.dtype();
        n->device = x.device();
        n->last = last;
        record(n, {x}, outs);
    }
    return outs;
}

namespace {

// y = x permuted by perm (already validated and normalised).
Tensor permute_copy(const Tensor& x, const std::vector<int>& perm) {
    Shape out_shape;
    for (int d : perm) out_shape.push_back(x.shape()[d]);
    Tensor y = empty(out_shape, x.dtype(), x.device());
    if (x.dim() == 0) {
        runtime::copy(y.raw_data(), y.device(), x.raw_data(), x.device(), x.nbytes());
        return y;
    }
    kernels::PermuteParams p;
    p.rank = static_cast<int>(x.dim());
    for (int d = 0; d < p.rank; ++d) {
        p.shape[d] = x.shape()[d];
        p.perm[d] = perm[d];
    }
    const size_t esz = dtype_size(x.dtype());
    if (x.device().is_cpu()) {
        kernels::permute_cpu(p, x.raw_data(), y.raw_data(), esz);
        return y;
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::cuda::permute(p, x.raw_data(), y.raw_data(), esz, runtime::stream(x.device()));
    runtime::after_op(x.device(), "permute");
#endif
    return y;
}

struct PermuteNode : Node {
    std::vector<int> inverse;
    DType dtype = DType::f32;
    const char* name() const override { return "permute"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>&) override {
        if (!grads[0].defined()) return {Tensor()};
        return {permute_copy(in_dtype(grads[0], dtype), inverse)};
    }
};

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
    SSL_PROFILE_OP("permute");
    check_defined("permute", x, "x");
    const int64_t r = x.dim();
    SSL_CHECK_SHAPE(r <= kernels::kMaxPermuteRank, "permute: rank ", r, " of ", shape_str(x.shape()),
                    " is over the supported ", kernels::kMaxPermuteRank);
    SSL_CHECK_SHAPE(static_cast<int64_t>(dims.size()) == r, "permute: dims ", shape_str(dims), " for the ", r,
                    "-D shape ", shape_str(x.shape()), " (need one entry per dim)");
    std::vector<int> perm(dims.size()), inverse(dims.size(), -1);
    for (size_t k = 0; k < dims.size(); ++k) {
        const int64_t d = dims[k] < 0 ? dims[k] + r : dims[k];
        SSL_CHECK_SHAPE(d >= 0 && d < r, "permute: dim ", dims[k], " in ", shape_str(dims), " is out of range for ",
                        shape_str(x.shape()));
        SSL_CHECK_SHAPE(inverse[d] < 0, "permute: dims ", shape_str(dims), " repeat dim ", d,
                        " (must be a permutation of 0..", r - 1, ")");
        perm[k] = static_cast<int>(d);
        inverse[d] = static_cast<int>(k);
    }
    Tensor y = permute_copy(x, perm);
    if (needs_record({x})) {
        auto n = std::make_shared<PermuteNode>();
        n->inverse = inverse;
        n->dtype = x.dtype();
        record(n, {x}, {y});
    }
    return y;
}

namespace {

template <class T>
void index_select_bwd_dispatch(const kernels::IndexSelectParams& p, const Tensor& g, const Tensor& index,
                               const Tensor& dx) {
    // Only the supported (device, dtype) pairs are instantiated; index_select_grad_supported was checked.
    const bool i64 = index.dtype() == DType::i64;
    if (dx.device().is_cpu()) {
        if constexpr (!std::is_same<T, bf16>::value) {
            if (i64)
                kernels::index_select_bwd_cpu(p, g.data<T>(), index.data<int64_t>(), dx.data<T>());
            else
                kernels::index_select_bwd_cpu(p, g.data<T>(), index.data<int32_t>(), dx.data<T>());
        }
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    if constexpr (!std::is_same<T, double>::value) {
        const kernels::Stream s = runtime::stream(dx.device());
        if (i64)
            kernels::cuda::index_select_bwd(p, g.data<T>(), index.data<int64_t>(), dx.data<T>(), s);
        else
            kernels::cuda::index_select_bwd(p, g.data<T>(), index.data<int32_t>(), dx.data<T>(), s);
        runtime::after_op(dx.device(), "index_select_bwd");
    }
#endif
}

bool index_select_grad_supported(const Tensor& x) {
    if (x.device().is_cpu()) return x.dtype() == DType::f32 || x.dtype() == DType::f64;
    return x.dtype() == DType::f32 || x.dtype() == DType::bf16;
}

struct IndexSelectNode : Node {
    Tensor index;
    Shape in_shape;
    DType dtype = DType::f32;
    Device device;
    kernels::IndexSelectParams p;
    const char* name() const override { return "index_select"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>&) override {
        if (!grads[0].defined()) return {Tensor()};
        const Tensor g = in_dtype(grads[0], dtype);
        Tensor dx = empty(in_shape, dtype, device);
        switch (dtype) {
            case DType::f64: index_select_bwd_dispatch<double>(p, g, index, dx); break;
            case DType::bf16: index_select_bwd_dispatch<bf16>(p, g, index, dx); break;
            default: index_select_bwd_dispatch<float>(p, g, index, dx); break;
        }
        return {dx};
    }
    void release() override { index = Tensor(); }
};

}  // namespace

Tensor index_select(const Tensor& x, const Tensor& index) {
    SSL_PROFILE_OP("index_select");
    check_defined("index_select", x, "x");
    check_defined("index_select", index, "index");
    check_same_device("index_select", x, index);
    SSL_CHECK_DTYPE(index.dtype() == DType::i32 || index.dtype() == DType::i64,
                    "index_select: index must be i32 or i64, got ", index.str());
    SSL_CHECK_SHAPE(index.dim() == 1, "index_select: index must be 1-D, got ", shape_str(index.shape()));
    SSL_CHECK_SHAPE(x.dim() >= 1, "index_select: x must have at least 1 dim, got ", shape_str(x.shape()));
    const bool rec = needs_record({x});
    SSL_CHECK_DTYPE(!rec || index_select_grad_supported(x), "index_select: no backward for ", x.str(),
                    " (CPU: f32, f64; GPU: f32, bf16)");
    kernels::IndexSelectParams p;
    p.rows_in = x.size(0);
    p.n_index = index.size(0);
    p.row_size = shape_numel(Shape(x.shape().begin() + 1, x.shape().end()));
    Shape out_shape = x.shape();
    out_shape[0] = p.n_index;
    Tensor y = empty(out_shape, x.dtype(), x.device());
    const size_t esz = dtype_size(x.dtype());
    const bool i64 = index.dtype() == DType::i64;
    if (x.device().is_cpu()) {
        if (i64)
            kernels::index_select_cpu(p, x.raw_data(), index.data<int64_t>(), y.raw_data(), esz);
        else
            kernels::index_select_cpu(p, x.raw_data(), index.data<int32_t>(), y.raw_data(), esz);
    } else {
#ifdef SSLIGHT_WITH_CUDA
        const kernels::Stream s = runtime::stream(x.device());
        if (i64)
            kernels::cuda::index_select(p, x.raw_data(), index.data<int64_t>(), y.raw_data(), esz, s);
        else
            kernels::cuda::index_select(p, x.raw_data(), index.data<int32_t>(), y.raw_data(), esz, s);
        runtime::after_op(x.device(), "index_select");
#endif
    }
    if (rec) {
        auto n = std::make_shared<IndexSelectNode>();
        n->index = index.detach();
        n->in_shape = x.shape();
        n->dtype = x.dtype();
        n->device = x.device();
        n->p = p;
        record(n, {x}, {y});
    }
    return y;
}

}  // namespace sslight
