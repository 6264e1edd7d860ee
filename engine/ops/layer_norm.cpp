// layer_norm: validation, dispatch to kernels/layer_norm (CPU f32/f64, CUDA f32/bf16) and autograd. Forward
// saves x, weight and the per-row mean and rstd (the x dtype on the CPU, f32 on CUDA); backward computes only
// the gradients the mask asks for: dx written, dweight / dbias summed over rows into fresh zeroed tensors.
#include "engine/ops/layer_norm.h"

#include "engine/autograd.h"
#include "kernels/layer_norm.h"

namespace sslight {
namespace {

using kernels::LayerNormParams;

// Runs cpu(T{}) (T = float, double) or gpu(T{}, stream) (T = float, bf16) for `t`'s device and dtype; any
// other dtype is a DTypeError naming the op. A CUDA tensor never falls back to the CPU kernels.
template <class Cpu, class Gpu>
void run(const char* op, const Tensor& t, Cpu&& cpu, Gpu&& gpu) {
    if (t.device().is_cpu()) {
        if (t.dtype() == DType::f32) return cpu(float{});
        if (t.dtype() == DType::f64) return cpu(double{});
        SSL_CHECK_DTYPE(false, op, ": the CPU kernels take f32 or f64, got ", t.str());
    }
#ifdef SSLIGHT_WITH_CUDA
    if (t.dtype() == DType::f32) gpu(float{}, runtime::stream(t.device()));
    else if (t.dtype() == DType::bf16) gpu(bf16{}, runtime::stream(t.device()));
    else SSL_CHECK_DTYPE(false, op, ": the CUDA kernels take f32 or bf16, got ", t.str());
    runtime::after_op(t.device(), op);
#else
    (void)gpu;
    SSL_CHECK_DEVICE(false, op, ": built without CUDA, cannot run on ", t.str());
#endif
}

template <class T>
T* ptr(const Tensor& t) {
    return t.defined() ? t.data<T>() : nullptr;
}

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
        run(
            "layer_norm", x,
            [&](auto t) {
                using T = decltype(t);
                kernels::layer_norm_bwd_cpu(p, ptr<T>(x), ptr<T>(w), ptr<T>(mean), ptr<T>(rstd), ptr<T>(dy),
                                            ptr<T>(dx), ptr<T>(dw), ptr<T>(db));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                Tensor work = dw.defined() || db.defined()
                                  ? empty({kernels::layer_norm_bwd_workspace(p)}, DType::f32, x.device())
                                  : Tensor();
                kernels::cuda::layer_norm_bwd(p, ptr<T>(x), ptr<T>(w), ptr<float>(mean), ptr<float>(rstd), ptr<T>(dy),
                                              ptr<T>(dx), ptr<T>(dw), ptr<T>(db), ptr<float>(work), s);
            });
        return {dx, dw, db};
    }
};

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
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
    run(
        "layer_norm", x,
        [&](auto t) {
            using T = decltype(t);
            kernels::layer_norm_fwd_cpu(p, ptr<T>(x), ptr<T>(weight), ptr<T>(bias), ptr<T>(y), ptr<T>(mean),
                                        ptr<T>(rstd));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            kernels::cuda::layer_norm_fwd(p, ptr<T>(x), ptr<T>(weight), ptr<T>(bias), ptr<T>(y), ptr<float>(mean),
                                          ptr<float>(rstd), s);
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
