// conv2d: validation, depthwise routing, CPU (im2col + OpenBLAS) / CUDA (cuDNN) dispatch and backward.
// y = conv(x, w) + b; dx = conv_transpose(dy, w) (col2im gather / cuDNN backward data), dw = dyᵀ·im2col(x)
// (cuDNN backward filter), db = sum of dy over N, Ho, Wo. On the GPU the bias is added and reduced by the
// pool family's channel kernels (global_pool_bwd with accumulate / global_pool_fwd with scale 1 over the
// (1, N·Ho·Wo, Cout) view). All gradients are fresh tensors (=); the tape accumulates into leaf .grad.
#include "engine/ops/conv2d.h"

#include "engine/autograd.h"
#include "engine/ops/dwconv2d.h"
#include "engine/profiler.h"
#include "kernels/conv2d.h"
#include "kernels/pool.h"

namespace sslight {
namespace {

using kernels::Conv2dParams;

void check_dtype_for_device(const Tensor& t) {
    if (t.device().is_cpu()) {
        SSL_CHECK_DTYPE(t.dtype() == DType::f32 || t.dtype() == DType::f64,
                        "conv2d: the CPU supports f32 and f64, got ", t.str());
    } else {
        SSL_CHECK_DTYPE(t.dtype() == DType::f32 || t.dtype() == DType::bf16,
                        "conv2d: the GPU supports f32 and bf16, got ", t.str());
    }
}

void validate(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dArgs& a) {
    check_defined("conv2d", x, "x");
    check_defined("conv2d", weight, "weight");
    SSL_CHECK_SHAPE(x.dim() == 4, "conv2d: x must be [N, H, W, Cin] (NHWC), got ", shape_str(x.shape()));
    SSL_CHECK_SHAPE(weight.dim() == 4, "conv2d: weight must be [Cout, kh, kw, Cin/groups] (OHWI), got ",
                    shape_str(weight.shape()));
    check_same_device("conv2d", x, weight);
    check_same_dtype("conv2d", x, weight);
    check_float("conv2d", x);
    check_dtype_for_device(x);
    SSL_CHECK_SHAPE(a.stride_h >= 1 && a.stride_w >= 1 && a.dil_h >= 1 && a.dil_w >= 1 && a.pad_h >= 0 &&
                        a.pad_w >= 0 && a.groups >= 1,
                    "conv2d: invalid arguments: stride ", a.stride_h, "x", a.stride_w, ", padding ", a.pad_h, "x",
                    a.pad_w, ", dilation ", a.dil_h, "x", a.dil_w, ", groups ", a.groups,
                    " (stride, dilation and groups must be >= 1, padding >= 0)");
    const int64_t cin = x.size(3), cout = weight.size(0);
    SSL_CHECK_SHAPE(cin % a.groups == 0 && cout % a.groups == 0, "conv2d: groups = ", a.groups,
                    " must divide Cin and Cout; x ", shape_str(x.shape()), ", weight ", shape_str(weight.shape()));
    SSL_CHECK_SHAPE(weight.size(3) * a.groups == cin, "conv2d: Cin mismatch: x ", shape_str(x.shape()), " has Cin = ",
                    cin, " but weight ", shape_str(weight.shape()), " expects Cin = ", weight.size(3) * a.groups,
                    " (Cin/groups = ", weight.size(3), ", groups = ", a.groups, ")");
    if (bias.defined()) {
        check_same_device("conv2d", x, bias);
        check_same_dtype("conv2d", x, bias);
        SSL_CHECK_SHAPE(bias.dim() == 1 && bias.size(0) == cout, "conv2d: bias must be [Cout] = [", cout, "], got ",
                        shape_str(bias.shape()), " for weight ", shape_str(weight.shape()));
    }
}

Conv2dParams make_params(const Tensor& x, const Tensor& weight, const Conv2dArgs& a) {
    Conv2dParams p;
    p.N = x.size(0);
    p.H = x.size(1);
    p.W = x.size(2);
    p.C = x.size(3);
    p.K = weight.size(0);
    p.kh = weight.size(1);
    p.kw = weight.size(2);
    p.stride_h = a.stride_h;
    p.stride_w = a.stride_w;
    p.pad_h = a.pad_h;
    p.pad_w = a.pad_w;
    p.dil_h = a.dil_h;
    p.dil_w = a.dil_w;
    p.groups = a.groups;
    p.Ho = kernels::conv2d_out_size(p.H, p.kh, p.stride_h, p.pad_h, p.dil_h);
    p.Wo = kernels::conv2d_out_size(p.W, p.kw, p.stride_w, p.pad_w, p.dil_w);
    SSL_CHECK_SHAPE(p.kh >= 1 && p.kw >= 1 && p.Ho > 0 && p.Wo > 0, "conv2d: empty output (", p.Ho, " x ", p.Wo,
                    ") for x ", shape_str(x.shape()), " and weight ", shape_str(weight.shape()), " with stride ",
                    p.stride_h, "x", p.stride_w, ", padding ", p.pad_h, "x", p.pad_w, ", dilation ", p.dil_h, "x",
                    p.dil_w);
    return p;
}

// groups == Cin == Cout, square 3x3 / 5x5 kernel, equal stride 1 or 2, equal padding, no dilation.
bool is_fast_depthwise(const Conv2dParams& p) {
    return p.groups == p.C && p.C == p.K && p.kh == p.kw && (p.kh == 3 || p.kh == 5) && p.stride_h == p.stride_w &&
           (p.stride_h == 1 || p.stride_h == 2) && p.dil_h == 1 && p.dil_w == 1 && p.pad_h == p.pad_w;
}

template <class T>
void forward_cpu(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y) {
    kernels::conv2d_fwd_cpu(p, x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, y.data<T>());
}

#ifdef SSLIGHT_WITH_CUDA
// The per-channel bias seen by the pool kernels: dy / y as (1, N·Ho·Wo, Cout).
kernels::GlobalPoolParams bias_view(const Conv2dParams& p) {
    kernels::GlobalPoolParams g;
    g.N = 1;
    g.HW = p.N * p.Ho * p.Wo;
    g.C = p.K;
    g.scale = 1.0;
    return g;
}

template <class T>
void forward_cuda(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y) {
    const Device d = x.device();
    kernels::cuda::conv2d_fwd(p, x.data<T>(), w.data<T>(), y.data<T>(), d.index);
    if (b.defined()) kernels::cuda::global_pool_bwd(bias_view(p), b.data<T>(), y.data<T>(), true, runtime::stream(d));
    runtime::after_op(d, "conv2d");
}
#endif

void forward(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y) {
    if (x.device().is_cpu()) {
        if (x.dtype() == DType::f64)
            forward_cpu<double>(p, x, w, b, y);
        else
            forward_cpu<float>(p, x, w, b, y);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    if (x.dtype() == DType::bf16)
        forward_cuda<bf16>(p, x, w, b, y);
    else
        forward_cuda<float>(p, x, w, b, y);
#else
    SSL_FAIL("conv2d on ", x.device().str(), " in a build without CUDA");
#endif
}

// Backward kernels: which = 0 input, 1 weight, 2 bias gradient, written into `out`.
template <class T>
void backward_cpu(int which, const Conv2dParams& p, const Tensor& saved, const Tensor& dy, const Tensor& out) {
    if (which == 0) kernels::conv2d_bwd_data_cpu(p, dy.data<T>(), saved.data<T>(), out.data<T>());
    if (which == 1) kernels::conv2d_bwd_weight_cpu(p, saved.data<T>(), dy.data<T>(), out.data<T>());
    if (which == 2) kernels::conv2d_bwd_bias_cpu(p, dy.data<T>(), out.data<T>());
}

#ifdef SSLIGHT_WITH_CUDA
template <class T>
void backward_cuda(int which, const Conv2dParams& p, const Tensor& saved, const Tensor& dy, const Tensor& out) {
    const Device d = dy.device();
    if (which == 0) kernels::cuda::conv2d_bwd_data(p, dy.data<T>(), saved.data<T>(), out.data<T>(), d.index);
    if (which == 1) kernels::cuda::conv2d_bwd_weight(p, saved.data<T>(), dy.data<T>(), out.data<T>(), d.index);
    if (which == 2) kernels::cuda::global_pool_fwd(bias_view(p), dy.data<T>(), out.data<T>(), runtime::stream(d));
    runtime::after_op(d, "conv2d_backward");
}
#endif

void run_backward_kernel(int which, const Conv2dParams& p, const Tensor& saved, const Tensor& dy, const Tensor& out) {
    if (out.numel() == 0) return;
    if (dy.numel() == 0) {  // no output elements (N = 0): every gradient is zero
        runtime::fill_zero(out.raw_data(), out.device(), out.nbytes());
        return;
    }
    if (dy.device().is_cpu()) {
        if (dy.dtype() == DType::f64)
            backward_cpu<double>(which, p, saved, dy, out);
        else
            backward_cpu<float>(which, p, saved, dy, out);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    if (dy.dtype() == DType::bf16)
        backward_cuda<bf16>(which, p, saved, dy, out);
    else
        backward_cuda<float>(which, p, saved, dy, out);
#endif
}

struct Conv2dNode : Node {
    Tensor x, weight;  // detached; x only when the weight needs a gradient, weight only when x does
    Shape x_shape, w_shape;
    Conv2dParams p;
    const char* name() const override { return "conv2d"; }

    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>& needs) override {
        const Tensor& g = grads[0];
        std::vector<Tensor> out(3);
        if (!g.defined()) return out;
        if (needs[0]) {
            out[0] = empty(x_shape, g.dtype(), g.device());
            run_backward_kernel(0, p, weight, g, out[0]);
        }
        if (needs[1]) {
            out[1] = empty(w_shape, g.dtype(), g.device());
            run_backward_kernel(1, p, x, g, out[1]);
        }
        if (needs.size() > 2 && needs[2]) {
            out[2] = empty({p.K}, g.dtype(), g.device());
            run_backward_kernel(2, p, Tensor(), g, out[2]);
        }
        return out;
    }
    void release() override {
        x = Tensor();
        weight = Tensor();
    }
};

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dArgs& args) {
    SSL_PROFILE_OP("conv2d");
    validate(x, weight, bias, args);
    const Conv2dParams p = make_params(x, weight, args);
    if (is_fast_depthwise(p)) return depthwise_conv2d(x, weight, bias, args.stride_h, args.pad_h);
    Tensor y = empty({p.N, p.Ho, p.Wo, p.K}, x.dtype(), x.device());
    if (y.numel() > 0) forward(p, x, weight, bias, y);
    if (needs_record({x, weight, bias})) {
        auto n = std::make_shared<Conv2dNode>();
        if (weight.requires_grad()) n->x = x.detach();
        if (x.requires_grad()) n->weight = weight.detach();
        n->x_shape = x.shape();
        n->w_shape = weight.shape();
        n->p = p;
        record(n, {x, weight, bias}, {y});
    }
    return y;
}

}  // namespace sslight
