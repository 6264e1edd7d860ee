// max_pool2d and global_avg_pool: validation, CPU / CUDA dispatch and backward. Max pool saves the i32
// argmax (ih·W + iw of the first maximum per window) and its backward gathers dy over the windows that chose
// each input element; global average pooling's backward writes dy / (H·W) to every position. Gradients are
// fresh tensors (=).
#include "engine/ops/pool.h"

#include "engine/autograd.h"
#include "engine/profiler.h"
#include "kernels/pool.h"

namespace sslight {
namespace {

void check_pool_input(const char* op, const Tensor& x) {
    check_defined(op, x, "x");
    SSL_CHECK_SHAPE(x.dim() == 4, op, ": x must be [N, H, W, C] (NHWC), got ", shape_str(x.shape()));
    check_float(op, x);
    if (x.device().is_cpu()) {
        SSL_CHECK_DTYPE(x.dtype() == DType::f32 || x.dtype() == DType::f64, op, ": the CPU supports f32 and f64, got ",
                        x.str());
    } else {
        SSL_CHECK_DTYPE(x.dtype() == DType::f32 || x.dtype() == DType::bf16, op,
                        ": the GPU supports f32 and bf16, got ", x.str());
    }
}

void max_pool_fwd(const kernels::MaxPoolParams& p, const Tensor& x, const Tensor& y, const Tensor& argmax) {
    int32_t* idx = argmax.defined() ? argmax.data<int32_t>() : nullptr;
    if (x.device().is_cpu()) {
        if (x.dtype() == DType::f64)
            kernels::max_pool2d_fwd_cpu(p, x.data<double>(), y.data<double>(), idx);
        else
            kernels::max_pool2d_fwd_cpu(p, x.data<float>(), y.data<float>(), idx);
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    const kernels::Stream s = runtime::stream(x.device());
    if (x.dtype() == DType::bf16)
        kernels::cuda::max_pool2d_fwd(p, x.data<bf16>(), y.data<bf16>(), idx, s);
    else
        kernels::cuda::max_pool2d_fwd(p, x.data<float>(), y.data<float>(), idx, s);
    runtime::after_op(x.device(), "max_pool2d");
#endif
}

void max_pool_bwd(const kernels::MaxPoolParams& p, const Tensor& dy, const Tensor& argmax, const Tensor& dx) {
    const int32_t* idx = argmax.data<int32_t>();
    if (dy.device().is_cpu()) {
        if (dy.dtype() == DType::f64)
            kernels::max_pool2d_bwd_cpu(p, dy.data<double>(), idx, dx.data<double>());
        else
            kernels::max_pool2d_bwd_cpu(p, dy.data<float>(), idx, dx.data<float>());
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    const kernels::Stream s = runtime::stream(dy.device());
    if (dy.dtype() == DType::bf16)
        kernels::cuda::max_pool2d_bwd(p, dy.data<bf16>(), idx, dx.data<bf16>(), s);
    else
        kernels::cuda::max_pool2d_bwd(p, dy.data<float>(), idx, dx.data<float>(), s);
    runtime::after_op(dy.device(), "max_pool2d_backward");
#endif
}

// y = global_pool(x) (backward = false) or x = global_pool_bwd(y) (backward = true), written.
void global_pool(const kernels::GlobalPoolParams& p, const Tensor& src, const Tensor& dst, bool backward) {
    if (src.device().is_cpu()) {
        if (src.dtype() == DType::f64) {
            if (backward) kernels::global_pool_bwd_cpu(p, src.data<double>(), dst.data<double>(), false);
            else kernels::global_pool_fwd_cpu(p, src.data<double>(), dst.data<double>());
        } else {
            if (backward) kernels::global_pool_bwd_cpu(p, src.data<float>(), dst.data<float>(), false);
            else kernels::global_pool_fwd_cpu(p, src.data<float>(), dst.data<float>());
        }
        return;
    }
#ifdef SSLIGHT_WITH_CUDA
    const kernels::Stream s = runtime::stream(src.device());
    if (src.dtype() == DType::bf16) {
        if (backward) kernels::cuda::global_pool_bwd(p, src.data<bf16>(), dst.data<bf16>(), false, s);
        else kernels::cuda::global_pool_fwd(p, src.data<bf16>(), dst.data<bf16>(), s);
    } else {
        if (backward) kernels::cuda::global_pool_bwd(p, src.data<float>(), dst.data<float>(), false, s);
        else kernels::cuda::global_pool_fwd(p, src.data<float>(), dst.data<float>(), s);
    }
    runtime::after_op(src.device(), backward ? "global_avg_pool_backward" : "global_avg_pool");
#endif
}

struct MaxPoolNode : Node {
    Tensor argmax;
    kernels::MaxPoolParams p;
    const char* name() const override { return "max_pool2d"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>&) override {
        if (!grads[0].defined()) return {Tensor()};
        Tensor dx = empty({p.N, p.H, p.W, p.C}, grads[0].dtype(), grads[0].device());
        if (dx.numel() > 0) max_pool_bwd(p, grads[0], argmax, dx);
        return {dx};
    }
    void release() override { argmax = Tensor(); }
};

struct GlobalAvgPoolNode : Node {
    kernels::GlobalPoolParams p;
    Shape x_shape;
    const char* name() const override { return "global_avg_pool"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& grads, const std::vector<bool>&) override {
        if (!grads[0].defined()) return {Tensor()};
        Tensor dx = empty(x_shape, grads[0].dtype(), grads[0].device());
        if (dx.numel() > 0) global_pool(p, grads[0], dx, true);
        return {dx};
    }
};

}  // namespace

Tensor max_pool2d(const Tensor& x, int kernel, int stride, int padding) {
    SSL_PROFILE_OP("max_pool2d");
    check_pool_input("max_pool2d", x);
    SSL_CHECK_SHAPE(kernel >= 1 && stride >= 1 && padding >= 0 && padding <= kernel / 2,
                    "max_pool2d: invalid kernel ", kernel, ", stride ", stride, ", padding ", padding,
                    " (need kernel >= 1, stride >= 1, 0 <= padding <= kernel / 2)");
    kernels::MaxPoolParams p;
    p.N = x.size(0);
    p.H = x.size(1);
    p.W = x.size(2);
    p.C = x.size(3);
    p.kernel = kernel;
    p.stride = stride;
    p.pad = padding;
    p.Ho = p.H + 2 * padding >= kernel ? (p.H + 2 * padding - kernel) / stride + 1 : 0;
    p.Wo = p.W + 2 * padding >= kernel ? (p.W + 2 * padding - kernel) / stride + 1 : 0;
    SSL_CHECK_SHAPE(p.Ho > 0 && p.Wo > 0, "max_pool2d: empty output for x ", shape_str(x.shape()), " with kernel ",
                    kernel, ", stride ", stride, ", padding ", padding);
    SSL_CHECK_SHAPE(p.H * p.W <= 0x7fffffff, "max_pool2d: H·W of ", shape_str(x.shape()), " exceeds the i32 argmax");
    const bool rec = needs_record({x});
    Tensor y = empty({p.N, p.Ho, p.Wo, p.C}, x.dtype(), x.device());
    Tensor argmax = rec ? empty(y.shape(), DType::i32, x.device()) : Tensor();
    if (y.numel() > 0) max_pool_fwd(p, x, y, argmax);
    if (rec) {
        auto n = std::make_shared<MaxPoolNode>();
        n->argmax = argmax;
        n->p = p;
        record(n, {x}, {y});
    }
    return y;
}

Tensor global_avg_pool(const Tensor& x) {
    SSL_PROFILE_OP("global_avg_pool");
    check_pool_input("global_avg_pool", x);
    kernels::GlobalPoolParams p;
    p.N = x.size(0);
    p.HW = x.size(1) * x.size(2);
    p.C = x.size(3);
    SSL_CHECK_SHAPE(p.HW > 0, "global_avg_pool: empty spatial extent in ", shape_str(x.shape()));
    p.scale = 1.0 / static_cast<double>(p.HW);
    Tensor y = empty({p.N, p.C}, x.dtype(), x.device());
    if (y.numel() > 0) global_pool(p, x, y, false);
    if (needs_record({x})) {
        auto n = std::make_shared<GlobalAvgPoolNode>();
        n->p = p;
        n->x_shape = x.shape();
        record(n, {x}, {y});
    }
    return y;
}

}  // namespace sslight
