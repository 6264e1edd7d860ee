// softmax and log_softmax over the last dim: validation, dispatch to kernels/softmax (CPU f32/f64, CUDA
// f32/bf16) and autograd. Both save only their output y (detached): softmax dx = y (dy - sum dy y),
// log_softmax dx = dy - exp(y) sum dy, one fused row kernel each way.
#include "engine/ops/softmax.h"

#include "engine/autograd.h"
#include "kernels/softmax.h"

namespace sslight {
namespace {

using kernels::SoftmaxParams;

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
    return t.data<T>();
}

struct SoftmaxNode : Node {
    bool log = false;
    SoftmaxParams p;
    Tensor y;  // the forward output, detached
    const char* name() const override { return log ? "log_softmax" : "softmax"; }
    void release() override { y = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor gy = g[0].dtype() == y.dtype() ? g[0] : g[0].to(y.dtype()), dx = empty_like(y);
        run(
            name(), dx,
            [&](auto t) {
                using T = decltype(t);
                if (log) kernels::log_softmax_bwd_cpu(p, ptr<T>(y), ptr<T>(gy), ptr<T>(dx));
                else kernels::softmax_bwd_cpu(p, ptr<T>(y), ptr<T>(gy), ptr<T>(dx));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                if (log) kernels::cuda::log_softmax_bwd(p, ptr<T>(y), ptr<T>(gy), ptr<T>(dx), s);
                else kernels::cuda::softmax_bwd(p, ptr<T>(y), ptr<T>(gy), ptr<T>(dx), s);
            });
        return {dx};
    }
};

Tensor softmax_impl(const char* op, const Tensor& x, bool log) {
    check_defined(op, x, "input");
    check_float(op, x);
    SSL_CHECK_SHAPE(x.dim() >= 1, op, ": needs at least one dimension, got shape ", shape_str(x.shape()));
    SoftmaxParams p;
    p.C = x.shape().back();
    p.rows = p.C > 0 ? x.numel() / p.C : 0;
    Tensor y = empty_like(x);
    run(
        op, x,
        [&](auto t) {
            using T = decltype(t);
            if (log) kernels::log_softmax_fwd_cpu(p, ptr<T>(x), ptr<T>(y));
            else kernels::softmax_fwd_cpu(p, ptr<T>(x), ptr<T>(y));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            if (log) kernels::cuda::log_softmax_fwd(p, ptr<T>(x), ptr<T>(y), s);
            else kernels::cuda::softmax_fwd(p, ptr<T>(x), ptr<T>(y), s);
        });
    if (needs_record({x})) {
        auto n = std::make_shared<SoftmaxNode>();
        n->log = log;
        n->p = p;
        n->y = y.detach();
        record(n, {x}, {y});
    }
    return y;
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_impl("softmax", x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_impl("log_softmax", x, true); }

}  // namespace sslight
