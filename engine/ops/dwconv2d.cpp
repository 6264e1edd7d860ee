// depthwise_conv2d: validation, CPU / CUDA dispatch and the backward node. Backward: dx from the transposed-
// convolution kernel (written, =); dw and dbias from the reduction kernel, which accumulates (+=) into fresh
// zeroed tensors, so the node hands the tape fresh gradients. On the GPU the reduction's per-chunk partial
// sums live in a temporary f32 tensor from the engine's stream-ordered allocator.
#include "engine/ops/dwconv2d.h"

#include <climits>
#include <type_traits>

#include "engine/autograd.h"
#include "engine/profiler.h"
#include "kernels/dwconv2d.h"

namespace sslight {
namespace {

constexpr const char* kOp = "depthwise_conv2d";
using kernels::DwConv2dParams;

void check_dtype_for_device(const Tensor& t) {
    if (t.device().is_cpu()) {
        SSL_CHECK_DTYPE(t.dtype() == DType::f32 || t.dtype() == DType::f64, kOp,
                        ": the CPU supports f32 and f64, got ", t.str());
    } else {
        SSL_CHECK_DTYPE(t.dtype() == DType::f32 || t.dtype() == DType::bf16, kOp,
                        ": the GPU supports f32 and bf16, got ", t.str());
    }
}

DwConv2dParams validate(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int padding) {
    check_defined(kOp, x, "x");
    check_defined(kOp, w, "weight");
    SSL_CHECK_SHAPE(x.dim() == 4, kOp, ": x must be [N, H, W, C] (NHWC), got ", shape_str(x.shape()));
    const int64_t C = x.size(3);
    SSL_CHECK_SHAPE(w.dim() == 4 && w.size(0) == C && w.size(1) == w.size(2) && w.size(3) == 1, kOp, ": weight ",
                    shape_str(w.shape()), " does not fit x ", shape_str(x.shape()),
                    ": expected [C, k, k, 1] with C = ", C);
    const int64_t k = w.size(1);
    SSL_CHECK_SHAPE(k == 3 || k == 5, kOp, ": kernel size ", k, " (weight ", shape_str(w.shape()),
                    ") is not supported; supported kernel sizes: 3, 5");
    SSL_CHECK_SHAPE(stride == 1 || stride == 2, kOp, ": stride ", stride, " is not supported; supported strides: 1, 2");
    SSL_CHECK_SHAPE(padding >= 0 && padding <= 1 << 20, kOp, ": padding must be >= 0, got ", padding);
    for (int64_t d : x.shape())
        SSL_CHECK_SHAPE(d <= INT_MAX / 2, kOp, ": dimension ", d, " of x ", shape_str(x.shape()), " is too large");
    check_same_device(kOp, x, w);
    check_same_dtype(kOp, x, w);
    if (b.defined()) {
        check_same_device(kOp, x, b);
        check_same_dtype(kOp, x, b);
        SSL_CHECK_SHAPE(b.dim() == 1 && b.size(0) == C, kOp, ": bias must be [C] = [", C, "], got ",
                        shape_str(b.shape()), " for x ", shape_str(x.shape()));
    }
    check_float(kOp, x);
    check_dtype_for_device(x);
    const DwConv2dParams p = kernels::dwconv2d_params(int(x.size(0)), int(x.size(1)), int(x.size(2)), int(C), int(k),
                                                      stride, padding);
    SSL_CHECK_SHAPE(p.Ho > 0 && p.Wo > 0, kOp, ": empty output (", p.Ho, " x ", p.Wo, ") for x ",
                    shape_str(x.shape()), " and weight ", shape_str(w.shape()), " with stride ", stride,
                    ", padding ", padding);
    return p;
}

template <class T>
T* opt(const Tensor& t) {
    return t.defined() ? t.data<T>() : nullptr;
}

// The CPU kernels exist for float and double, the GPU ones for float and bf16 (validate() enforces it).
template <class T>
constexpr bool kOnCpu = !std::is_same<T, bf16>::value;
template <class T>
constexpr bool kOnGpu = !std::is_same<T, double>::value;

template <class T>
void forward_typed(const DwConv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y) {
    if constexpr (kOnCpu<T>) {
        if (x.device().is_cpu()) return kernels::dwconv2d_fwd_cpu(p, x.data<T>(), w.data<T>(), opt<T>(b), y.data<T>());
    }
#ifdef SSLIGHT_WITH_CUDA
    if constexpr (kOnGpu<T>) {
        kernels::cuda::dwconv2d_fwd(p, x.data<T>(), w.data<T>(), opt<T>(b), y.data<T>(), runtime::stream(x.device()));
        runtime::after_op(x.device(), kOp);
    }
#endif
}

template <class T>
void backward_input_typed(const DwConv2dParams& p, const Tensor& dy, const Tensor& w, const Tensor& dx) {
    if constexpr (kOnCpu<T>) {
        if (dy.device().is_cpu()) return kernels::dwconv2d_bwd_input_cpu(p, dy.data<T>(), w.data<T>(), dx.data<T>());
    }
#ifdef SSLIGHT_WITH_CUDA
    if constexpr (kOnGpu<T>) {
        kernels::cuda::dwconv2d_bwd_input(p, dy.data<T>(), w.data<T>(), dx.data<T>(), runtime::stream(dy.device()));
        runtime::after_op(dy.device(), "depthwise_conv2d_backward_input");
    }
#endif
}

// dw and db: zeroed tensors or undefined (not needed); the kernels accumulate into them.
template <class T>
void backward_weight_typed(const DwConv2dParams& p, const Tensor& x, const Tensor& dy, const Tensor& dw,
                           const Tensor& db) {
    if constexpr (kOnCpu<T>) {
        if (dy.device().is_cpu())
            return kernels::dwconv2d_bwd_weight_cpu(p, x.data<T>(), dy.data<T>(), opt<T>(dw), opt<T>(db));
    }
#ifdef SSLIGHT_WITH_CUDA
    if constexpr (kOnGpu<T>) {
        const int64_t n = static_cast<int64_t>(kernels::cuda::dwconv2d_bwd_weight_workspace(p));
        Tensor ws = empty({n}, DType::f32, dy.device());
        kernels::cuda::dwconv2d_bwd_weight(p, x.data<T>(), dy.data<T>(), opt<T>(dw), opt<T>(db), opt<float>(ws),
                                           runtime::stream(dy.device()));
        runtime::after_op(dy.device(), "depthwise_conv2d_backward_weight");
    }
#endif
}

// Calls f(T{}) with the storage type of `dtype` (f32, f64 or bf16; validated before).
template <class F>
void with_dtype(DType dtype, F&& f) {
    switch (dtype) {
        case DType::f64: f(double{}); break;
        case DType::bf16: f(bf16{}); break;
        default: f(float{}); break;
    }
}

struct DwConv2dNode : Node {
    DwConv2dParams p;
    Tensor x;       // saved when weight or bias needs a gradient
    Tensor weight;  // saved when x needs a gradient
    Shape x_shape, w_shape;
    DType dtype = DType::f32;
    Device device;

    const char* name() const override { return kOp; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        std::vector<Tensor> out(3);
        const Tensor& g = grads[0];
        if (!g.defined()) return out;  // no gradient reached the output: all input gradients are zero
        SSL_CHECK_DTYPE(g.dtype() == dtype && g.device() == device, kOp, ": output gradient ", g.str(),
                        " does not match the output's dtype ", dtype_name(dtype), " and device ", device.str());
        if (needs[0]) {
            out[0] = empty(x_shape, dtype, device);
            with_dtype(dtype, [&](auto t) { backward_input_typed<decltype(t)>(p, g, weight, out[0]); });
        }
        const bool need_b = needs.size() > 2 && needs[2];
        if (needs[1] || need_b) {
            if (needs[1]) out[1] = zeros(w_shape, dtype, device);
            if (need_b) out[2] = zeros({p.C}, dtype, device);
            with_dtype(dtype, [&](auto t) { backward_weight_typed<decltype(t)>(p, x, g, out[1], out[2]); });
        }
        return out;
    }
    void release() override {
        x = Tensor();
        weight = Tensor();
    }
};

}  // namespace

Tensor depthwise_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
    SSL_PROFILE_OP("depthwise_conv2d");
    const DwConv2dParams p = validate(x, weight, bias, stride, padding);
    Tensor y = empty({p.B, p.Ho, p.Wo, p.C}, x.dtype(), x.device());
    if (y.numel() > 0) with_dtype(x.dtype(), [&](auto t) { forward_typed<decltype(t)>(p, x, weight, bias, y); });
    if (needs_record({x, weight, bias})) {
        auto n = std::make_shared<DwConv2dNode>();
        n->p = p;
        if (weight.requires_grad() || (bias.defined() && bias.requires_grad())) n->x = x.detach();
        if (x.requires_grad()) n->weight = weight.detach();
        n->x_shape = x.shape();
        n->w_shape = weight.shape();
        n->dtype = x.dtype();
        n->device = x.device();
        record(n, {x, weight, bias}, {y});
    }
    return y;
}

}  // namespace sslight
