// softmax and log_softmax over the last dim: validation, dispatch to kernels/softmax (CPU f32/f64, CUDA
// f32/bf16) and autograd. Both save only their output y (detached): softmax dx = y (dy - sum dy y),
// log_softmax dx = dy - exp(y) sum dy, one fused row kernel each way.
#include "engine/ops/softmax.h"

#include "engine/autograd.h"
#include "engine/ops/dispatch.h"
#include "engine/profiler.h"
#include "kernels/softmax.h"

namespace sslight {
namespace {

using kernels::SoftmaxParams;

struct SoftmaxNode : Node {
    bool log = false;
    SoftmaxParams p;
    Tensor y;  // the forward output, detached
    const char* name() const override { return log ? "log_softmax" : "softmax"; }
    void release() override { y = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor gy = g[0].dtype() == y.dtype() ? g[0] : g[0].to(y.dtype()), dx = empty_like(y);
        ops::dispatch_float(
            name(), dx,
            [&](auto t) {
                using T = decltype(t);
                if (log) kernels::log_softmax_bwd_cpu(p, ops::data_or_null<T>(y), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx));
                else kernels::softmax_bwd_cpu(p, ops::data_or_null<T>(y), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                if (log) kernels::cuda::log_softmax_bwd(p, ops::data_or_null<T>(y), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx), s);
                else kernels::cuda::softmax_bwd(p, ops::data_or_null<T>(y), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx), s);
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
    ops::dispatch_float(
        op, x,
        [&](auto t) {
            using T = decltype(t);
            if (log) kernels::log_softmax_fwd_cpu(p, ops::data_or_null<T>(x), ops::data_or_null<T>(y));
            else kernels::softmax_fwd_cpu(p, ops::data_or_null<T>(x), ops::data_or_null<T>(y));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            if (log) kernels::cuda::log_softmax_fwd(p, ops::data_or_null<T>(x), ops::data_or_null<T>(y), s);
            else kernels::cuda::softmax_fwd(p, ops::data_or_null<T>(x), ops::data_or_null<T>(y), s);
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

Tensor softmax(const Tensor& x) {
    SSL_PROFILE_OP("softmax");
    return softmax_impl("softmax", x, false);
}
Tensor log_softmax(const Tensor& x) {
    SSL_PROFILE_OP("log_softmax");
    return softmax_impl("log_softmax", x, true);
}

}  // namespace sslight
