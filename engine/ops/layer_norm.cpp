// layer_norm: validation, dispatch to kernels/layer_norm (CPU f32/f64, CUDA f32/bf16) and autograd. Forward
// saves x, weight and the per-row mean and rstd (the x dtype on the CPU, f32 on CUDA); backward computes only
// the gradients the mask asks for: dx written, dweight / dbias summed over rows into fresh zeroed tensors.
#include "engine/ops/layer_norm.h"

#include "engine/autograd.h"
#include "engine/ops/dispatch.h"
#include "engine/profiler.h"
#include "kernels/layer_norm.h"

namespace sslight {
namespace {

using kernels::LayerNormParams;

void check_param(const Tensor& x, const Tensor& w, const char* what) {
    if (!w.defined()) return;
    const int64_t C = x.shape().back();
    SSL_CHECK_SHAPE(w.shape() == Shape{C}, "layer_norm: ", what, " of shape ", shape_str(w.shape()),
                    " does not match x of shape ", shape_str(x.shape()), " (expected [", C, "])");
    check_same_device("layer_norm", x, w);
    check_same_dtype("layer_norm", x, w);
}

struct LayerNormNode : Node {
    LayerNormParams p;
    Tensor x, w, mean, rstd;
    const char* name() const override { return "layer_norm"; }
    void release() override { x = w = mean = rstd = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>& needs) override {
        Tensor dy = g[0].dtype() == x.dtype() ? g[0] : g[0].to(x.dtype());
        Tensor dx = needs[0] ? empty_like(x) : Tensor();
        Tensor dw = needs[1] ? zeros({p.C}, x.dtype(), x.device()) : Tensor();
        Tensor db = needs[2] ? zeros({p.C}, x.dtype(), x.device()) : Tensor();
        ops::dispatch_float(
            "layer_norm", x,
            [&](auto t) {
                using T = decltype(t);
                kernels::layer_norm_bwd_cpu(p, ops::data_or_null<T>(x), ops::data_or_null<T>(w), ops::data_or_null<T>(mean), ops::data_or_null<T>(rstd), ops::data_or_null<T>(dy),
                                            ops::data_or_null<T>(dx), ops::data_or_null<T>(dw), ops::data_or_null<T>(db));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                Tensor work = dw.defined() || db.defined()
                                  ? empty({kernels::layer_norm_bwd_workspace(p)}, DType::f32, x.device())
                                  : Tensor();
                kernels::cuda::layer_norm_bwd(p, ops::data_or_null<T>(x), ops::data_or_null<T>(w), ops::data_or_null<float>(mean), ops::data_or_null<float>(rstd), ops::data_or_null<T>(dy),
                                              ops::data_or_null<T>(dx), ops::data_or_null<T>(dw), ops::data_or_null<T>(db), ops::data_or_null<float>(work), s);
            });
        return {dx, dw, db};
    }
};

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
    SSL_PROFILE_OP("layer_norm");
    check_defined("layer_norm", x, "x");
    check_float("layer_norm", x);
    SSL_CHECK_SHAPE(x.dim() >= 1, "layer_norm: x needs at least one dimension, got shape ", shape_str(x.shape()));
    SSL_CHECK(eps >= 0, "layer_norm: eps must be non-negative, got ", eps);
    check_param(x, weight, "weight");
    check_param(x, bias, "bias");
    LayerNormParams p;
    p.C = x.shape().back();
    p.rows = p.C > 0 ? x.numel() / p.C : 0;
    p.eps = eps;
    const DType stats = x.device().is_cpu() ? x.dtype() : DType::f32;
    Tensor y = empty_like(x), mean = empty({p.rows}, stats, x.device()), rstd = empty({p.rows}, stats, x.device());
    ops::dispatch_float(
        "layer_norm", x,
        [&](auto t) {
            using T = decltype(t);
            kernels::layer_norm_fwd_cpu(p, ops::data_or_null<T>(x), ops::data_or_null<T>(weight), ops::data_or_null<T>(bias), ops::data_or_null<T>(y), ops::data_or_null<T>(mean),
                                        ops::data_or_null<T>(rstd));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            kernels::cuda::layer_norm_fwd(p, ops::data_or_null<T>(x), ops::data_or_null<T>(weight), ops::data_or_null<T>(bias), ops::data_or_null<T>(y), ops::data_or_null<float>(mean),
                                          ops::data_or_null<float>(rstd), s);
        });
    if (needs_record({x, weight, bias})) {
        auto n = std::make_shared<LayerNormNode>();
        n->p = p;
        n->x = x.detach();
        n->w = weight.defined() ? weight.detach() : Tensor();
        n->mean = mean;
        n->rstd = rstd;
        record(n, {x, weight, bias}, {y});
    }
    return y;
}

}  // namespace sslight
