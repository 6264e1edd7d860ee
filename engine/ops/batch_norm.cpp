// batch_norm: PyTorch's BatchNorm1d/2d on channels-innermost tensors with a fused none/relu/relu6 activation
// (engine/ops/batch_norm.h). Training: local statistics -> optional cross-rank sums -> mean/rstd and the running
// update; backward recomputes the pre-activation from x and the saved mean/rstd (no extra saved tensor) and
// returns dx = w·rstd·(dz - Σdz/N - x̂·Σdz·x̂/N) (eval: w·rstd·dz), dweight = Σdz·x̂, dbias = Σdz.
#include "engine/ops/batch_norm.h"

#include "engine/autograd.h"
#include "engine/profiler.h"
#include "kernels/batch_norm.h"

namespace sslight {
namespace {

constexpr const char* kOp = "batch_norm";

using kernels::BatchNormParams;

kernels::BnAct kernel_act(Activation a) {
    switch (a) {
        case Activation::relu: return kernels::BnAct::relu;
        case Activation::relu6: return kernels::BnAct::relu6;
        case Activation::none: break;
    }
    return kernels::BnAct::none;
}

// Statistics (and parameters as the kernels read them) are f64 for f64 inputs, else f32.
DType stats_dtype(const Tensor& x) { return x.dtype() == DType::f64 ? DType::f64 : DType::f32; }

// An optional parameter in the statistics dtype, off the tape.
Tensor as_stats(const Tensor& t, DType d) {
    if (!t.defined()) return t;
    NoGradGuard ng;
    return t.dtype() == d ? t.detach() : t.detach().to(d);
}

template <class S>
const S* cptr(const Tensor& t) {
    return t.defined() ? t.data<S>() : nullptr;
}
float* fptr(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

// Calls f(T{}) with the storage type of x: float or double on the CPU, float or bf16 on CUDA.
template <class F>
void on_cpu(const Tensor& x, F&& f) {
    if (x.dtype() == DType::f64)
        f(double{});
    else
        f(float{});
}
#ifdef SSLIGHT_WITH_CUDA
template <class F>
void on_cuda(const Tensor& x, F&& f) {
    if (x.dtype() == DType::bf16)
        f(bf16{});
    else
        f(float{});
    runtime::after_op(x.device(), kOp);
}
Tensor workspace(const BatchNormParams& p, Device d) { return empty({kernels::bn_workspace(p)}, DType::f32, d); }
#else
[[noreturn]] void no_cuda() { SSL_FAIL(kOp, ": this build has no CUDA support"); }
#endif

void check_param(const Tensor& x, const Tensor& t, const char* what, bool running) {
    if (!t.defined()) return;
    const int64_t C = x.size(-1);
    check_same_device(kOp, x, t);
    SSL_CHECK_SHAPE(t.shape() == Shape{C}, kOp, ": ", what, " has shape ", shape_str(t.shape()), " but the input ",
                    shape_str(x.shape()), " has C = ", C, " channels (expected ", shape_str({C}), ")");
    if (running) {
        SSL_CHECK_DTYPE(t.dtype() == DType::f32, kOp, ": ", what, " must be an f32 buffer, got ", t.str());
    } else {
        SSL_CHECK_DTYPE(t.dtype() == x.dtype() || t.dtype() == DType::f32, kOp, ": ", what, " must have the input's "
                        "dtype or f32: ", t.str(), " for input ", x.str());
    }
}

void validate(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& rm, const Tensor& rv,
              const BatchNormArgs& a) {
    check_defined(kOp, x, "input");
    check_float(kOp, x);
    SSL_CHECK_SHAPE(x.dim() >= 2, kOp, ": input must be [..., C] with at least 2 dims, got ", shape_str(x.shape()));
    SSL_CHECK_SHAPE(x.size(-1) > 0, kOp, ": input ", shape_str(x.shape()), " has no channels");
    if (x.device().is_cpu())
        SSL_CHECK_DTYPE(x.dtype() != DType::bf16, kOp, ": bf16 is not supported on the CPU (use f32): ", x.str());
    else
        SSL_CHECK_DTYPE(x.dtype() != DType::f64, kOp, ": f64 is not supported on CUDA (use f32 or bf16): ", x.str());
    check_param(x, w, "weight", false);
    check_param(x, b, "bias", false);
    SSL_CHECK(rm.defined() == rv.defined(), kOp, ": running_mean and running_var must both be defined or both "
              "undefined, got ", rm.str(), " and ", rv.str());
    check_param(x, rm, "running_mean", true);
    check_param(x, rv, "running_var", true);
    SSL_CHECK(a.training || rm.defined(), kOp, ": eval mode (training = false) needs running_mean and running_var");
    SSL_CHECK(a.eps > 0, kOp, ": eps must be > 0, got ", a.eps);
    SSL_CHECK(a.momentum >= 0 && a.momentum <= 1, kOp, ": momentum must be in [0, 1], got ", a.momentum);
    const int64_t M = x.numel() / x.size(-1);
    if (a.training && !a.all_reduce)
        SSL_CHECK_SHAPE(M > 1, kOp, ": training needs more than one value per channel, got input shape ",
                        shape_str(x.shape()));
    if (a.training)
        SSL_CHECK_SHAPE(M >= 1, kOp, ": training needs at least one row per rank, got input shape ",
                        shape_str(x.shape()));
}

// Runs the all-reduce hook on `t`; the hook may sum in place or assign a new tensor of the same kind.
void call_hook(const StatsAllReduce& hook, Tensor& t, const char* which) {
    const Shape shape = t.shape();
    const DType dtype = t.dtype();
    const Device dev = t.device();
    hook(t);
    SSL_CHECK(t.defined() && t.shape() == shape && t.dtype() == dtype && t.device() == dev, kOp, ": the all_reduce "
              "hook must leave the ", which, " statistics as ", shape_str(shape), " ", dtype_name(dtype), " on ",
              dev.str(), ", got ", t.str());
}

// Training statistics, with the hook between the steps: returns save = [mean (C), rstd (C), N].
Tensor train_stats(const BatchNormParams& p, const Tensor& x, Tensor& rm, Tensor& rv, const StatsAllReduce& hook) {
    const DType sd = stats_dtype(x);
    const Device dev = x.device();
    Tensor local = empty({2 * p.C}, sd, dev), s1 = empty({p.C + 1}, sd, dev), s2 = empty({p.C}, sd, dev);
    Tensor save = empty({2 * p.C + 1}, sd, dev);
    if (dev.is_cpu()) {
        on_cpu(x, [&](auto tag) {
            using T = decltype(tag);
            kernels::bn_stats_cpu<T>(p, x.data<T>(), local.data<T>(), s1.data<T>());
            if (hook) call_hook(hook, s1, "first (sum)");
            kernels::bn_stats_m2_cpu<T>(p, local.data<T>(), s1.data<T>(), s2.data<T>());
            if (hook) call_hook(hook, s2, "second (M2)");
            kernels::bn_stats_finalize_cpu<T>(p, s1.data<T>(), s2.data<T>(), save.data<T>(), fptr(rm), fptr(rv));
        });
        return save;
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::Stream s = runtime::stream(dev);
    Tensor work = workspace(p, dev);
    on_cuda(x, [&](auto tag) {
        using T = decltype(tag);
        kernels::cuda::bn_stats<T>(p, x.data<T>(), work.data<float>(), local.data<float>(), s1.data<float>(), s);
    });
    if (hook) call_hook(hook, s1, "first (sum)");
    kernels::cuda::bn_stats_m2(p, local.data<float>(), s1.data<float>(), s2.data<float>(), s);
    if (hook) call_hook(hook, s2, "second (M2)");
    kernels::cuda::bn_stats_finalize(p, s1.data<float>(), s2.data<float>(), save.data<float>(), fptr(rm), fptr(rv), s);
    runtime::after_op(dev, kOp);
    return save;
#else
    no_cuda();
#endif
}

Tensor eval_stats(const BatchNormParams& p, const Tensor& x, const Tensor& rm, const Tensor& rv) {
    Tensor save = empty({2 * p.C + 1}, stats_dtype(x), x.device());
    if (x.device().is_cpu()) {
        on_cpu(x, [&](auto tag) {
            using T = decltype(tag);
            kernels::bn_stats_eval_cpu<T>(p, rm.data<float>(), rv.data<float>(), save.data<T>());
        });
        return save;
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::cuda::bn_stats_eval(p, rm.data<float>(), rv.data<float>(), save.data<float>(),
                                 runtime::stream(x.device()));
    runtime::after_op(x.device(), kOp);
    return save;
#else
    no_cuda();
#endif
}

Tensor normalise(const BatchNormParams& p, const Tensor& x, const Tensor& save, const Tensor& w, const Tensor& b) {
    Tensor y = empty_like(x);
    if (x.device().is_cpu()) {
        on_cpu(x, [&](auto tag) {
            using T = decltype(tag);
            kernels::bn_fwd_cpu<T>(p, x.data<T>(), save.data<T>(), cptr<T>(w), cptr<T>(b), y.data<T>());
        });
        return y;
    }
#ifdef SSLIGHT_WITH_CUDA
    on_cuda(x, [&](auto tag) {
        using T = decltype(tag);
        kernels::cuda::bn_fwd<T>(p, x.data<T>(), save.data<float>(), cptr<float>(w), cptr<float>(b), y.data<T>(),
                                 runtime::stream(x.device()));
    });
    return y;
#else
    no_cuda();
#endif
}

// sums = [Σdz (C), Σdz·x̂ (C)] over this rank's rows.
Tensor backward_sums(const BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& save, const Tensor& w,
                     const Tensor& b) {
    Tensor sums = empty({2 * p.C}, stats_dtype(x), x.device());
    if (x.device().is_cpu()) {
        on_cpu(x, [&](auto tag) {
            using T = decltype(tag);
            kernels::bn_bwd_reduce_cpu<T>(p, x.data<T>(), dy.data<T>(), save.data<T>(), cptr<T>(w), cptr<T>(b),
                                          sums.data<T>());
        });
        return sums;
    }
#ifdef SSLIGHT_WITH_CUDA
    Tensor work = workspace(p, x.device());
    on_cuda(x, [&](auto tag) {
        using T = decltype(tag);
        kernels::cuda::bn_bwd_reduce<T>(p, x.data<T>(), dy.data<T>(), save.data<float>(), cptr<float>(w),
                                        cptr<float>(b), work.data<float>(), sums.data<float>(),
                                        runtime::stream(x.device()));
    });
    return sums;
#else
    no_cuda();
#endif
}

Tensor backward_dx(const BatchNormParams& p, const Tensor& x, const Tensor& dy, const Tensor& save, const Tensor& w,
                   const Tensor& b, const Tensor& sums) {
    Tensor dx = empty_like(x);
    if (x.device().is_cpu()) {
        on_cpu(x, [&](auto tag) {
            using T = decltype(tag);
            kernels::bn_bwd_dx_cpu<T>(p, x.data<T>(), dy.data<T>(), save.data<T>(), cptr<T>(w), cptr<T>(b),
                                      cptr<T>(sums), dx.data<T>());
        });
        return dx;
    }
#ifdef SSLIGHT_WITH_CUDA
    on_cuda(x, [&](auto tag) {
        using T = decltype(tag);
        kernels::cuda::bn_bwd_dx<T>(p, x.data<T>(), dy.data<T>(), save.data<float>(), cptr<float>(w), cptr<float>(b),
                                    cptr<float>(sums), dx.data<T>(), runtime::stream(x.device()));
    });
    return dx;
#else
    no_cuda();
#endif
}

// A parameter gradient from a slice of `sums`, in the parameter's dtype; copied when the sums will be all-reduced.
Tensor param_grad(const Tensor& part, DType dtype, bool copy) {
    if (part.dtype() != dtype) return part.to(dtype);
    return copy ? part.clone() : part;
}

struct BatchNormNode : Node {
    BatchNormParams p;
    Tensor x, w, b, save;  // w, b in the statistics dtype, or undefined
    DType w_dtype = DType::f32, b_dtype = DType::f32;
    StatsAllReduce all_reduce;

    const char* name() const override { return kOp; }

    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        Tensor dy = grads[0];
        if (!dy.defined()) return {Tensor(), Tensor(), Tensor()};
        if (dy.dtype() != x.dtype()) dy = dy.to(x.dtype());
        const bool need_dx = needs[0], need_dw = needs[1], need_db = needs[2];
        const bool global = need_dx && p.training && all_reduce;
        Tensor sums, dx, dw, db;
        if (need_dw || need_db || (need_dx && p.training)) sums = backward_sums(p, x, dy, save, w, b);
        if (need_db) db = param_grad(sums.slice(0, p.C), b_dtype, global);
        if (need_dw) dw = param_grad(sums.slice(p.C, 2 * p.C), w_dtype, global);
        if (global) call_hook(all_reduce, sums, "backward");
        if (need_dx) dx = backward_dx(p, x, dy, save, w, b, sums);
        return {dx, dw, db};
    }
    void release() override {
        x = w = b = save = Tensor();
        all_reduce = nullptr;
    }
};

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                  Tensor& running_var, const BatchNormArgs& args) {
    SSL_PROFILE_OP("batch_norm");
    validate(x, weight, bias, running_mean, running_var, args);
    BatchNormParams p;
    p.C = x.size(-1);
    p.M = x.numel() / p.C;
    p.eps = args.eps;
    p.momentum = args.momentum;
    p.act = kernel_act(args.act);
    p.training = args.training;

    const DType sd = stats_dtype(x);
    Tensor w = as_stats(weight, sd), b = as_stats(bias, sd);
    Tensor save;
    {
        NoGradGuard ng;  // the hook and the statistics are not part of the tape
        save = args.training ? train_stats(p, x, running_mean, running_var, args.all_reduce)
                             : eval_stats(p, x, running_mean, running_var);
    }
    Tensor y = normalise(p, x, save, w, b);
    if (needs_record({x, weight, bias})) {
        auto node = std::make_shared<BatchNormNode>();
        node->p = p;
        node->x = x.detach();
        node->w = w;
        node->b = b;
        node->save = save;
        if (weight.defined()) node->w_dtype = weight.dtype();
        if (bias.defined()) node->b_dtype = bias.dtype();
        node->all_reduce = args.all_reduce;
        record(node, {x, weight, bias}, {y});
    }
    return y;
}

}  // namespace sslight
