// Element-wise ops: validation, dispatch to kernels/elementwise (CPU f32/f64, CUDA f32/bf16) and autograd.
// Unary y = f(x): backward dx = dy * f'(.) from the saved input, or the saved output for exp, sqrt, sigmoid
// and tanh; scalar arithmetic is the affine op (dx = s0 dy). Binary a op b: da written elementwise, db of a
// broadcast b reduced over the broadcast rows; only the operands the needed gradients read are saved.
#include "engine/ops/elementwise.h"

#include <type_traits>

#include "engine/autograd.h"
#include "engine/profiler.h"
#include "kernels/elementwise.h"

namespace sslight {
namespace {

using kernels::BinaryOp;
using kernels::BinaryParams;
using kernels::UnaryOp;
using kernels::UnaryParams;

template <class T>
constexpr bool kCpuType = std::is_same<T, float>::value || std::is_same<T, double>::value;
template <class T>
constexpr bool kGpuType = std::is_same<T, float>::value || std::is_same<T, bf16>::value;

template <class T>
T* ptr(const Tensor& t) {
    return t.defined() ? t.data<T>() : nullptr;
}

// Throws DTypeError unless `t`'s dtype has kernels on its device.
void check_supported(const char* op, const Tensor& t) {
    check_float(op, t);
    if (t.device().is_cpu())
        SSL_CHECK_DTYPE(t.dtype() != DType::bf16, op, ": bf16 is not supported on the CPU (f32, f64): ", t.str());
    else
        SSL_CHECK_DTYPE(t.dtype() != DType::f64, op, ": f64 is not supported on the GPU (f32, bf16): ", t.str());
}

// Calls f(T{}) with T the storage type of `t` (f32, f64 or bf16), device-agnostic.
template <class F>
void with_dtype(const Tensor& t, F f) {
    switch (t.dtype()) {
        case DType::f32: return f(float{});
        case DType::f64: return f(double{});
        case DType::bf16: return f(bf16{});
        default: SSL_FAIL("element-wise kernel on ", t.str());
    }
}

// Runs the CPU kernel `cpu_fn(T{})` or the CUDA kernel `gpu_fn(T{}, stream)` for `ref`'s dtype and device.
template <class Cpu, class Gpu>
void dispatch(const char* op, const Tensor& ref, Cpu cpu_fn, Gpu gpu_fn) {
    with_dtype(ref, [&](auto tag) {
        using T = decltype(tag);
        if (ref.device().is_cpu()) {
            if constexpr (kCpuType<T>) cpu_fn(tag);
            return;
        }
#ifdef SSLIGHT_WITH_CUDA
        if constexpr (kGpuType<T>) gpu_fn(tag, runtime::stream(ref.device()));
        runtime::after_op(ref.device(), op);
#else
        (void)gpu_fn;
        SSL_CHECK_DEVICE(false, op, ": built without CUDA, cannot run on ", ref.str());
#endif
    });
}

void unary_fwd_any(const char* op, const UnaryParams& p, const Tensor& x, const Tensor& y) {
    dispatch(
        op, x, [&](auto t) { kernels::unary_fwd_cpu(p, ptr<decltype(t)>(x), ptr<decltype(t)>(y)); },
        [&](auto t, kernels::Stream s) {
#ifdef SSLIGHT_WITH_CUDA
            kernels::cuda::unary_fwd(p, ptr<decltype(t)>(x), ptr<decltype(t)>(y), s);
#endif
        });
}

void binary_fwd_any(const char* op, const BinaryParams& p, const Tensor& a, const Tensor& b, const Tensor& out) {
    dispatch(
        op, a,
        [&](auto t) {
            using T = decltype(t);
            kernels::binary_fwd_cpu(p, ptr<T>(a), ptr<T>(b), ptr<T>(out));
        },
        [&](auto t, kernels::Stream s) {
#ifdef SSLIGHT_WITH_CUDA
            using T = decltype(t);
            kernels::cuda::binary_fwd(p, ptr<T>(a), ptr<T>(b), ptr<T>(out), s);
#endif
        });
}

struct UnaryNode : Node {
    const char* op = "";
    UnaryParams p;
    Tensor saved;  // x, y (unary_saves_output) or undefined (affine)
    DType dtype = DType::f32;
    const char* name() const override { return op; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        if (!needs[0] || !grads[0].defined()) return {Tensor()};
        const Tensor g = grads[0].dtype() == dtype ? grads[0] : grads[0].to(dtype);
        Tensor dx = empty_like(g);
        dispatch(
            op, g,
            [&](auto t) {
                using T = decltype(t);
                kernels::unary_bwd_cpu(p, ptr<T>(saved), ptr<T>(g), ptr<T>(dx));
            },
            [&](auto t, kernels::Stream s) {
#ifdef SSLIGHT_WITH_CUDA
                using T = decltype(t);
                kernels::cuda::unary_bwd(p, ptr<T>(saved), ptr<T>(g), ptr<T>(dx), s);
#endif
            });
        return {dx};
    }
    void release() override { saved = Tensor(); }
};

Tensor unary(const char* op, UnaryOp uop, double s0, double s1, const Tensor& x) {
    SSL_PROFILE_OP(op);
    check_defined(op, x, "input");
    check_supported(op, x);
    const UnaryParams p{x.numel(), uop, s0, s1};
    Tensor y = empty_like(x);
    unary_fwd_any(op, p, x, y);
    if (needs_record({x})) {
        auto n = std::make_shared<UnaryNode>();
        n->op = op;
        n->p = p;
        n->dtype = x.dtype();
        if (kernels::unary_needs_saved(uop)) n->saved = kernels::unary_saves_output(uop) ? y.detach() : x.detach();
        record(n, {x}, {y});
    }
    return y;
}

struct BinaryNode : Node {
    const char* op = "";
    BinaryParams p;
    Tensor a, b;  // saved only where the needed gradients read them
    Shape b_shape;
    DType dtype = DType::f32;
    const char* name() const override { return op; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        if (!grads[0].defined()) return {Tensor(), Tensor()};
        const Tensor g = grads[0].dtype() == dtype ? grads[0] : grads[0].to(dtype);
        Tensor da = needs[0] ? empty_like(g) : Tensor();
        Tensor db = needs[1] ? empty(b_shape, dtype, g.device()) : Tensor();
        Tensor ws;
        if (db.defined() && g.device().is_cuda() && kernels::binary_bwd_workspace(p) > 0)
            ws = empty({kernels::binary_bwd_workspace(p)}, DType::f32, g.device());
        dispatch(
            op, g,
            [&](auto t) {
                using T = decltype(t);
                kernels::binary_bwd_cpu(p, ptr<T>(a), ptr<T>(b), ptr<T>(g), ptr<T>(da), ptr<T>(db));
            },
            [&](auto t, kernels::Stream s) {
#ifdef SSLIGHT_WITH_CUDA
                using T = decltype(t);
                kernels::cuda::binary_bwd(p, ptr<T>(a), ptr<T>(b), ptr<T>(g), ptr<T>(da), ptr<T>(db), ptr<float>(ws),
                                          s);
#endif
            });
        return {da, db};
    }
    void release() override {
        a = Tensor();
        b = Tensor();
    }
};

// Elements of b for a: a's count (same shape), 1 (one element) or a.size(-1) (1-D b over the last dim).
int64_t broadcast_size(const char* op, const Tensor& a, const Tensor& b) {
    if (a.shape() == b.shape()) return a.numel();
    if (b.numel() == 1) return 1;
    if (a.dim() >= 1 && b.dim() == 1 && b.size(0) == a.size(-1)) return b.size(0);
    SSL_CHECK_SHAPE(false, op, ": cannot broadcast b of shape ", shape_str(b.shape()), " to a of shape ",
                    shape_str(a.shape()), " (b must have a's shape, one element, or shape [a.size(-1)])");
    return 0;
}

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
    check_defined(op, a, "a");
    check_defined(op, b, "b");
    check_same_device(op, a, b);
    check_same_dtype(op, a, b);
    check_supported(op, a);
}

Tensor binary(const char* op, BinaryOp bop, double alpha, const Tensor& a, const Tensor& b) {
    SSL_PROFILE_OP(op);
    check_pair(op, a, b);
    const BinaryParams p{a.numel(), broadcast_size(op, a, b), bop, alpha};
    Tensor out = empty_like(a);
    binary_fwd_any(op, p, a, b, out);
    if (needs_record({a, b})) {
        auto n = std::make_shared<BinaryNode>();
        n->op = op;
        n->p = p;
        n->b_shape = b.shape();
        n->dtype = a.dtype();
        // mul: da = dy b, db = dy a; div: da = dy / b, db = -dy a / b^2; add: neither operand.
        if (bop != BinaryOp::add && b.requires_grad()) n->a = a.detach();
        if ((bop == BinaryOp::mul && a.requires_grad()) || bop == BinaryOp::div) n->b = b.detach();
        record(n, {a, b}, {out});
    }
    return out;
}

void check_inplace(const char* op, const Tensor& a) {
    check_defined(op, a, "the updated tensor");
    check_supported(op, a);
    SSL_CHECK_T(AutogradError, !(grad_enabled() && a.grad_fn()), op,
                ": in-place update of a tensor produced by a recorded op would break its graph: ", a.str(),
                " (use it on leaves, detach(), or run under NoGradGuard)");
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", BinaryOp::add, 1.0, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", BinaryOp::add, -1.0, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", BinaryOp::mul, 1.0, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary("div", BinaryOp::div, 1.0, a, b); }

Tensor add(const Tensor& a, double s) { return unary("add_scalar", UnaryOp::affine, 1.0, s, a); }
Tensor sub(const Tensor& a, double s) { return unary("sub_scalar", UnaryOp::affine, 1.0, -s, a); }
Tensor mul(const Tensor& a, double s) { return unary("mul_scalar", UnaryOp::affine, s, 0.0, a); }
Tensor div(const Tensor& a, double s) { return unary("div_scalar", UnaryOp::affine, 1.0 / s, 0.0, a); }
Tensor rsub(double s, const Tensor& a) { return unary("rsub", UnaryOp::affine, -1.0, s, a); }
Tensor rdiv(double s, const Tensor& a) { return unary("rdiv", UnaryOp::rdiv, s, 0.0, a); }

Tensor neg(const Tensor& a) { return unary("neg", UnaryOp::affine, -1.0, 0.0, a); }
Tensor exp(const Tensor& a) { return unary("exp", UnaryOp::exp, 0.0, 0.0, a); }
Tensor log(const Tensor& a) { return unary("log", UnaryOp::log, 0.0, 0.0, a); }
Tensor sqrt(const Tensor& a) { return unary("sqrt", UnaryOp::sqrt, 0.0, 0.0, a); }
Tensor pow(const Tensor& a, double p) { return unary("pow", UnaryOp::pow, p, 0.0, a); }
Tensor abs(const Tensor& a) { return unary("abs", UnaryOp::abs, 0.0, 0.0, a); }
Tensor clamp(const Tensor& a, double lo, double hi) {
    SSL_CHECK(lo <= hi, "clamp: lo (", lo, ") must not exceed hi (", hi, ")");
    return unary("clamp", UnaryOp::clamp, lo, hi, a);
}
Tensor relu(const Tensor& a) { return unary("relu", UnaryOp::relu, 0.0, 0.0, a); }
Tensor relu6(const Tensor& a) { return unary("relu6", UnaryOp::relu6, 0.0, 0.0, a); }
Tensor gelu(const Tensor& a) { return unary("gelu", UnaryOp::gelu, 0.0, 0.0, a); }
Tensor sigmoid(const Tensor& a) { return unary("sigmoid", UnaryOp::sigmoid, 0.0, 0.0, a); }
Tensor tanh(const Tensor& a) { return unary("tanh", UnaryOp::tanh, 0.0, 0.0, a); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double s) { return add(a, s); }
Tensor operator-(const Tensor& a, double s) { return sub(a, s); }
Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
Tensor operator/(const Tensor& a, double s) { return div(a, s); }
Tensor operator+(double s, const Tensor& a) { return add(a, s); }
Tensor operator-(double s, const Tensor& a) { return rsub(s, a); }
Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
Tensor operator/(double s, const Tensor& a) { return rdiv(s, a); }
Tensor operator-(const Tensor& a) { return neg(a); }

void add_(Tensor& a, const Tensor& b, double alpha) {
    check_inplace("add_", a);
    check_pair("add_", a, b);
    check_same_shape("add_", a, b);
    binary_fwd_any("add_", BinaryParams{a.numel(), a.numel(), BinaryOp::add, alpha}, a, b, a);
}

void mul_(Tensor& a, double s) {
    check_inplace("mul_", a);
    unary_fwd_any("mul_", UnaryParams{a.numel(), UnaryOp::affine, s, 0.0}, a, a);
}

}  // namespace sslight
