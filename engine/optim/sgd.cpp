// SGD with momentum and Nesterov, PyTorch semantics with dampening 0 (kernels/optim.h has the update):
// d = g + wd·p; buf = μ·buf + d (buf = d on a parameter's first step); d = nesterov ? d + μ·buf : buf; p -= lr·d.
// One fused multi-tensor update per (device, dtype) part per step. No gradients recorded.
#include "engine/device.h"
#include "engine/optim/optimizer.h"

namespace sslight::optim {

SGD::SGD(std::vector<ParamGroup> groups, double momentum, bool nesterov)
    : Optimizer(std::move(groups)), momentum_(momentum), nesterov_(nesterov) {
    SSL_CHECK_T(ConfigError, momentum >= 0, "SGD: momentum must be >= 0, got ", momentum);
    SSL_CHECK_T(ConfigError, !nesterov || momentum > 0, "SGD: Nesterov momentum needs momentum > 0, got ", momentum);
}

std::vector<std::string> SGD::buffer_names() const {
    if (momentum_ == 0) return {};
    return {"momentum_buffer"};
}

void SGD::step() {
    const kernels::SgdHyper h{momentum_, nesterov_};
    for (const std::vector<Work>& part : collect()) {
        const Tensor& p0 = part.front().param;
        if (p0.device().is_cpu()) {
            if (p0.dtype() == DType::f64)
                kernels::sgd_step_cpu(slots_of<double>(part), h);
            else
                kernels::sgd_step_cpu(slots_of<float>(part), h);
            continue;
        }
#ifdef SSLIGHT_WITH_CUDA
        kernels::cuda::sgd_step(slots_of<float>(part), h, runtime::stream(p0.device()));
        runtime::after_op(p0.device(), "sgd_step");
#else
        SSL_FAIL("SGD: ", p0.str(), " is on a CUDA device but this build has no CUDA support");
#endif
    }
}

}  // namespace sslight::optim
