// cross_entropy (hard labels) and cross_entropy_soft (probability targets), mean over rows: validation,
// dispatch to the fused kernels of kernels/softmax and autograd. Forward saves the logits, the labels or
// targets and the per-row log-sum-exp (plus sum_c t for soft targets); backward recomputes softmax from them:
// d/dlogits = (softmax - onehot) g / N or (softmax sum t - t) g / N, d/dtargets = -log_softmax g / N.
#include "engine/autograd.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/softmax.h"
#include "engine/profiler.h"
#include "kernels/softmax.h"

namespace sslight {
namespace {

using kernels::SoftmaxParams;

// Calls f(L{}) with L the label type (int32_t or int64_t).
template <class F>
void with_labels(const Tensor& labels, F&& f) {
    if (labels.dtype() == DType::i64) f(int64_t{});
    else f(int32_t{});
}

SoftmaxParams check_logits(const char* op, const Tensor& logits) {
    check_defined(op, logits, "logits");
    check_float(op, logits);
    SSL_CHECK_SHAPE(logits.dim() == 2, op, ": logits must be [N, C], got shape ", shape_str(logits.shape()));
    SoftmaxParams p;
    p.rows = logits.shape()[0];
    p.C = logits.shape()[1];
    return p;
}

void check_labels(const Tensor& logits, const Tensor& labels) {
    check_defined("cross_entropy", labels, "labels");
    SSL_CHECK_DTYPE(labels.dtype() == DType::i64 || labels.dtype() == DType::i32,
                    "cross_entropy: labels must be i64 or i32, got ", labels.str());
    SSL_CHECK_SHAPE(labels.shape() == Shape{logits.shape()[0]}, "cross_entropy: labels of shape ",
                    shape_str(labels.shape()), " do not match logits of shape ", shape_str(logits.shape()),
                    " (expected [", logits.shape()[0], "])");
    check_same_device("cross_entropy", logits, labels);
    if (!labels.device().is_cpu()) return;  // GPU labels are trusted (see softmax.h)
    const int64_t C = logits.shape()[1];
    with_labels(labels, [&](auto l) {
        const auto* v = labels.data<decltype(l)>();
        for (int64_t r = 0; r < labels.numel(); ++r)
            SSL_CHECK(v[r] >= 0 && static_cast<int64_t>(v[r]) < C, "cross_entropy: label ", v[r], " at row ", r,
                      " is out of range [0, ", C, ") for logits of shape ", shape_str(logits.shape()));
    });
}

struct CrossEntropyNode : Node {
    SoftmaxParams p;
    Tensor logits, labels, lse;  // lse: (N), the logits' dtype on the CPU, f32 on CUDA
    const char* name() const override { return "cross_entropy"; }
    void release() override { logits = labels = lse = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor gy = g[0].dtype() == logits.dtype() ? g[0] : g[0].to(logits.dtype()), dx = empty_like(logits);
        with_labels(labels, [&](auto l) {
            using L = decltype(l);
            ops::dispatch_float(
                name(), dx,
                [&](auto t) {
                    using T = decltype(t);
                    kernels::cross_entropy_bwd_cpu(p, ops::data_or_null<T>(logits), ops::data_or_null<L>(labels), ops::data_or_null<T>(lse), ops::data_or_null<T>(gy),
                                                   ops::data_or_null<T>(dx));
                },
                [&](auto t, kernels::Stream s) {
                    using T = decltype(t);
                    kernels::cuda::cross_entropy_bwd(p, ops::data_or_null<T>(logits), ops::data_or_null<L>(labels), ops::data_or_null<float>(lse), ops::data_or_null<T>(gy),
                                                     ops::data_or_null<T>(dx), s);
                });
        });
        return {dx};
    }
};

struct CrossEntropySoftNode : Node {
    SoftmaxParams p;
    Tensor logits, targets, lse, tsum;  // lse, tsum: (N), the logits' dtype on the CPU, f32 on CUDA
    const char* name() const override { return "cross_entropy_soft"; }
    void release() override { logits = targets = lse = tsum = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>& needs) override {
        Tensor gy = g[0].dtype() == logits.dtype() ? g[0] : g[0].to(logits.dtype());
        Tensor dx = needs[0] ? empty_like(logits) : Tensor(), dt = needs[1] ? empty_like(targets) : Tensor();
        ops::dispatch_float(
            name(), logits,
            [&](auto t) {
                using T = decltype(t);
                kernels::cross_entropy_soft_bwd_cpu(p, ops::data_or_null<T>(logits), ops::data_or_null<T>(targets), ops::data_or_null<T>(lse), ops::data_or_null<T>(tsum),
                                                    ops::data_or_null<T>(gy), ops::data_or_null<T>(dx), ops::data_or_null<T>(dt));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                kernels::cuda::cross_entropy_soft_bwd(p, ops::data_or_null<T>(logits), ops::data_or_null<T>(targets), ops::data_or_null<float>(lse),
                                                      ops::data_or_null<float>(tsum), ops::data_or_null<T>(gy), ops::data_or_null<T>(dx), ops::data_or_null<T>(dt), s);
            });
        return {dx, dt};
    }
};

DType stats_dtype(const Tensor& logits) { return logits.device().is_cpu() ? logits.dtype() : DType::f32; }

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
    SSL_PROFILE_OP("cross_entropy");
    const SoftmaxParams p = check_logits("cross_entropy", logits);
    check_labels(logits, labels);
    Tensor loss = empty({}, logits.dtype(), logits.device());
    Tensor lse = empty({p.rows}, stats_dtype(logits), logits.device());
    with_labels(labels, [&](auto l) {
        using L = decltype(l);
        ops::dispatch_float(
            "cross_entropy", logits,
            [&](auto t) {
                using T = decltype(t);
                kernels::cross_entropy_fwd_cpu(p, ops::data_or_null<T>(logits), ops::data_or_null<L>(labels), ops::data_or_null<T>(loss), ops::data_or_null<T>(lse));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                Tensor row_loss = empty({p.rows}, DType::f32, logits.device());
                kernels::cuda::cross_entropy_fwd(p, ops::data_or_null<T>(logits), ops::data_or_null<L>(labels), ops::data_or_null<T>(loss), ops::data_or_null<float>(lse),
                                                 ops::data_or_null<float>(row_loss), s);
            });
    });
    if (needs_record({logits})) {
        auto n = std::make_shared<CrossEntropyNode>();
        n->p = p;
        n->logits = logits.detach();
        n->labels = labels.detach();
        n->lse = lse;
        record(n, {logits}, {loss});
    }
    return loss;
}

Tensor cross_entropy_soft(const Tensor& logits, const Tensor& targets) {
    SSL_PROFILE_OP("cross_entropy_soft");
    const SoftmaxParams p = check_logits("cross_entropy_soft", logits);
    check_defined("cross_entropy_soft", targets, "targets");
    check_same_device("cross_entropy_soft", logits, targets);
    check_same_dtype("cross_entropy_soft", logits, targets);
    check_same_shape("cross_entropy_soft", logits, targets);
    Tensor loss = empty({}, logits.dtype(), logits.device());
    Tensor lse = empty({p.rows}, stats_dtype(logits), logits.device());
    Tensor tsum = empty({p.rows}, stats_dtype(logits), logits.device());
    ops::dispatch_float(
        "cross_entropy_soft", logits,
        [&](auto t) {
            using T = decltype(t);
            kernels::cross_entropy_soft_fwd_cpu(p, ops::data_or_null<T>(logits), ops::data_or_null<T>(targets), ops::data_or_null<T>(loss), ops::data_or_null<T>(lse),
                                                ops::data_or_null<T>(tsum));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            Tensor row_loss = empty({p.rows}, DType::f32, logits.device());
            kernels::cuda::cross_entropy_soft_fwd(p, ops::data_or_null<T>(logits), ops::data_or_null<T>(targets), ops::data_or_null<T>(loss), ops::data_or_null<float>(lse),
                                                  ops::data_or_null<float>(tsum), ops::data_or_null<float>(row_loss), s);
        });
    if (needs_record({logits, targets})) {
        auto n = std::make_shared<CrossEntropySoftNode>();
        n->p = p;
        n->logits = logits.detach();
        n->targets = targets.detach();
        n->lse = lse;
        n->tsum = tsum;
        record(n, {logits, targets}, {loss});
    }
    return loss;
}

}  // namespace sslight
