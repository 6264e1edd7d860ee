// dropout and drop_path: validation, dispatch to kernels/dropout.h and the autograd node. The node keeps
// only the kernel params (key, threshold, scale, shape): backward applies the same masked scaling to dy,
// which is the exact gradient because the op is linear in x.
#include "engine/ops/dropout.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/profiler.h"
#include "kernels/dropout.h"

namespace sslight {
namespace {

// y = masked scaling of x (a fresh tensor). per_sample: drop path, else dropout.
Tensor apply_mask(const char* op, const Tensor& x, const kernels::DropoutParams& p, bool per_sample) {
    Tensor y = empty_like(x);
    if (x.device().is_cpu()) {
        switch (x.dtype()) {
            case DType::f32:
                per_sample ? kernels::drop_path_cpu(p, x.data<float>(), y.data<float>())
                           : kernels::dropout_cpu(p, x.data<float>(), y.data<float>());
                return y;
            case DType::f64:
                per_sample ? kernels::drop_path_cpu(p, x.data<double>(), y.data<double>())
                           : kernels::dropout_cpu(p, x.data<double>(), y.data<double>());
                return y;
            default: break;
        }
        SSL_CHECK_DTYPE(false, op, ": expected f32 or f64 on the CPU, got ", x.str());
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::Stream s = runtime::stream(x.device());
    switch (x.dtype()) {
        case DType::f32:
            per_sample ? kernels::cuda::drop_path(p, x.data<float>(), y.data<float>(), s)
                       : kernels::cuda::dropout(p, x.data<float>(), y.data<float>(), s);
            break;
        case DType::bf16:
            per_sample ? kernels::cuda::drop_path(p, x.data<bf16>(), y.data<bf16>(), s)
                       : kernels::cuda::dropout(p, x.data<bf16>(), y.data<bf16>(), s);
            break;
        default: SSL_CHECK_DTYPE(false, op, ": expected f32 or bf16 on the GPU, got ", x.str());
    }
    runtime::after_op(x.device(), op);
#else
    SSL_CHECK_DEVICE(false, op, ": this build has no CUDA support, got ", x.str());
#endif
    return y;
}

struct DropoutNode : Node {
    kernels::DropoutParams params;
    bool per_sample = false;
    const char* name() const override { return per_sample ? "drop_path" : "dropout"; }
    std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>& needs) override {
        if (!needs[0] || !g[0].defined()) return {Tensor()};
        return {apply_mask(name(), g[0], params, per_sample)};
    }
};

Tensor masked_op(const char* op, const Tensor& x, double p, bool training, RngKey key, bool per_sample) {
    check_defined(op, x, "the input");
    SSL_CHECK(p >= 0.0 && p <= 1.0, op, ": drop probability must be in [0, 1], got ", p);
    check_float(op, x);
    if (!training || p == 0.0) return x;
    int64_t row_size = 1;
    if (per_sample) {
        SSL_CHECK_SHAPE(x.dim() >= 1, op, ": needs a batch dimension, got ", x.str());
        row_size = x.size(0) > 0 ? x.numel() / x.size(0) : 1;
    }
    const kernels::DropoutParams params = kernels::make_dropout_params(p, key.seed, key.stream, x.numel(), row_size);
    Tensor y = apply_mask(op, x, params, per_sample);
    if (needs_record({x})) {
        auto n = std::make_shared<DropoutNode>();
        n->params = params;
        n->per_sample = per_sample;
        record(n, {x}, {y});
    }
    return y;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, RngKey key) {
    SSL_PROFILE_OP("dropout");
    return masked_op("dropout", x, p, training, key, false);
}

Tensor drop_path(const Tensor& x, double p, bool training, RngKey key) {
    SSL_PROFILE_OP("drop_path");
    return masked_op("drop_path", x, p, training, key, true);
}

}  // namespace sslight
