// attention / attention_qkv: validation, CPU / CUDA dispatch to kernels/attention and the backward node. Both ops
// share one node; the layouts differ only in the strides of the kernels' params (attention_qkv reads q, k and v in
// place from the fused projection and writes d(qkv) in place). Forward saves q, k, v (or qkv), the output and lse
// (the input dtype on the CPU, f32 on CUDA); backward returns fresh gradients (=), only those the mask asks for.
#include "engine/ops/attention.h"

#include <climits>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops/dispatch.h"
#include "engine/profiler.h"
#include "kernels/attention.h"

namespace sslight {
namespace {

using kernels::AttentionParams;
constexpr int64_t kMaxHeadDim = 128;

template <class T>
T* ptr(const Tensor& t) {  // nullptr for an undefined tensor
    return ops::data_or_null<T>(t);
}

void check_dims(const char* op, const Tensor& t, int64_t D) {
    SSL_CHECK_SHAPE(D >= 1 && D <= kMaxHeadDim, op, ": head dim D = ", D, " of ", shape_str(t.shape()),
                    " is not supported (1 <= D <= ", kMaxHeadDim, ")");
    SSL_CHECK_SHAPE(t.device().is_cpu() || D % 8 == 0, op, ": head dim D = ", D, " of ", shape_str(t.shape()),
                    " is not supported on ", t.device().str(), " (a multiple of 8, at most ", kMaxHeadDim, ")");
    for (int64_t d : t.shape())
        SSL_CHECK_SHAPE(d <= INT_MAX / 4, op, ": dimension ", d, " of ", shape_str(t.shape()), " is too large");
}

double resolve_scale(const char* op, double scale, int64_t D) {
    SSL_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
    return scale == 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : scale;
}

AttentionParams validate(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
    constexpr const char* op = "attention";
    check_defined(op, q, "q");
    check_defined(op, k, "k");
    check_defined(op, v, "v");
    SSL_CHECK_SHAPE(q.dim() == 4, op, ": q must be [B, heads, T, D], got ", shape_str(q.shape()));
    check_same_shape("attention (q vs k)", q, k);
    check_same_shape("attention (q vs v)", q, v);
    check_same_device(op, q, k);
    check_same_device(op, q, v);
    check_same_dtype(op, q, k);
    check_same_dtype(op, q, v);
    check_float(op, q);
    const int64_t D = q.size(3);
    check_dims(op, q, D);
    return kernels::attention_params_bhtd(int(q.size(0)), int(q.size(1)), int(q.size(2)), int(D),
                                          resolve_scale(op, scale, D));
}

AttentionParams validate_qkv(const Tensor& qkv, int heads) {
    constexpr const char* op = "attention_qkv";
    check_defined(op, qkv, "qkv");
    SSL_CHECK_SHAPE(qkv.dim() == 3, op, ": qkv must be [B, T, 3 * heads * D], got ", shape_str(qkv.shape()));
    SSL_CHECK_SHAPE(heads >= 1, op, ": heads must be >= 1, got ", heads);
    const int64_t C = qkv.size(2);
    SSL_CHECK_SHAPE(C > 0 && C % (3 * int64_t(heads)) == 0, op, ": the last dim of qkv ", shape_str(qkv.shape()),
                    " is not 3 * heads * D with heads = ", heads);
    check_float(op, qkv);
    const int64_t D = C / (3 * int64_t(heads));
    check_dims(op, qkv, D);
    return kernels::attention_params_qkv(int(qkv.size(0)), heads, int(qkv.size(1)), int(D), 0);
}

// The three operand pointers: separate tensors, or q, k, v inside one fused qkv (offsets 0, H*D, 2*H*D).
template <class T>
struct Operands {
    T *q = nullptr, *k = nullptr, *v = nullptr;
};
template <class T>
Operands<T> fused_operands(const Tensor& qkv, const AttentionParams& p) {
    T* base = qkv.data<T>();
    const int64_t hd = int64_t(p.H) * p.D;
    return {base, base + hd, base + 2 * hd};
}
struct AttentionNode : Node {
    AttentionParams p;
    bool fused = false;
    Tensor q, k, v;  // fused: q holds qkv, k and v are undefined
    Tensor out, lse;
    const char* name() const override { return fused ? "attention_qkv" : "attention"; }
    void release() override { q = k = v = out = lse = Tensor(); }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>& needs) override;
};

std::vector<Tensor> AttentionNode::backward(const std::vector<Tensor>& g, const std::vector<bool>& needs) {
    std::vector<Tensor> grads(needs.size());
    if (!g[0].defined()) return grads;  // no gradient reached the output: all input gradients are zero
    const Tensor dout = g[0].dtype() == out.dtype() ? g[0] : g[0].to(out.dtype());
    if (fused) {
        grads[0] = empty_like(q);  // the three slots of d(qkv) are all written
    } else {
        for (size_t i = 0; i < 3; ++i)
            if (needs[i]) grads[i] = empty_like(q);
    }
    auto operands = [&](auto t) {
        using T = decltype(t);
        struct {
            Operands<T> in, d;
        } r;
        if (fused) r.in = fused_operands<T>(q, p), r.d = fused_operands<T>(grads[0], p);
        else r.in = {ptr<T>(q), ptr<T>(k), ptr<T>(v)}, r.d = {ptr<T>(grads[0]), ptr<T>(grads[1]), ptr<T>(grads[2])};
        return r;
    };
    ops::dispatch_float(
        name(), out,
        [&](auto t) {
            using T = decltype(t);
            const auto o = operands(t);
            kernels::attention_bwd_cpu(p, o.in.q, o.in.k, o.in.v, ptr<T>(out), ptr<T>(dout), ptr<T>(lse), o.d.q,
                                       o.d.k, o.d.v);
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            const auto o = operands(t);
            Tensor ws = empty({int64_t(kernels::cuda::attention_bwd_workspace(p))}, DType::f32, out.device());
            kernels::cuda::attention_bwd(p, o.in.q, o.in.k, o.in.v, ptr<T>(out), ptr<T>(dout), ptr<float>(lse),
                                         o.d.q, o.d.k, o.d.v, ptr<float>(ws), s);
        });
    return grads;
}

// Forward shared by both ops: q, k, v (fused: qkv in q, k and v undefined) into the allocated output y.
Tensor forward(const char* op, const AttentionParams& p, bool fused, const Tensor& q, const Tensor& k,
               const Tensor& v, Tensor y) {
    const Tensor& x = q;
    const DType stats = x.device().is_cpu() ? x.dtype() : DType::f32;
    Tensor lse = empty({p.B, p.H, p.T}, stats, x.device());
    auto operands = [&](auto t) {
        using T = decltype(t);
        return fused ? fused_operands<T>(q, p) : Operands<T>{ptr<T>(q), ptr<T>(k), ptr<T>(v)};
    };
    ops::dispatch_float(
        op, x,
        [&](auto t) {
            using T = decltype(t);
            const Operands<T> o = operands(t);
            kernels::attention_fwd_cpu(p, o.q, o.k, o.v, ptr<T>(y), ptr<T>(lse));
        },
        [&](auto t, kernels::Stream s) {
            using T = decltype(t);
            const Operands<T> o = operands(t);
            kernels::cuda::attention_fwd(p, o.q, o.k, o.v, ptr<T>(y), ptr<float>(lse), s);
        });
    const std::vector<Tensor> inputs = fused ? std::vector<Tensor>{q} : std::vector<Tensor>{q, k, v};
    if (needs_record(inputs)) {
        auto n = std::make_shared<AttentionNode>();
        n->p = p;
        n->fused = fused;
        n->q = q.detach();
        if (!fused) n->k = k.detach(), n->v = v.detach();
        n->out = y.detach();
        n->lse = lse;
        record(n, inputs, {y});
    }
    return y;
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
    SSL_PROFILE_OP("attention");
    const AttentionParams p = validate(q, k, v, scale);
    return forward("attention", p, false, q, k, v, empty(q.shape(), q.dtype(), q.device()));
}

Tensor attention_qkv(const Tensor& qkv, int heads, double scale) {
    SSL_PROFILE_OP("attention_qkv");
    AttentionParams p = validate_qkv(qkv, heads);
    p.scale = resolve_scale("attention_qkv", scale, p.D);
    Tensor y = empty({p.B, p.T, int64_t(p.H) * p.D}, qkv.dtype(), qkv.device());
    return forward("attention_qkv", p, true, qkv, Tensor(), Tensor(), y);
}

}  // namespace sslight
