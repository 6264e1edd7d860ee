// The SSL loss ops and the EMA update (ssl/losses.h): validation, allocation, CPU/CUDA dispatch to kernels/
// {dino_loss, swav, infonce, ema, gemm} and the autograd nodes. DINO and SwAV share one node: forward saves the
// logits, the targets and the per-row log-sum-exps / target sums, backward recomputes the softmaxes in one
// fused pass (dS written fresh). InfoNCE saves its [B, Kq] logits and turns them into the softmax in place in
// backward (the node runs once), then dq = positive term + P·queue by a GEMM. Per-row statistics are the
// logits' dtype on the CPU and f32 on CUDA.
#include "ssl/losses.h"

#include <cmath>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/shape_ops.h"
#include "engine/profiler.h"
#include "kernels/dino_loss.h"
#include "kernels/ema.h"
#include "kernels/gemm.h"
#include "kernels/infonce.h"
#include "kernels/swav.h"

namespace sslight::ssl {
namespace {

using kernels::DinoLossParams;

DType stats_dtype(const Tensor& logits) { return logits.device().is_cpu() ? logits.dtype() : DType::f32; }

void check_matrix(const char* op, const Tensor& t, const char* what) {
    check_defined(op, t, what);
    SSL_CHECK_SHAPE(t.dim() == 2 && t.size(0) > 0 && t.size(1) > 0, op, ": ", what,
                    " must be a non-empty matrix, got shape ", shape_str(t.shape()));
}

// Constants of the loss (teacher output, codes, keys, queue) must not carry a graph into it.
void check_constant(const char* op, const Tensor& t, const char* what) {
    SSL_CHECK_T(AutogradError, !(grad_enabled() && t.requires_grad()), op, ": ", what,
                " must not require grad (compute it under NoGradGuard or detach() it): ", t.str());
}

void check_finite(const char* op, double v, const char* what, bool positive) {
    SSL_CHECK(std::isfinite(v) && (!positive || v > 0), op, ": ", what, " must be ",
              positive ? "a finite number > 0" : "set to a finite number", ", got ", v);
}

// Shapes: student [V·B, K], target [G·B, K] -> B and V.
DinoLossParams view_params(const char* op, const Tensor& student, const Tensor& target, int n_global) {
    SSL_CHECK(n_global >= 1, op, ": n_global must be >= 1, got ", n_global);
    SSL_CHECK_SHAPE(student.size(1) == target.size(1), op, ": student ", shape_str(student.shape()), " and targets ",
                    shape_str(target.shape()), " differ in K");
    SSL_CHECK_SHAPE(target.size(0) % n_global == 0, op, ": targets ", shape_str(target.shape()), " are not ",
                    n_global, " global crops of B rows each");
    DinoLossParams p;
    p.B = target.size(0) / n_global;
    p.K = student.size(1);
    p.n_global = n_global;
    SSL_CHECK_SHAPE(student.size(0) % p.B == 0 && student.size(0) / p.B >= n_global, op, ": student ",
                    shape_str(student.shape()), " is not V >= ", n_global, " views of B = ", p.B, " rows (targets ",
                    shape_str(target.shape()), ")");
    p.views = int(student.size(0) / p.B);
    if (student.device().is_cuda())
        SSL_CHECK_SHAPE(n_global <= kernels::kDinoMaxGlobal && p.views <= kernels::kDinoMaxViews, op,
                        ": the GPU kernels take at most ", kernels::kDinoMaxGlobal, " global crops and ",
                        kernels::kDinoMaxViews, " views, got ", n_global, " and ", p.views);
    return p;
}

struct CrossViewNode : Node {
    const char* op = "";
    DinoLossParams p;
    Tensor student, target, center, lse_s, tstat;  // detached; center undefined for SwAV
    const char* name() const override { return op; }
    void release() override { student = target = center = lse_s = tstat = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor gy = g[0].dtype() == student.dtype() ? g[0] : g[0].to(student.dtype()), ds = empty_like(student);
        ops::dispatch_float(
            op, student,
            [&](auto t) {
                using T = decltype(t);
                kernels::dino_loss_bwd_cpu(p, ops::data_or_null<T>(student), ops::data_or_null<T>(target), ops::data_or_null<T>(center), ops::data_or_null<T>(lse_s),
                                           ops::data_or_null<T>(tstat), ops::data_or_null<T>(gy), ops::data_or_null<T>(ds));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                kernels::cuda::dino_loss_bwd(p, ops::data_or_null<T>(student), ops::data_or_null<T>(target), ops::data_or_null<float>(center),
                                             ops::data_or_null<float>(lse_s), ops::data_or_null<float>(tstat), ops::data_or_null<T>(gy), ops::data_or_null<T>(ds), s);
            });
        return {ds};
    }
};

// The fused forward shared by DINO (center defined, teacher_mean filled when non-null) and SwAV.
Tensor cross_view_forward(const char* op, const DinoLossParams& p, const Tensor& student, const Tensor& target,
                          const Tensor& center, Tensor* teacher_mean) {
    const Device dev = student.device();
    const DType sd = stats_dtype(student);
    Tensor loss = empty({}, student.dtype(), dev);
    Tensor lse_s = empty({p.views * p.B}, sd, dev), tstat = empty({p.n_global * p.B}, sd, dev);
    if (teacher_mean) *teacher_mean = empty({p.K}, sd, dev);
    Tensor mean_out = teacher_mean ? *teacher_mean : Tensor();
    ops::dispatch_float(
        op, student,
        [&](auto t) {
            using T = decltype(t);
            kernels::dino_loss_fwd_cpu(p, ops::data_or_null<T>(student), ops::data_or_null<T>(target), ops::data_or_null<T>(center), ops::data_or_null<T>(loss),
                                       ops::data_or_null<T>(lse_s), ops::data_or_null<T>(tstat), ops::data_or_null<T>(mean_out));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            Tensor ws = empty({int64_t(kernels::cuda::dino_loss_workspace(p))}, DType::f32, dev);
            kernels::cuda::dino_loss_fwd(p, ops::data_or_null<T>(student), ops::data_or_null<T>(target), ops::data_or_null<float>(center), ops::data_or_null<T>(loss),
                                         ops::data_or_null<float>(lse_s), ops::data_or_null<float>(tstat), ops::data_or_null<float>(mean_out),
                                         ops::data_or_null<float>(ws), s);
        });
    if (needs_record({student})) {
        auto n = std::make_shared<CrossViewNode>();
        n->op = op;
        n->p = p;
        n->student = student.detach();
        n->target = target.detach();
        n->center = center.defined() ? center.detach() : Tensor();
        n->lse_s = lse_s;
        n->tstat = tstat;
        record(n, {student}, {loss});
    }
    return loss;
}

}  // namespace

DinoLossResult dino_loss(const Tensor& student, const Tensor& teacher, const Tensor& center,
                         const DinoLossArgs& args) {
    SSL_PROFILE_OP("dino_loss");
    const char* op = "dino_loss";
    check_matrix(op, student, "student");
    check_matrix(op, teacher, "teacher");
    check_defined(op, center, "center");
    check_float(op, student);
    check_same_dtype(op, student, teacher);
    check_same_device(op, student, teacher);
    check_same_device(op, student, center);
    SSL_CHECK_DTYPE(center.dtype() == stats_dtype(student), op, ": center must be ",
                    dtype_name(stats_dtype(student)), " for ", student.str(), ", got ", center.str());
    SSL_CHECK_SHAPE(center.shape() == Shape{student.size(1)}, op, ": center of shape ", shape_str(center.shape()),
                    " does not match student ", shape_str(student.shape()), " (expected [", student.size(1), "])");
    check_constant(op, teacher, "the teacher output");
    check_constant(op, center, "the center");
    check_finite(op, args.student_temp, "student_temp", true);
    check_finite(op, args.teacher_temp, "teacher_temp", true);
    check_finite(op, args.lambda_gg, "lambda_gg", false);
    check_finite(op, args.lambda_gl, "lambda_gl", false);
    DinoLossParams p = view_params(op, student, teacher, args.n_global);
    p.softmax_targets = true;
    p.student_temp = args.student_temp;
    p.teacher_temp = args.teacher_temp;
    kernels::dino_set_lambdas(p, args.lambda_gg, args.lambda_gl);
    DinoLossResult r;
    r.loss = cross_view_forward(op, p, student, teacher, center, &r.teacher_mean);
    return r;
}

Tensor swav_loss(const Tensor& scores, const std::vector<Tensor>& codes, double lambda_gg, double lambda_gl,
                 double temp) {
    SSL_PROFILE_OP("swav_loss");
    const char* op = "swav_loss";
    check_matrix(op, scores, "scores");
    check_float(op, scores);
    SSL_CHECK(!codes.empty(), op, ": needs the codes of at least one global crop");
    for (const Tensor& c : codes) {
        check_matrix(op, c, "codes");
        check_same_dtype(op, scores, c);
        check_same_device(op, scores, c);
        check_same_shape(op, codes[0], c);
        check_constant(op, c, "codes");
    }
    check_finite(op, temp, "temp", true);
    check_finite(op, lambda_gg, "lambda_gg", false);
    check_finite(op, lambda_gl, "lambda_gl", false);
    Tensor target = codes[0];
    if (codes.size() > 1) {
        NoGradGuard ng;
        target = concat(codes, 0);
    }
    DinoLossParams p = view_params(op, scores, target, int(codes.size()));
    p.softmax_targets = false;
    p.student_temp = temp;
    kernels::dino_set_lambdas(p, lambda_gg, lambda_gl);
    return cross_view_forward(op, p, scores, target, Tensor(), nullptr);
}

Tensor sinkhorn(const Tensor& scores, double eps, int iters, const std::function<void(Tensor&)>& all_reduce,
                int64_t global_rows) {
    SSL_PROFILE_OP("sinkhorn");
    const char* op = "sinkhorn";
    check_matrix(op, scores, "scores");
    check_float(op, scores);
    refuse_grad(op, {scores});
    check_finite(op, eps, "eps", true);
    SSL_CHECK(iters >= 0 && global_rows >= 0, op, ": iters and global_rows must be >= 0, got ", iters, " and ",
              global_rows);
    kernels::SinkhornParams p;
    p.B = scores.size(0);
    p.K = scores.size(1);
    p.eps = eps;
    p.iters = iters;
    p.global_rows = double(global_rows);
    p.shift_max = !all_reduce;
    const Device dev = scores.device();
    Tensor q = empty_like(scores), total = empty({}, stats_dtype(scores), dev);
    Tensor proto = empty({p.K}, stats_dtype(scores), dev);
    auto reduce = [&](int64_t n) {
        if (!all_reduce) return;
        Tensor& t = n == 1 ? total : proto;
        const void* before = t.raw_data();
        all_reduce(t);
        SSL_CHECK(t.defined() && t.raw_data() == before, op, ": all_reduce must reduce its tensor in place");
    };
    ops::dispatch_float(
        op, scores,
        [&](auto t) {
            using T = decltype(t);
            kernels::sinkhorn_cpu(p, ops::data_or_null<T>(scores), ops::data_or_null<T>(q), ops::data_or_null<T>(total), ops::data_or_null<T>(proto), reduce);
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            Tensor ws = empty({int64_t(kernels::cuda::sinkhorn_workspace(p))}, DType::f32, dev);
            kernels::cuda::sinkhorn(p, ops::data_or_null<T>(scores), ops::data_or_null<T>(q), ops::data_or_null<float>(total), ops::data_or_null<float>(proto),
                                    ops::data_or_null<float>(ws), reduce, s);
        });
    return q;
}

namespace {

// C = A·op(B) (+ C with accumulate) through the CPU BLAS or cuBLAS.
template <class T>
void gemm_on(const Device& dev, const kernels::GemmParams& g, const T* a, const T* b, T* c) {
    if (dev.is_cpu()) {
        if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) kernels::gemm_cpu(g, a, b, c);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    if constexpr (!std::is_same_v<T, double>) kernels::cuda::gemm(g, a, b, c, runtime::cublas_handle(dev));
#endif
}

struct InfoNceNode : Node {
    kernels::InfoNceParams p;
    Tensor k, queue, logits, lpos, lse;  // logits: the op's own [B, Kq] dot products, consumed by backward
    const char* name() const override { return "infonce_loss"; }
    void release() override { k = queue = logits = lpos = lse = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>&) override {
        Tensor gy = g[0].dtype() == k.dtype() ? g[0] : g[0].to(k.dtype()), dq = empty_like(k);
        const Device dev = k.device();
        ops::dispatch_float(
            name(), k,
            [&](auto t) {
                using T = decltype(t);
                kernels::infonce_bwd_cpu(p, ops::data_or_null<T>(k), ops::data_or_null<T>(lpos), ops::data_or_null<T>(lse), ops::data_or_null<T>(gy), ops::data_or_null<T>(logits),
                                         ops::data_or_null<T>(dq));
                gemm_on(dev, kernels::gemm_params(p.B, p.D, p.Kq, false, false, 1.f), ops::data_or_null<T>(logits),
                        ops::data_or_null<T>(queue), ops::data_or_null<T>(dq));
            },
            [&](auto t, kernels::Stream s) {
                using T = decltype(t);
                kernels::cuda::infonce_bwd(p, ops::data_or_null<T>(k), ops::data_or_null<float>(lpos), ops::data_or_null<float>(lse), ops::data_or_null<T>(gy),
                                           ops::data_or_null<T>(logits), ops::data_or_null<T>(dq), s);
                gemm_on(dev, kernels::gemm_params(p.B, p.D, p.Kq, false, false, 1.f), ops::data_or_null<T>(logits),
                        ops::data_or_null<T>(queue), ops::data_or_null<T>(dq));
            });
        logits = Tensor();  // now holds the softmax, not the logits
        return {dq};
    }
};

}  // namespace

Tensor infonce_loss(const Tensor& q, const Tensor& k, const Tensor& queue, double temp) {
    SSL_PROFILE_OP("infonce_loss");
    const char* op = "infonce_loss";
    check_matrix(op, q, "queries");
    check_matrix(op, k, "keys");
    check_matrix(op, queue, "queue");
    check_float(op, q);
    for (const Tensor* t : {&k, &queue}) {
        check_same_dtype(op, q, *t);
        check_same_device(op, q, *t);
    }
    check_same_shape(op, q, k);
    SSL_CHECK_SHAPE(queue.size(1) == q.size(1), op, ": queue ", shape_str(queue.shape()), " and queries ",
                    shape_str(q.shape()), " differ in D");
    check_constant(op, k, "the keys");
    check_constant(op, queue, "the queue");
    check_finite(op, temp, "temp", true);
    kernels::InfoNceParams p;
    p.B = q.size(0);
    p.D = q.size(1);
    p.Kq = queue.size(0);
    p.temp = temp;
    const Device dev = q.device();
    const DType sd = stats_dtype(q);
    Tensor loss = empty({}, q.dtype(), dev), logits = empty({p.B, p.Kq}, q.dtype(), dev);
    Tensor lpos = empty({p.B}, sd, dev), lse = empty({p.B}, sd, dev);
    const kernels::GemmParams neg = kernels::gemm_params(p.B, p.Kq, p.D, false, true);
    ops::dispatch_float(
        op, q,
        [&](auto t) {
            using T = decltype(t);
            gemm_on(dev, neg, ops::data_or_null<T>(q), ops::data_or_null<T>(queue), ops::data_or_null<T>(logits));
            kernels::infonce_fwd_cpu(p, ops::data_or_null<T>(q), ops::data_or_null<T>(k), ops::data_or_null<T>(logits), ops::data_or_null<T>(lpos), ops::data_or_null<T>(lse),
                                     ops::data_or_null<T>(loss));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            gemm_on(dev, neg, ops::data_or_null<T>(q), ops::data_or_null<T>(queue), ops::data_or_null<T>(logits));
            Tensor row_loss = empty({p.B}, DType::f32, dev);
            kernels::cuda::infonce_fwd(p, ops::data_or_null<T>(q), ops::data_or_null<T>(k), ops::data_or_null<T>(logits), ops::data_or_null<float>(lpos), ops::data_or_null<float>(lse),
                                       ops::data_or_null<float>(row_loss), ops::data_or_null<T>(loss), s);
        });
    if (needs_record({q})) {
        auto n = std::make_shared<InfoNceNode>();
        n->p = p;
        n->k = k.detach();
        n->queue = queue.detach();
        n->logits = logits;
        n->lpos = lpos;
        n->lse = lse;
        record(n, {q}, {loss});
    }
    return loss;
}

void ema_update(const std::vector<Tensor*>& teacher, const std::vector<Tensor*>& student, double m) {
    SSL_PROFILE_OP("ema_update");
    const char* op = "ema_update";
    SSL_CHECK(teacher.size() == student.size(), op, ": ", teacher.size(), " teacher tensors but ", student.size(),
              " student tensors");
    SSL_CHECK(std::isfinite(m) && m >= 0 && m <= 1, op, ": momentum must be in [0, 1], got ", m);
    if (teacher.empty()) return;
    for (size_t i = 0; i < teacher.size(); ++i) {
        SSL_CHECK(teacher[i] && student[i], op, ": null tensor pointer at position ", i);
        const Tensor &t = *teacher[i], &s = *student[i];
        check_defined(op, t, "teacher");
        check_defined(op, s, "student");
        check_same_shape(op, t, s);
        check_same_dtype(op, t, s);
        check_same_device(op, t, s);
        check_same_device(op, *teacher[0], t);
        check_same_dtype(op, *teacher[0], t);
        SSL_CHECK_T(AutogradError, !(grad_enabled() && t.grad_fn()), op, ": teacher tensor ", i,
                    " was produced by a recorded op; only leaves (parameters, buffers) can be updated in place");
    }
    const Tensor& first = *teacher[0];
    auto slots = [&](auto t) {
        using T = decltype(t);
        std::vector<kernels::EmaSlot<T>> out;
        for (size_t i = 0; i < teacher.size(); ++i)
            out.push_back({teacher[i]->data<T>(), student[i]->data<T>(), teacher[i]->numel()});
        return out;
    };
    if (first.device().is_cpu()) {
        if (first.dtype() == DType::f32) return kernels::ema_update_cpu(slots(float{}), m);
        if (first.dtype() == DType::f64) return kernels::ema_update_cpu(slots(double{}), m);
        SSL_CHECK_DTYPE(false, op, ": the CPU kernel takes f32 or f64, got ", first.str());
    }
#ifdef SSLIGHT_WITH_CUDA
    SSL_CHECK_DTYPE(first.dtype() == DType::f32, op, ": the CUDA kernel takes f32 (master weights), got ",
                    first.str());
    kernels::cuda::ema_update(slots(float{}), m, runtime::stream(first.device()));
    runtime::after_op(first.device(), op);
#else
    SSL_CHECK_DEVICE(false, op, ": built without CUDA, cannot run on ", first.str());
#endif
}

}  // namespace sslight::ssl
