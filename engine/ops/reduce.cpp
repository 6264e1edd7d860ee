// Reduction ops: validation, dispatch to kernels/reduce (CPU f32/f64, CUDA f32/bf16) and autograd. The tensor
// is viewed as [outer, n, inner] around the reduced dim (a full reduction is [1, numel, 1]). Gradients:
// sum/mean broadcast dy (scaled by 1/n for mean); max routes dy to the saved first-maximal index; l2_norm
// dx = dy x / ||x||; l2_normalize dx = (dy - y (dy.y)) / ||x|| (dy / eps where the eps clamp is active).
#include "engine/ops/reduce.h"

#include <cmath>
#include <limits>

#include "engine/autograd.h"
#include "engine/ops/dispatch.h"
#include "engine/profiler.h"
#include "kernels/reduce.h"

namespace sslight {
namespace {

using kernels::ReduceParams;

Tensor as_dtype(const Tensor& g, DType t) { return g.dtype() == t ? g : g.to(t); }

int64_t wrap_dim(const char* op, const Tensor& a, int64_t dim) {
    const int64_t nd = a.dim();
    SSL_CHECK_SHAPE(dim >= -nd && dim < nd, op, ": dim ", dim, " out of range for shape ", shape_str(a.shape()));
    return dim < 0 ? dim + nd : dim;
}

ReduceParams params_for(const Shape& s, int64_t d) {
    ReduceParams p;
    for (int64_t i = 0; i < d; ++i) p.outer *= s[i];
    p.n = s[d];
    for (size_t i = d + 1; i < s.size(); ++i) p.inner *= s[i];
    return p;
}

Shape reduced_shape(const Shape& s, int64_t d, bool keepdim) {
    Shape out = s;
    if (keepdim) out[d] = 1;
    else out.erase(out.begin() + d);
    return out;
}

// A float workspace for the split GPU reductions (undefined when none is needed).
Tensor workspace(int64_t n, DType t, Device d) { return n > 0 ? empty({n}, t, d) : Tensor(); }

struct SumNode : Node {
    const char* op = "sum";
    ReduceParams p;
    double scale = 1.0;
    Shape in_shape;
    DType dtype = DType::f32;
    Device device;
    const char* name() const override { return op; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor gy = as_dtype(g[0], dtype), dx = empty(in_shape, dtype, device);
        ops::dispatch_float(
            op, dx, [&](auto t) { kernels::sum_dim_bwd_cpu(p, ops::data_or_null<decltype(t)>(gy), ops::data_or_null<decltype(t)>(dx), scale); },
            [&](auto t, kernels::Stream s) {
                kernels::cuda::sum_dim_bwd(p, ops::data_or_null<decltype(t)>(gy), ops::data_or_null<decltype(t)>(dx), scale, s);
            });
        return {dx};
    }
};

Tensor sum_impl(const char* op, const Tensor& a, const ReduceParams& p, const Shape& out_shape, double scale) {
    check_defined(op, a, "input");
    check_float(op, a);
    Tensor out = empty(out_shape, a.dtype(), a.device());
    ops::dispatch_float(
        op, a, [&](auto t) { kernels::sum_dim_fwd_cpu(p, ops::data_or_null<decltype(t)>(a), ops::data_or_null<decltype(t)>(out), scale); },
        [&](auto t, kernels::Stream s) {
            Tensor work = workspace(kernels::reduce_workspace(p), DType::f32, a.device());
            kernels::cuda::sum_dim_fwd(p, ops::data_or_null<decltype(t)>(a), ops::data_or_null<decltype(t)>(out), scale, ops::data_or_null<float>(work), s);
        });
    if (needs_record({a})) {
        auto n = std::make_shared<SumNode>();
        n->op = op;
        n->p = p;
        n->scale = scale;
        n->in_shape = a.shape();
        n->dtype = a.dtype();
        n->device = a.device();
        record(n, {a}, {out});
    }
    return out;
}

struct MaxNode : Node {
    ReduceParams p;
    Shape in_shape;
    DType dtype = DType::f32;
    Tensor idx;  // i32 (outer, inner): the first maximal k
    const char* name() const override { return "max"; }
    void release() override { idx = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor gy = as_dtype(g[0], dtype), dx = empty(in_shape, dtype, idx.device());
        ops::dispatch_float(
            "max", dx,
            [&](auto t) {
                kernels::max_dim_bwd_cpu(p, ops::data_or_null<decltype(t)>(gy), ops::data_or_null<int32_t>(idx), ops::data_or_null<decltype(t)>(dx));
            },
            [&](auto t, kernels::Stream s) {
                kernels::cuda::max_dim_bwd(p, ops::data_or_null<decltype(t)>(gy), ops::data_or_null<int32_t>(idx), ops::data_or_null<decltype(t)>(dx), s);
            });
        return {dx};
    }
};

Tensor max_impl(const Tensor& a, const ReduceParams& p, const Shape& out_shape) {
    check_defined("max", a, "input");
    check_float("max", a);
    SSL_CHECK_SHAPE(p.n > 0, "max: cannot reduce an empty dimension of shape ", shape_str(a.shape()));
    SSL_CHECK_SHAPE(p.n <= std::numeric_limits<int32_t>::max(), "max: reduced dimension of ", p.n,
                    " elements exceeds the int32 index range (shape ", shape_str(a.shape()), ")");
    Tensor out = empty(out_shape, a.dtype(), a.device());
    Tensor idx = empty(out_shape, DType::i32, a.device());
    ops::dispatch_float(
        "max", a,
        [&](auto t) { kernels::max_dim_fwd_cpu(p, ops::data_or_null<decltype(t)>(a), ops::data_or_null<decltype(t)>(out), ops::data_or_null<int32_t>(idx)); },
        [&](auto t, kernels::Stream s) {
            const int64_t ws = kernels::reduce_workspace(p);
            Tensor work = workspace(ws, DType::f32, a.device()), work_idx = workspace(ws, DType::i32, a.device());
            kernels::cuda::max_dim_fwd(p, ops::data_or_null<decltype(t)>(a), ops::data_or_null<decltype(t)>(out), ops::data_or_null<int32_t>(idx),
                                       ops::data_or_null<float>(work), ops::data_or_null<int32_t>(work_idx), s);
        });
    if (needs_record({a})) {
        auto n = std::make_shared<MaxNode>();
        n->p = p;
        n->in_shape = a.shape();
        n->dtype = a.dtype();
        n->idx = idx;
        record(n, {a}, {out});
    }
    return out;
}

// ---- L2 over the last dim ----------------------------------------------------------------------------------

// Saved: x (l2_norm) or y (l2_normalize), and the per-row norm (the output itself on the CPU, f32 on CUDA).
struct L2Node : Node {
    bool normalize = false;
    double eps = 0;
    int64_t rows = 0, D = 0;
    Tensor saved, norm;
    const char* name() const override { return normalize ? "l2_normalize" : "l2_norm"; }
    void release() override { saved = norm = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override;
};

std::vector<Tensor> L2Node::backward(const std::vector<Tensor>& g, const std::vector<bool>&) {
    Tensor gy = as_dtype(g[0], saved.dtype()), dx = empty_like(saved);
    ops::dispatch_float(
        name(), dx,
        [&](auto t) {
            using T = decltype(t);
            if (normalize)
                kernels::l2_normalize_bwd_cpu(rows, D, eps, ops::data_or_null<T>(saved), ops::data_or_null<T>(norm), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx));
            else
                kernels::l2_norm_bwd_cpu(rows, D, ops::data_or_null<T>(saved), ops::data_or_null<T>(norm), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            if (normalize)
                kernels::cuda::l2_normalize_bwd(rows, D, eps, ops::data_or_null<T>(saved), ops::data_or_null<float>(norm), ops::data_or_null<T>(gy),
                                                ops::data_or_null<T>(dx), s);
            else
                kernels::cuda::l2_norm_bwd(rows, D, ops::data_or_null<T>(saved), ops::data_or_null<float>(norm), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx), s);
        });
    return {dx};
}

Tensor l2_impl(const char* op, const Tensor& a, bool normalize, double eps) {
    check_defined(op, a, "input");
    check_float(op, a);
    SSL_CHECK_SHAPE(a.dim() >= 1, op, ": needs at least one dimension, got shape ", shape_str(a.shape()));
    SSL_CHECK(!normalize || eps > 0, op, ": eps must be positive, got ", eps);
    const int64_t D = a.shape().back(), rows = D > 0 ? a.numel() / D : 0;
    Shape row_shape(a.shape().begin(), a.shape().end() - 1);
    Tensor out = normalize ? empty_like(a) : empty(row_shape, a.dtype(), a.device());
    Tensor norm = !normalize && a.device().is_cpu() ? out
                  : empty(row_shape, a.device().is_cpu() ? a.dtype() : DType::f32, a.device());
    ops::dispatch_float(
        op, a,
        [&](auto t) {
            using T = decltype(t);
            if (normalize) kernels::l2_normalize_fwd_cpu(rows, D, eps, ops::data_or_null<T>(a), ops::data_or_null<T>(out), ops::data_or_null<T>(norm));
            else kernels::l2_norm_fwd_cpu(rows, D, ops::data_or_null<T>(a), ops::data_or_null<T>(out));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            if (normalize) kernels::cuda::l2_normalize_fwd(rows, D, eps, ops::data_or_null<T>(a), ops::data_or_null<T>(out), ops::data_or_null<float>(norm), s);
            else kernels::cuda::l2_norm_fwd(rows, D, ops::data_or_null<T>(a), ops::data_or_null<T>(out), ops::data_or_null<float>(norm), s);
        });
    if (needs_record({a})) {
        auto n = std::make_shared<L2Node>();
        n->normalize = normalize;
        n->eps = eps;
        n->rows = rows;
        n->D = D;
        n->saved = normalize ? out.detach() : a.detach();
        n->norm = norm.detach();
        record(n, {a}, {out});
    }
    return out;
}

ReduceParams full_params(const Tensor& a) {
    ReduceParams p;
    p.n = a.numel();
    return p;
}

}  // namespace

Tensor sum(const Tensor& a) {
    SSL_PROFILE_OP("sum");
    return sum_impl("sum", a, full_params(a), {}, 1.0);
}

Tensor sum(const Tensor& a, int64_t dim, bool keepdim) {
    SSL_PROFILE_OP("sum");
    const int64_t d = wrap_dim("sum", a, dim);
    return sum_impl("sum", a, params_for(a.shape(), d), reduced_shape(a.shape(), d, keepdim), 1.0);
}

Tensor mean(const Tensor& a) {
    SSL_PROFILE_OP("mean");
    const int64_t n = a.numel();
    return sum_impl("mean", a, full_params(a), {}, n > 0 ? 1.0 / static_cast<double>(n) : std::nan(""));
}

Tensor mean(const Tensor& a, int64_t dim, bool keepdim) {
    SSL_PROFILE_OP("mean");
    const int64_t d = wrap_dim("mean", a, dim);
    const int64_t n = a.shape()[d];
    return sum_impl("mean", a, params_for(a.shape(), d), reduced_shape(a.shape(), d, keepdim),
                    n > 0 ? 1.0 / static_cast<double>(n) : std::nan(""));
}

Tensor max(const Tensor& a) {
    SSL_PROFILE_OP("max");
    return max_impl(a, full_params(a), {});
}

Tensor max(const Tensor& a, int64_t dim, bool keepdim) {
    SSL_PROFILE_OP("max");
    const int64_t d = wrap_dim("max", a, dim);
    return max_impl(a, params_for(a.shape(), d), reduced_shape(a.shape(), d, keepdim));
}

Tensor l2_norm(const Tensor& a) {
    SSL_PROFILE_OP("l2_norm");
    return l2_impl("l2_norm", a, false, 0.0);
}
Tensor l2_normalize(const Tensor& a, double eps) {
    SSL_PROFILE_OP("l2_normalize");
    return l2_impl("l2_normalize", a, true, eps);
}

}  // namespace sslight
