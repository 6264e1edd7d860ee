// AdamW, PyTorch semantics (decoupled weight decay, bias correction with each parameter's own step count t):
// p ← p·(1 − lr·wd); m ← β1m + (1−β1)g; v ← β2v + (1−β2)g²; p ← p − lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps).
// One fused multi-tensor update per (device, dtype) part per step. No gradients recorded.
#include "engine/device.h"
#include "engine/optim/optimizer.h"

namespace sslight::optim {

AdamW::AdamW(std::vector<ParamGroup> groups, double beta1, double beta2, double eps)
    : Optimizer(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {
    SSL_CHECK_T(ConfigError, beta1 >= 0 && beta1 < 1, "AdamW: beta1 must be in [0, 1), got ", beta1);
    SSL_CHECK_T(ConfigError, beta2 >= 0 && beta2 < 1, "AdamW: beta2 must be in [0, 1), got ", beta2);
    SSL_CHECK_T(ConfigError, eps > 0, "AdamW: eps must be > 0, got ", eps);
}

void AdamW::step() {
    const kernels::AdamWHyper h{beta1_, beta2_, eps_};
    for (const std::vector<Work>& part : collect()) {
        const Tensor& p0 = part.front().param;
        if (p0.device().is_cpu()) {
            if (p0.dtype() == DType::f64)
                kernels::adamw_step_cpu(slots_of<double>(part), h);
            else
                kernels::adamw_step_cpu(slots_of<float>(part), h);
            continue;
        }
#ifdef SSLIGHT_WITH_CUDA
        kernels::cuda::adamw_step(slots_of<float>(part), h, runtime::stream(p0.device()));
        runtime::after_op(p0.device(), "adamw_step");
#else
        SSL_FAIL("AdamW: ", p0.str(), " is on a CUDA device but this build has no CUDA support");
#endif
    }
}

}  // namespace sslight::optim
